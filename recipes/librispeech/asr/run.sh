#!/usr/bin/env bash
# LibriSpeech ASR: Whisper tiny.en zero-shot and fine-tuned through LoRA (the adapter alone is saved),
# word error rate on a test subset.
#
#   bash recipes/librispeech/asr/run.sh --data /corpora/LibriSpeech                # all stages -> $exp/RESULTS.md
#   bash recipes/librispeech/asr/run.sh --data /corpora/LibriSpeech --profile gpu  # one GPU, bf16, the full subset
#   ... -- trainer.limit_train_batches=100                                         # Hydra overrides after --
#
#   0 check the download          1 manifests, one per subset (speech-peft prepare librispeech)
#   2 LoRA on the training subset, validated on the dev subset
#   3 transcribe the test subset with the frozen model and with the adapter     4 WER -> RESULTS.md
#
# TRAIN, DEV, TEST name the subsets (default train-clean-100, dev-clean, test-clean).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

stage=0 stop_stage=4 data=${LIBRISPEECH:-} quick=false extra=() epochs="" profile=cpu
exp=exp/librispeech/asr
source recipes/_shared/parse_args.sh "$@"
train_set=${TRAIN:-train-clean-100} dev_set=${DEV:-dev-clean} test_set=${TEST:-test-clean}
case $profile in
  cpu) hardware=(data.batch_size=8 trainer.limit_train_batches=200) ;;      # 1,600 utterances: about an hour on 2 cores
  gpu) hardware=(trainer=gpu data.batch_size=32 data.num_workers=8) ;;      # the whole subset, one epoch
esac
log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
manifests=$exp/data

if run_stage 0; then
  if [ -z "$data" ] || [ ! -d "$data" ]; then
    cat >&2 <<MSG
LibriSpeech not found (--data DIR or LIBRISPEECH=DIR). Download from https://www.openslr.org/12:
  for part in $train_set $dev_set $test_set; do wget https://www.openslr.org/resources/12/\$part.tar.gz; tar xzf \$part.tar.gz; done
which unpacks to LibriSpeech/<subset>/<speaker>/<chapter>/*.flac; pass --data LibriSpeech.
MSG
    exit 1
  fi
  log "stage 0: LibriSpeech at $data"
fi

if run_stage 1; then
  log "stage 1: manifests -> $manifests"
  speech-peft prepare librispeech "$data" "$manifests" --skip-bad
  for subset in "$train_set" "$dev_set" "$test_set"; do
    [ -f "$manifests/$subset.jsonl" ] || { echo "subset $subset not found under $data" >&2; exit 1; }
  done
fi

if run_stage 2 && [ ! -f "$exp/lora/fit_result.json" ]; then
  log "stage 2: LoRA on $train_set"
  resume=()
  [ -f "$exp/lora/checkpoints/last.ckpt" ] && resume=(ckpt_path="$exp/lora/checkpoints/last.ckpt")
  speech-peft fit --config-dir "$here/conf" experiment=librispeech_asr task=whisper_ar adapter=lora \
    data.train="$manifests/$train_set.jsonl" data.val="$manifests/$dev_set.jsonl" "${hardware[@]}" \
    ${epochs:+trainer.max_epochs=$epochs} exp_dir="$exp/lora" callbacks.checkpoint.save_last=true "${resume[@]}" "${extra[@]}"
fi

device=cpu; [ "$profile" = gpu ] && device=cuda
if run_stage 3; then
  log "stage 3: transcribe $test_set"
  mkdir -p "$exp/decode"
  speech-peft transcribe "$manifests/$test_set.jsonl" --device "$device" --out "$exp/decode/frozen.tsv"
  speech-peft transcribe "$manifests/$test_set.jsonl" --device "$device" --adapter "$exp/lora/export/adapter" \
    --out "$exp/decode/lora.tsv"
fi

if run_stage 4; then
  log "stage 4: $exp/RESULTS.md"
  {
    echo "# LibriSpeech $test_set: Whisper tiny.en"
    echo
    echo "| system | WER |"
    echo "|---|---|"
    for system in frozen lora; do
      echo "| $system | $(speech-peft score wer --ref "$manifests/$test_set.jsonl" --hyp "$exp/decode/$system.tsv" | sed -n 's/^corpus WER \([0-9.]*%\).*/\1/p') |"
    done
    echo
    echo "Made by: bash recipes/librispeech/asr/run.sh --data $data --profile $profile"
  } > "$exp/RESULTS.md"
  cat "$exp/RESULTS.md"
fi
