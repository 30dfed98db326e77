#!/usr/bin/env bash
# The stages of restoration on a clean-speech corpus (LibriTTS, VCTK). A recipe's run.sh sets:
#   corpus (speech-peft prepare layout), data, exp, here, train_set, dev_set, test_set, download_help
# and sources this file. The model is the one recipes/speech_samples/restore trains (frozen Whisper tiny.en,
# parallel adapters, a bridge into HiFi-GAN V1's log-mel), trained here on the corpus's clean speech degraded
# on the fly with the bundled training noises and rooms; evaluated on the corpus's test speakers degraded
# with the held-out real noises and rooms.
#
#   0 check the download     1 manifests; clean 16 kHz references and degraded copies of TEST_ITEMS test items
#   2 cleaner    3 bridge on clean features    4 bridge fine-tuned on cleaned features
#   5 restore the degraded test items          6 quality (PESQ, STOI, SI-SDR, DNSMOS, speaker similarity, WER)
set -euo pipefail

stage=0 stop_stage=6 quick=false extra=() epochs="" profile=cpu
source recipes/_shared/parse_args.sh "$@"
case $profile in
  # an epoch = one 2 s crop of every training recording
  cpu) hardware=(data.batch_size=8 trainer.limit_train_batches=300) test_items=${TEST_ITEMS:-100} ;;
  gpu) hardware=(trainer=gpu data.batch_size=32) test_items=${TEST_ITEMS:-400} ;;
esac
fit=(speech-peft fit --config-dir recipes/speech_samples/restore/conf experiment=restore_speech_samples
     trainer.enable_progress_bar=false data.repeats=1 "${hardware[@]}")
data_paths=(data.train="$exp/data/$train_set.jsonl" data.val="$exp/data/$dev_set.jsonl")
cleaner=$exp/cleaner/export restorer=$exp/bridge_cleaned/export
samples=data/speech_samples
log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
source recipes/_shared/train.sh

if run_stage 0; then
  if [ -z "$data" ] || [ ! -d "$data" ]; then echo "$download_help" >&2; exit 1; fi
  log "stage 0: $corpus at $data"
fi

if run_stage 1; then
  log "stage 1: manifests -> $exp/data; $test_items degraded test items"
  speech-peft prepare "$corpus" "$data" "$exp/data" --skip-bad >/dev/null
  for split in "$train_set" "$dev_set" "$test_set"; do
    [ -f "$exp/data/$split.jsonl" ] || { echo "split $split not found in $data" >&2; exit 1; }
  done
  # Every n-th test item, so that every test speaker is heard.
  awk -v n="$(wc -l < "$exp/data/$test_set.jsonl")" -v k="$test_items" '(NR - 1) % int((n + k - 1) / k) == 0' \
    "$exp/data/$test_set.jsonl" > "$exp/data/eval.jsonl"
  speech-peft degrade "$exp/data/eval.jsonl" --out "$exp/eval/clean" --p-clean 1 >/dev/null  # 16 kHz references
  speech-peft degrade "$exp/data/eval.jsonl" --out "$exp/eval/degraded" --effects reverb noise --min-effects 2 \
    --p-clean 0 --snr 5 15 --seed 1 --p-real 1 --noise "$samples/noise/noise4.wav" "$samples/noise/noise5.wav" \
    --rir "$samples/rirs/rir3.wav" "$samples/rirs/rir4.wav" >/dev/null
fi

if run_stage 2; then
  log "stage 2: cleaner (parallel adapters on the frozen encoder)"
  train "$exp/cleaner" task=restore_cleaner data.degrade.p_clean=0.2 trainer.max_epochs="${epochs:-5}"
fi
if run_stage 3; then
  log "stage 3: bridge from clean features to HiFi-GAN's log-mel"
  train "$exp/bridge_clean" task=restore_bridge task.stage=clean task.cleaner_dir="$cleaner" trainer.max_epochs="${epochs:-8}"
fi
if run_stage 4; then
  log "stage 4: bridge fine-tuned on cleaned features"
  train "$exp/bridge_cleaned" task=restore_bridge task.stage=cleaned task.cleaner_dir="$cleaner" task.lr=3e-4 \
    task.init_bridge="$exp/bridge_clean/export/vocoder.safetensors" trainer.max_epochs="${epochs:-2}"
fi

device=cpu; [ "$profile" = gpu ] && device=cuda
if run_stage 5; then
  log "stage 5: restore $exp/eval/degraded"
  speech-peft restore "$exp/eval/degraded" "$exp/bridge_cleaned/eval/restored" --checkpoint "$restorer" --device "$device" >/dev/null
fi
if run_stage 6; then
  log "stage 6: quality -> $exp/quality/summary.md"
  speech-peft score quality --ref "$exp/eval/clean" --deg "$exp/eval/degraded" --out "$exp/bridge_cleaned/eval/restored" \
    --transcripts "$exp/data/eval.jsonl" --report "$exp/quality" --plots 2 >/dev/null
  cat "$exp/quality/summary.md"
fi
