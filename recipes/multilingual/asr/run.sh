#!/usr/bin/env bash
# Per-language adapters (Bactrian-X style language plug-ins) on the frozen multilingual Whisper base: one
# LoRA per language, chosen per utterance by the language given or by the language detected (task-ID-free),
# against the frozen model and one adapter shared by every language.
#
#   bash recipes/multilingual/asr/run.sh                 # all stages -> RESULTS.md, results.json
#   bash recipes/multilingual/asr/run.sh --epochs 1 -- trainer.limit_train_batches=2   # a quick trial
#
#   0 English, German, French and Spanish sentences read by espeak-ng voices (test: unseen sentences, unseen
#     voice variants) and the bundled real English recordings (local/prepare_languages.py; needs espeak-ng)
#   1 the frozen model: languages detected, and given
#   2 one LoRA per language (decoder attention, trained on that language only)
#   3 one shared LoRA trained on every language
#   4 decode: the shared adapter (language given; detected), the plug-ins (language given; chosen by the
#     language the shared adapter detects)
#   5 WER per test set and language-ID accuracy -> RESULTS.md, results.json
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

stage=0 stop_stage=5 data="" quick=false extra=() epochs="" profile=cpu
exp=exp/multilingual/asr
source recipes/_shared/parse_args.sh "$@"
case $profile in
  cpu) hardware=() ;;
  gpu) hardware=(trainer=gpu data.batch_size=32 trainer.max_epochs=30)
       [ "$exp" = exp/multilingual/asr ] && exp=exp/multilingual/asr_gpu ;;
esac
LANGUAGES=(en de fr es)
data_dir=$exp/data
fit=(speech-peft fit --config-dir "$here/conf" experiment=multilingual_asr task=whisper_ar adapter=lora
     '++adapter.stack=*decoder*' task.cache_dir="$exp/states" trainer.enable_progress_bar=false "${hardware[@]}")
log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
decode() {  # decode NAME MODEL [OPTIONS...]: the test set (or a routed copy) -> $exp/decode/NAME.jsonl
  local name=$1 model=$2; shift 2
  [ -f "$exp/decode/$name.jsonl" ] && return 0
  log "decode: $name"
  speech-peft transcribe "${DECODE_INPUT:-$data_dir/test.jsonl}" --model "$model" --out "$exp/decode/$name.jsonl" "$@"
}

if run_stage 0; then
  require_tools "stage 0 (synthetic voices)" espeak-ng
  log "stage 0: speech in ${LANGUAGES[*]}"
  python recipes/multilingual/asr/local/prepare_languages.py "$exp" --languages "${LANGUAGES[@]}" \
    --test-voices 2 --test-sentences 8
fi

if run_stage 1; then
  decode frozen_detected whisper-base --language auto
  decode frozen_given whisper-base      # each item's language from the manifest
fi

if run_stage 2; then
  for language in "${LANGUAGES[@]}"; do
    [ -f "$exp/plugins/$language/fit_result.json" ] && continue
    log "stage 2: the $language plug-in"
    "${fit[@]}" data.train="$data_dir/${language}_train.jsonl" data.val="$data_dir/${language}_val.jsonl" \
      task.language="$language" ${epochs:+trainer.max_epochs=$epochs} exp_dir="$exp/plugins/$language" "${extra[@]}"
  done
fi

if run_stage 3 && [ ! -f "$exp/shared/fit_result.json" ]; then
  log "stage 3: one adapter shared by every language"
  "${fit[@]}" data.train="$data_dir/train.jsonl" data.val="$data_dir/val.jsonl" \
    ${epochs:+trainer.max_epochs=$epochs} exp_dir="$exp/shared" "${extra[@]}"
fi

if run_stage 4; then
  decode shared_detected "$exp/shared/export" --language auto
  decode shared_given "$exp/shared/export"
  plugins=()
  for language in "${LANGUAGES[@]}"; do plugins+=("$language=$exp/plugins/$language/export/adapter"); done
  python recipes/multilingual/asr/local/route.py "$data_dir/test.jsonl" "$exp/decode/routed_given.jsonl" "${plugins[@]}"
  python recipes/multilingual/asr/local/route.py "$data_dir/test.jsonl" "$exp/decode/routed_detected.jsonl" "${plugins[@]}" \
    --detected "$exp/decode/shared_detected.jsonl"
  DECODE_INPUT=$exp/decode/routed_given.jsonl decode plugins_given whisper-base
  DECODE_INPUT=$exp/decode/routed_detected.jsonl decode plugins_detected whisper-base
fi

if run_stage 5; then
  results=$here/RESULTS.md
  [ "$exp" = exp/multilingual/asr ] || results=$exp/RESULTS.md  # trial runs never overwrite the committed table
  log "stage 5: -> $results"
  python recipes/multilingual/asr/local/results.py "$exp" "$results" --command "bash recipes/multilingual/asr/run.sh"
fi
