# Parses the options every recipe takes; defaults are set by the recipe before sourcing.
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop_stage|--stop-stage) stop_stage=$2; shift 2 ;;
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
