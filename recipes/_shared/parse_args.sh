# Parses and checks the options every recipe takes (defaults are set by the recipe before sourcing), then
# that speech-peft is on PATH. Options come first, so a mistyped option is always exit 2 whatever the
# machine lacks; a system tool a stage needs is checked by that stage (require_tools).
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop_stage|--stop-stage) stop_stage=$2; stop_given=true; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --methods) methods=$2; shift 2 ;;
    --folds) folds=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --quick) quick=true; shift ;;
    --profile) profile=$2; shift 2 ;;
    --model) [ -n "${model+set}" ] || { echo "this recipe takes no --model" >&2; exit 2; }; model=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for value in "$stage" "$stop_stage"; do  # a non-number would make every stage test false: nothing would run
  [[ $value =~ ^[0-9]+$ ]] || { echo "--stage and --stop_stage take a stage number, not '$value'" >&2; exit 2; }
done
# A stage past the default last one (run on its own, e.g. a GPU or a shared-data stage) runs when asked for
# alone; an explicit --stop_stage before --stage is an empty range, refused.
if [ "$stage" -gt "$stop_stage" ]; then
  [ -z "${stop_given:-}" ] || { echo "--stage $stage comes after --stop_stage $stop_stage: no stage would run" >&2; exit 2; }
  stop_stage=$stage
fi
case ${profile:=cpu} in
  cpu|gpu) ;;
  *) echo "unknown profile $profile (cpu, gpu)" >&2; exit 2 ;;
esac
[ -z "${epochs:-}" ] || [[ $epochs =~ ^[1-9][0-9]*$ ]] || { echo "--epochs takes a positive number, not '$epochs'" >&2; exit 2; }
command -v speech-peft >/dev/null || { echo "speech-peft not on PATH: run 'make demo' or activate .venv" >&2; exit 1; }

require_tools() {  # require_tools WHAT TOOL...: exit 1 with the apt-get line when a system tool is missing
  local what=$1 tool missing=()
  shift
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] || { echo "$what needs ${missing[*]}: apt-get install ${missing[*]}" >&2; exit 1; }
}
