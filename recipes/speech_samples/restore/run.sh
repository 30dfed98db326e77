#!/usr/bin/env bash
# Speech restoration in the manner of Miipher-2 on real recordings (bundled in data/speech_samples):
# a frozen Whisper tiny.en encoder with parallel adapters cleans features, a WaveFit vocoder speaks.
#
#   bash recipes/speech_samples/restore/run.sh              # all stages -> RESULTS.md
#   bash recipes/speech_samples/restore/run.sh --stage 6    # only regenerate RESULTS.md
#   ... --epochs 4 -- trainer.limit_train_batches=0.5       # Hydra overrides after --
#
#   0 manifests; held-out evaluation set degraded with real RIRs + real noise unseen in training
#   1 train the cleaner (the clean recordings + FSDD digit sequences: six more voices)
#   2 train WaveFit on clean features (the wideband clean recordings only)
#   3 fine-tune WaveFit on cleaned features
#   4 restore the evaluation set (and copy-synthesis from clean features: the vocoder's ceiling)
#   5 score quality (PESQ, STOI, SI-SDR, DNSMOS, speaker similarity, WER)
#   6 measure feature distance and real-time factor, write RESULTS.md
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
command -v speech-peft >/dev/null || { echo "speech-peft not on PATH: run 'make demo' or activate .venv" >&2; exit 1; }

stage=0 stop_stage=6 data=data/speech_samples quick=false extra=() epochs=""
exp=exp/speech_samples/restore
source recipes/_shared/parse_args.sh "$@"
# More voices for the cleaner: with the few clean wideband recordings alone it learns their speakers and
# moves unseen voices' features the wrong way. FSDD is 8 kHz, so the vocoder never trains on it.
fsdd=../shared/data/fsdd; [ -d "$fsdd" ] || fsdd=data/fsdd_subset
cleaner_epochs=${epochs:-10} vocoder_epochs=${epochs:-10} finetune_epochs=${epochs:-3}
results=$here/RESULTS.md
[ "$exp" = exp/speech_samples/restore ] || results=$exp/RESULTS.md  # trial runs never overwrite the committed table
fit=(speech-peft fit --config-dir "$here/conf" experiment=restore_speech_samples
     data.val="$exp/manifests/val.jsonl" trainer.enable_progress_bar=false)
# The vocoder runs at the waveform rate: shorter crops, smaller batches keep a step near a second on 2 cores.
vocoder_data=(data.train="$exp/manifests/train.jsonl" data.seconds=1.0 data.batch_size=4)
log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

if run_stage 0; then
  log "stage 0: manifests from $data/clean; evaluation set from $data/asr"
  speech-peft prepare folder "$data/clean" "$exp/manifests" >/dev/null
  grep -v '"id": "sep_source[12]_3"' "$exp/manifests/all.jsonl" > "$exp/manifests/train.jsonl"
  grep '"id": "sep_source[12]_3"' "$exp/manifests/all.jsonl" > "$exp/manifests/val.jsonl"
  speech-peft prepare fsdd_long "$fsdd" "$exp/fsdd_long" --long-items 10 5 >/dev/null
  cat "$exp/manifests/train.jsonl" "$exp/fsdd_long"/{train,val,test}.jsonl > "$exp/manifests/cleaner_train.jsonl"
  speech-peft degrade "$data/asr" --out "$exp/eval/degraded" --effects reverb noise --min-effects 2 \
    --p-clean 0 --p-real 1 --snr 5 15 --seed 1 \
    --noise "$data/noise/noise4.wav" "$data/noise/noise5.wav" --rir "$data/rirs/rir3.wav" "$data/rirs/rir4.wav"
fi

if run_stage 1 && [ ! -f "$exp/cleaner/fit_result.json" ]; then
  log "stage 1: cleaner (parallel adapters on the frozen encoder)"
  "${fit[@]}" task=restore_cleaner data.train="$exp/manifests/cleaner_train.jsonl" data.repeats=2 \
    data.degrade.p_clean=0.2 trainer.max_epochs="$cleaner_epochs" exp_dir="$exp/cleaner" "${extra[@]}"
fi

if run_stage 2 && [ ! -f "$exp/vocoder_clean/fit_result.json" ]; then
  log "stage 2: WaveFit on clean features"
  "${fit[@]}" task=restore_vocoder task.stage=clean task.cleaner_dir="$exp/cleaner/export" \
    "${vocoder_data[@]}" trainer.max_epochs="$vocoder_epochs" exp_dir="$exp/vocoder_clean" "${extra[@]}"
fi

if run_stage 3 && [ ! -f "$exp/vocoder_cleaned/fit_result.json" ]; then
  log "stage 3: WaveFit fine-tuned on cleaned features"
  "${fit[@]}" task=restore_vocoder task.stage=cleaned task.cleaner_dir="$exp/cleaner/export" \
    task.init_vocoder="$exp/vocoder_clean/export/vocoder.safetensors" task.lr=3e-4 \
    "${vocoder_data[@]}" trainer.max_epochs="$finetune_epochs" exp_dir="$exp/vocoder_cleaned" "${extra[@]}"
fi

restorer=$exp/vocoder_cleaned/export
if run_stage 4; then
  log "stage 4: restore the held-out set; copy-synthesis of its clean audio"
  speech-peft restore "$exp/eval/degraded" "$exp/eval/restored" --checkpoint "$restorer"
  speech-peft restore "$data/asr" "$exp/eval/ceiling" --checkpoint "$restorer" --copy-synthesis
fi

if run_stage 5; then
  log "stage 5: quality"
  speech-peft score quality --ref "$data/asr" --deg "$exp/eval/degraded" --out "$exp/eval/restored" \
    --also ceiling="$exp/eval/ceiling" --transcripts "$data/asr/transcripts.tsv" --report "$exp/quality"
fi

if run_stage 6; then
  log "stage 6: $results"
  speech-peft report restore "$exp" --out "$results" --measure "$restorer" "$exp/eval/degraded/degraded.jsonl" \
    --command "bash recipes/speech_samples/restore/run.sh"
  cat "$results"
fi
