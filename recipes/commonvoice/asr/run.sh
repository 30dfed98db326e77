#!/usr/bin/env bash
# Multi-accent ASR on Common Voice English in the manner of Audio-AdapterFusion: one parallel adapter per
# accent on the frozen Whisper tiny.en, then a router fusion of them that never sees the accent; WER per
# accent against the frozen model and one adapter trained on the mixture.
#
#   bash recipes/commonvoice/asr/run.sh --data /corpora/cv-corpus-17.0-2024-03-15/en   # -> exp/commonvoice/asr/RESULTS.md
#   bash recipes/commonvoice/asr/run.sh --data ... --profile gpu
#
#   0 check the download   1 manifests (task = accent), the TASKS accents with most training speech
#   2 one adapter per accent   3 router fusion (two-stage) and the mixture baseline on the mixture
#   4 transcribe the test utterances of the kept accents with each system   5 WER per accent -> RESULTS.md
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

stage=0 stop_stage=5 data=${COMMONVOICE:-} quick=false extra=() epochs="" profile=cpu
exp=exp/commonvoice/asr
source recipes/_shared/parse_args.sh "$@"
case $profile in
  cpu) hardware=(data.batch_size=8 trainer.limit_train_batches=100) per_task=${PER_TASK:-800} ;;
  gpu) hardware=(trainer=gpu data.batch_size=32 data.num_workers=8) per_task=${PER_TASK:-8000} ;;
esac
fit=(speech-peft fit --config-dir "$here/conf" experiment=commonvoice_asr trainer.enable_progress_bar=false "${hardware[@]}"
     ${epochs:+trainer.max_epochs=$epochs})
adapter=(adapter=parallel '++adapter.stack=*encoder*' ++adapter.bottleneck_dim=64 adapter.scale=1.0)
tasks_dir=$exp/tasks
log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

if run_stage 0; then
  if [ -z "$data" ] || [ ! -d "$data" ]; then
    cat >&2 <<MSG
Common Voice not found (--data DIR or COMMONVOICE=DIR). Download the English dataset from
https://commonvoice.mozilla.org/datasets (an account and the terms are needed), then
  tar xzf cv-corpus-*-en.tar.gz
which unpacks to cv-corpus-<version>/en/{clips/,train.tsv,dev.tsv,test.tsv}; pass --data cv-corpus-<version>/en.
MSG
    exit 1
  fi
  log "stage 0: Common Voice at $data"
fi

if run_stage 1; then
  log "stage 1: manifests by accent -> $tasks_dir"
  speech-peft prepare commonvoice "$data" "$exp/data" --task-column accents --skip-bad >/dev/null
  python "$here/local/split_tasks.py" "$exp/data" "$tasks_dir" --tasks "${TASKS:-4}" --per-task "$per_task"
fi
mapfile -t tasks < <(cat "$tasks_dir/tasks.txt" 2>/dev/null)

if run_stage 2; then
  for task in "${tasks[@]}"; do
    [ -f "$exp/single/$task/fit_result.json" ] && continue
    log "stage 2: adapter for $task"
    "${fit[@]}" task=whisper_ar "${adapter[@]}" data.train="$tasks_dir/${task}_train.jsonl" \
      data.val="$tasks_dir/${task}_val.jsonl" exp_dir="$exp/single/$task" "${extra[@]}"
  done
fi

adapters="{$(for t in "${tasks[@]}"; do printf '%s:%s,' "$t" "$exp/single/$t/export/adapter"; done | sed 's/,$//')}"
mixture=(data.train="$tasks_dir/mixture_train.jsonl" data.val="$tasks_dir/mixture_val.jsonl")
if run_stage 3; then
  if [ ! -f "$exp/fusion/fit_result.json" ]; then
    log "stage 3: router fusion (two-stage) on the mixture"
    "${fit[@]}" task=adapter_fusion "task.adapters=$adapters" task.fusion.kind=router task.algorithm=two_stage \
      "${mixture[@]}" exp_dir="$exp/fusion" "${extra[@]}"
  fi
  if [ ! -f "$exp/mixture_adapter/fit_result.json" ]; then
    log "stage 3: one adapter on the mixture"
    "${fit[@]}" task=whisper_ar "${adapter[@]}" "${mixture[@]}" exp_dir="$exp/mixture_adapter" "${extra[@]}"
  fi
fi

device=cpu; [ "$profile" = gpu ] && device=cuda
decode=$exp/decode
if run_stage 4; then
  log "stage 4: transcribe $tasks_dir/test.jsonl"
  mkdir -p "$decode"
  speech-peft transcribe "$tasks_dir/test.jsonl" --device "$device" --out "$decode/frozen.tsv"
  speech-peft transcribe "$tasks_dir/test.jsonl" --device "$device" --adapter "$exp/mixture_adapter/export/adapter" \
    --out "$decode/mixture_adapter.tsv"
  speech-peft transcribe "$tasks_dir/test.jsonl" --device "$device" --model "$exp/fusion/export" --out "$decode/fusion.tsv"
fi

if run_stage 5; then
  log "stage 5: $exp/RESULTS.md"
  {
    echo "# Common Voice English by accent: Whisper tiny.en"
    for system in frozen mixture_adapter fusion; do
      echo
      echo "## $system"
      echo
      speech-peft score wer --ref "$tasks_dir/test.jsonl" --hyp "$decode/$system.tsv" --by task | tail -n +2
    done
    echo
    echo "Made by: bash recipes/commonvoice/asr/run.sh --data $data --profile $profile"
  } > "$exp/RESULTS.md"
  cat "$exp/RESULTS.md"
fi
