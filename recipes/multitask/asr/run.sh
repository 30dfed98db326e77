#!/usr/bin/env bash
# Task-ID-free multi-task ASR in the manner of Audio-AdapterFusion, on the frozen real Whisper tiny.en:
# one parallel adapter per task on the encoder, then a fusion of them that never sees a task ID.
#
#   bash recipes/multitask/asr/run.sh                     # all stages -> RESULTS.md, results.json
#   bash recipes/multitask/asr/run.sh --epochs 1 -- trainer.limit_train_batches=4 trainer.limit_val_batches=2
#   bash recipes/multitask/asr/run.sh --profile gpu       # one GPU: batch 32, 200 batches a run -> exp/multitask/asr_gpu
#
#   0 four tasks (read, far-field, telephone, spoken digits), ten test sets, a task-balanced mixture
#     (local/prepare_tasks.py; needs espeak-ng, flite and ffmpeg)
#   1 single-task adapters: a parallel bottleneck adapter at every encoder feed-forward, one per task
#   2 fusions of the frozen single-task adapters trained on the mixture (FUSIONS: combiner:algorithm[:base] ...;
#     ":base" adds the frozen model as one more expert, so an utterance no adapter helps can be left alone)
#   3 baselines trained on the mixture: one multi-task adapter, full fine-tuning of the whole model
#   4 every system on every test set (frozen base, baselines, weight-space and output averages, oracle
#     task-ID routing, each fusion) -> RESULTS.md, results.json, fusion-weight plots
#   5 ship the best task-ID-free fusion with the package (speech_peft/pretrained/whisper-tiny.en-adapterfusion):
#     speech-peft transcribe --model speech_peft/pretrained/whisper-tiny.en-adapterfusion FILES
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

stage=0 stop_stage=5 data="" quick=false extra=() epochs="" profile=cpu
exp=exp/multitask/asr
source recipes/_shared/parse_args.sh "$@"
case $profile in
  cpu) hardware=() ;;                                                  # the committed RESULTS.md
  gpu) hardware=(trainer=gpu data.batch_size=32 trainer.limit_train_batches=200)   # 6,400 items a run
       [ "$exp" = exp/multitask/asr ] && exp=exp/multitask/asr_gpu ;;
esac
tasks_dir=$exp/tasks
fit=(speech-peft fit --config-dir "$here/conf" experiment=multitask_asr trainer.enable_progress_bar=false "${hardware[@]}")
adapter=(adapter=parallel '++adapter.stack=*encoder*' ++adapter.bottleneck_dim=64 adapter.scale=1.0)
log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
TASKS=(read far phone digits)

if run_stage 0; then
  require_tools "stage 0 (synthetic voices, telephone codecs)" espeak-ng flite ffmpeg
  log "stage 0: tasks, test sets, mixture"
  python recipes/multitask/asr/local/prepare_tasks.py "$exp"
fi

if run_stage 1; then
  for task in "${TASKS[@]}"; do
    [ -f "$exp/single/$task/fit_result.json" ] && continue
    log "stage 1: single-task adapter for $task"
    "${fit[@]}" task=whisper_ar "${adapter[@]}" data.train="$tasks_dir/${task}_train.jsonl" \
      data.val="$tasks_dir/${task}_val.jsonl" ${epochs:+trainer.max_epochs=$epochs} exp_dir="$exp/single/$task" "${extra[@]}"
  done
fi

adapters="{$(for t in "${TASKS[@]}"; do printf '%s:%s,' "$t" "$exp/single/$t/export/adapter"; done | sed 's/,$//')}"
if run_stage 2; then
  # joint training beat two_stage for every combiner (the earlier table): FUSIONS="router:two_stage ..." adds them
  for fusion in ${FUSIONS:-router:joint attention:joint task:joint router:joint:base attention:joint:base}; do
    IFS=: read -r kind algorithm base <<< "$fusion"
    name=${kind}_$algorithm${base:+_base} expert=false
    [ -z "$base" ] || expert=true
    [ -f "$exp/fusion/$name/fit_result.json" ] && continue
    log "stage 2: fusion $kind ($algorithm${base:+, the frozen model as an expert})"
    "${fit[@]}" task=adapter_fusion "task.adapters=$adapters" task.fusion.kind="$kind" task.algorithm="$algorithm" \
      task.fusion.base_expert=$expert \
      data.train="$tasks_dir/mixture_train.jsonl" data.val="$tasks_dir/mixture_val.jsonl" \
      ${epochs:+trainer.max_epochs=$epochs} exp_dir="$exp/fusion/$name" "${extra[@]}"
  done
fi

if run_stage 3; then
  mixture=(data.train="$tasks_dir/mixture_train.jsonl" data.val="$tasks_dir/mixture_val.jsonl")
  if [ ! -f "$exp/baselines/multitask_adapter/fit_result.json" ]; then
    log "stage 3: one multi-task adapter on the mixture"
    "${fit[@]}" task=whisper_ar "${adapter[@]}" "${mixture[@]}" ${epochs:+trainer.max_epochs=$epochs} \
      exp_dir="$exp/baselines/multitask_adapter" "${extra[@]}"
  fi
  if [ ! -f "$exp/baselines/full/fit_result.json" ]; then
    log "stage 3: full fine-tuning on the mixture"
    "${fit[@]}" task=whisper_ar adapter=full task.lr=1e-5 "${mixture[@]}" ${epochs:+trainer.max_epochs=$epochs} \
      exp_dir="$exp/baselines/full" "${extra[@]}"
  fi
fi

if run_stage 4; then
  log "stage 4: every system on every test set -> $here/RESULTS.md"
  results=$here/RESULTS.md
  [ "$exp" = exp/multitask/asr ] || results=$exp/RESULTS.md  # trial runs never overwrite the committed table
  speech-peft report multitask "$exp" --evaluate --out "$results" --command "bash recipes/multitask/asr/run.sh"
fi

shipped=speech_peft/pretrained/whisper-tiny.en-adapterfusion
if run_stage 5 && [ "$exp" = exp/multitask/asr ]; then  # trial runs never replace the shipped one
  best=$(python -c "from speech_peft.reports.multitask import best_fusion; print(best_fusion('$exp'))")
  log "stage 5: ship $best as $shipped"
  rm -rf "$shipped.new" && cp -r "$best" "$shipped.new" && rm -rf "$shipped" && mv "$shipped.new" "$shipped"
fi
