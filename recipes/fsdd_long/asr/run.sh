#!/usr/bin/env bash
# Diffusion-decoded ASR (Whisfusion) on long spoken-digit sequences: FSDD recordings of one speaker
# joined into 5/10/20/30 s items; test speakers (jackson, nicolas) never heard in training.
# Baselines: Whisper tiny.en autoregressive zero-shot and fine-tuned with LoRA on the same data.
#
#   bash recipes/fsdd_long/asr/run.sh                 # all stages -> RESULTS.md
#   bash recipes/fsdd_long/asr/run.sh --stage 5       # only rebuild RESULTS.md from the stored results
#   ... --epochs 2 -- trainer.limit_train_batches=0.5 # Hydra overrides after --
#
#   0 make the long items and manifests      1 AR + LoRA baseline
#   2 diffusion stage 1 (cross-attention adapters only)
#   3 diffusion stage 2 (decoder + adapters, t ~ U(0.7, 1), layer-wise LR decay, EMA)
#   4 score every system on every length bucket     5 write RESULTS.md
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
command -v speech-peft >/dev/null || { echo "speech-peft not on PATH: run 'make demo' or activate .venv" >&2; exit 1; }

stage=0 stop_stage=5 data="" quick=false extra=() epochs=""
exp=exp/fsdd_long/asr
source recipes/_shared/parse_args.sh "$@"
[ -n "$data" ] || { [ -d ../shared/data/fsdd ] && data=../shared/data/fsdd || data=data/fsdd_subset; }
results=$here/RESULTS.md
[ "$exp" = exp/fsdd_long/asr ] || results=$exp/RESULTS.md  # trial runs never overwrite the committed table
fit=(speech-peft fit --config-dir "$here/conf" experiment=fsdd_long_asr trainer.enable_progress_bar=false
     data.train="$exp/data/train.jsonl" data.val="$exp/data/val.jsonl" data.test="$exp/data/test.jsonl")
# Canvas: 1 + ceil(3 tokens/s x duration) positions, at most L = 128 (a 30 s item has about 50 digit
# words); against a fixed L = 128 it halves training time and decodes faster, and WER is 8-12 points
# lower. Stage 1 is short: with the decoder frozen, its self-attention (trained causal) barely learns to
# place digits; stage 2, the whole decoder at lr 1e-4, is where it learns.
canvas=(task.max_length=128 task.tokens_per_second=3.0)
log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

if run_stage 0; then
  log "stage 0: long items from $data"
  speech-peft prepare fsdd_long "$data" "$exp/data" --long-items 10 5 >/dev/null  # 160 training items, 10 test per bucket
fi

if run_stage 1 && [ ! -f "$exp/ar_lora/fit_result.json" ]; then
  log "stage 1: Whisper tiny.en AR + LoRA"
  "${fit[@]}" task=whisper_ar adapter=lora trainer.max_epochs="${epochs:-3}" exp_dir="$exp/ar_lora" "${extra[@]}"
fi

if run_stage 2 && [ ! -f "$exp/diffusion_stage1/fit_result.json" ]; then
  log "stage 2: diffusion decoder, stage 1 (cross-attention adapters only)"
  "${fit[@]}" task=diffusion_asr task.stage=1 "${canvas[@]}" task.lr=1e-4 task.cache_dir="$exp/encoder_cache" \
    trainer.max_epochs="${epochs:-5}" exp_dir="$exp/diffusion_stage1" "${extra[@]}"
fi

if run_stage 3 && [ ! -f "$exp/diffusion_stage2/fit_result.json" ]; then
  log "stage 3: diffusion decoder, stage 2 (decoder + adapters)"
  "${fit[@]}" task=diffusion_asr task.stage=2 "${canvas[@]}" task.lr=1e-4 \
    task.init_from="$exp/diffusion_stage1/export" task.cache_dir="$exp/encoder_cache" trainer.max_epochs="${epochs:-25}" exp_dir="$exp/diffusion_stage2" "${extra[@]}"
fi

if run_stage 4; then
  log "stage 4: every system on every length bucket"
  speech-peft report asr "$exp" --evaluate --out "$results" --command "bash recipes/fsdd_long/asr/run.sh"
fi

if run_stage 5; then
  log "stage 5: $results"
  speech-peft report asr "$exp" --out "$results" --command "bash recipes/fsdd_long/asr/run.sh"
  cat "$results"
fi
