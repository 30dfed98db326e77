#!/usr/bin/env bash
# Spoken-digit classification on the Free Spoken Digit Dataset with a frozen Whisper tiny.en encoder
# and parameter-efficient adapters, leave-one-speaker-out (train on 5 speakers, test on the 6th).
#
#   bash recipes/fsdd/cls/run.sh                  # full: all methods, all 6 folds
#   bash recipes/fsdd/cls/run.sh --quick          # bundled subset, LoRA, one fold, 3 epochs
#   bash recipes/fsdd/cls/run.sh --stage 3        # only regenerate RESULTS.md
#
# Stages: 0 prepare manifests, 1 train, 2 evaluate the best checkpoint on the held-out speaker,
# 3 write RESULTS.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cd "$root"

stage=0
stop_stage=3
data=""
methods="linear_probe lora parallel conformer bitfit full"
folds="george jackson lucas nicolas theo yweweler"
epochs=8
exp=exp/fsdd/cls
quick=false
extra=()

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
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

if $quick; then
  data=${data:-data/fsdd_subset}
  methods="lora"; folds="nicolas"; epochs=10; exp=exp/fsdd_quick/cls
fi
if [ -z "$data" ]; then
  if [ -d ../shared/data/fsdd ]; then data=../shared/data/fsdd; else data=data/fsdd_subset; fi
fi
command -v speech-peft >/dev/null || { echo "speech-peft not on PATH: run 'make demo' or activate .venv" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: manifests from $data"
  speech-peft prepare fsdd "$data" "$exp/manifests" >/dev/null
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  for method in $methods; do
    for fold in $folds; do
      dir=$exp/$method/fold_$fold
      if [ -f "$dir/fit_result.json" ]; then log "stage 1: $method/$fold already trained"; continue; fi
      lr=(); [ "$method" = full ] && lr=(task.lr=1e-4)  # the whole encoder moves: a smaller step
      log "stage 1: train $method, held-out speaker $fold"
      speech-peft fit --config-dir "$here/conf" experiment=fsdd_loso adapter="$method" \
        data.train="$exp/manifests/fold_$fold/train.jsonl" data.val="$exp/manifests/fold_$fold/val.jsonl" \
        data.test="$exp/manifests/fold_$fold/test.jsonl" trainer.max_epochs="$epochs" exp_dir="$dir" \
        trainer.progress_bar=false "${lr[@]}" "${extra[@]}"
    done
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  for method in $methods; do
    for fold in $folds; do
      dir=$exp/$method/fold_$fold
      best=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" "$dir/fit_result.json")
      log "stage 2: test $method/$fold on held-out speaker with $(basename "$best")"
      speech-peft test --config-dir "$here/conf" experiment=fsdd_loso adapter="$method" \
        data.test="$exp/manifests/fold_$fold/test.jsonl" exp_dir="$dir" ckpt_path="'$best'" \
        trainer.progress_bar=false "${extra[@]}" >/dev/null
    done
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  out=$here/RESULTS.md
  $quick && out=$exp/RESULTS.md
  log "stage 3: $out"
  speech-peft report cls "$exp" --out "$out" --command "bash recipes/fsdd/cls/run.sh $( $quick && echo --quick)"
  cat "$out"
fi
