#!/usr/bin/env bash
# Diffusion-decoded ASR (Whisfusion) on long spoken-digit sequences: FSDD recordings of one speaker
# joined into 5/10/20/30 s items; test speakers (jackson, nicolas) never heard in training.
# Baselines: Whisper tiny.en autoregressive zero-shot and fine-tuned with LoRA on the same data.
#
#   bash recipes/fsdd_long/asr/run.sh                 # all stages -> RESULTS.md, results.json
#   bash recipes/fsdd_long/asr/run.sh --stage 6       # only rebuild RESULTS.md from the stored results
#   bash recipes/fsdd_long/asr/run.sh --profile gpu   # one GPU: bf16, batch 32, more epochs
#   bash recipes/fsdd_long/asr/run.sh --model base    # the AR rows on Whisper base -> RESULTS_base.md
#     (stages 0, 1, 6, 7: the diffusion stages on base take hours of CPU; with --profile gpu they run too)
#   ... --epochs 2 -- trainer.limit_train_batches=0.5 # Hydra overrides after --
#
#   0 make the long items and manifests      1 AR + LoRA baseline
#   2 diffusion stage 1 (cross-attention adapters and the CTC head; decoder frozen)
#   3 diffusion stage 2 (decoder + adapters + CTC head, layer-wise LR decay, EMA)
#   4 ablation: the paper's design, and the paper's design with the AR shift, trained the same way
#   5 beyond digits: the same design trained on read sentences from synthetic voices (espeak-ng,
#     flite), tested on the 12 real read sentences and on voices never heard
#   6 score every system on every test set     7 write RESULTS.md and results.json
#
# Every training stage runs in the background safely: killed, it resumes from its last epoch when the
# recipe is run again; the checkpoint kept is the one whose real decoder (not loss) did best on val.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

stage=0 stop_stage=7 data="" quick=false extra=() epochs="" profile=cpu model=tiny
exp=exp/fsdd_long/asr
source recipes/_shared/parse_args.sh "$@"
[ -n "$data" ] || { [ -d ../shared/data/fsdd ] && data=../shared/data/fsdd || data=data/fsdd_subset; }
results=$here/RESULTS.md whisper=whisper-tiny.en default_exp=exp/fsdd_long/asr
case $model in
  tiny) ;;
  base) whisper=whisper-base results=$here/RESULTS_base.md default_exp=exp/fsdd_long/asr_base
        [ "$exp" = exp/fsdd_long/asr ] && exp=$default_exp ;;
  *) echo "unknown model $model (tiny, base)" >&2; exit 2 ;;
esac
[ "$exp" = "$default_exp" ] || results=$exp/RESULTS.md  # trial runs never overwrite the committed table
command="bash recipes/fsdd_long/asr/run.sh"; [ "$model" = base ] && command="$command --model base"
case $profile in
  # stage-2 epochs of the design, of each ablation run, of the read-sentence run
  cpu) hardware=(data.batch_size=8) stage2_epochs=12 ablation_epochs=5 sentence_epochs=8 ;;  # stages 2-3: ~45 min on 2 cores
  gpu) hardware=(trainer=gpu data.batch_size=32 data.num_workers=8) stage2_epochs=60 ablation_epochs=25 sentence_epochs=40 ;;  # ~10 H100 minutes for stages 2-3 (an estimate: not yet run on one)
esac
[ "$model" = base ] && hardware+=(encoder=whisper_base)
fit=(speech-peft fit --config-dir "$here/conf" experiment=fsdd_long_asr trainer.enable_progress_bar=false "${hardware[@]}")
data_paths=(data.train="$exp/data/train.jsonl" data.val="$exp/data/val.jsonl" data.test="$exp/data/test.jsonl")
# Canvas: prefix + ceil(rate = 3 tokens/s x duration) positions, at most L = 128 (a 30 s item has about 50
# digit words). The design (each part measured in RESULTS.md's ablation): the decoder keeps Whisper's
# AR shift and prompt; antithetic mask ratios over the full range U(0, 1) with the ELBO's 1/t
# weighting; a character CTC head on the frozen encoder gives the Mask-CTC canvas; empty slots (PAD) inside
# 10% of the training texts' positions let the decoder leave a slot of that canvas empty. Validation decodes
# with the Mask-CTC canvas (words unsure or unknown to the training lexicon masked) and progressive
# low-confidence commits (EOS last, no equal neighbours).
rate=3.0
diffusion=(task=diffusion_asr task.max_length=128 task.lr=1e-4
           task.cache_dir="$exp/encoder_cache" task.val_wer=true callbacks.checkpoint.monitor=val/wer)
design=(task.shift=true task.antithetic=true task.loss_weighting=inverse_t task.mask_range=[0.0,1.0]
        task.ctc_weight=0.5 task.gap_rate=0.1 task.decode.init=ctc task.decode.remask=progressive task.decode.schedule=[1.0,0.5]
        task.decode.hold_eos=true task.decode.distinct_neighbours=true task.decode.mask_unknown_words=true
        task.decode.candidates=1)
paper=(task.decode.candidates=1)                       # t ~ U(0, 1) then U(0.7, 1), mean loss, random remasking
log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() {  # on base and a CPU, the diffusion stages (2-5) are left to a GPU
  [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ] && ! { [ "$model$profile" = basecpu ] && [ "$1" -ge 2 ] && [ "$1" -le 5 ]; }
}
source recipes/_shared/train.sh
diffusion_pair() {  # diffusion_pair DIR OVERRIDES...: stage 1 (2 epochs) then stage 2 into DIR/stage{1,2}
  local dir=$1
  shift
  log "  $dir: stage 1 (cross-attention adapters)"
  train "$dir/stage1" "${diffusion[@]}" task.tokens_per_second="$rate" task.stage=1 trainer.max_epochs=2 "$@"
  log "  $dir: stage 2 (decoder + adapters)"
  train "$dir/stage2" "${diffusion[@]}" task.tokens_per_second="$rate" task.stage=2 task.init_from="$dir/stage1/export" \
    trainer.max_epochs="${epochs:-$stage2_epochs}" "$@"
}

if run_stage 0; then
  log "stage 0: long items from $data"
  speech-peft prepare fsdd_long "$data" "$exp/data" --long-items 40 10 >/dev/null  # 640 training items, 20 test per bucket
fi

if run_stage 1; then
  log "stage 1: $whisper AR + LoRA"
  train "$exp/ar_lora" task=whisper_ar adapter=lora trainer.max_epochs="${epochs:-1}"
fi

if run_stage 2 || run_stage 3; then
  log "stages 2-3: diffusion decoder, this recipe's design"
  diffusion_pair "$exp/diffusion" "${design[@]}"
fi

if run_stage 4; then
  log "stage 4: ablation (the paper's design; the paper's design + AR shift)"
  (stage2_epochs=$ablation_epochs
   diffusion_pair "$exp/ablation/paper" "${paper[@]}"
   diffusion_pair "$exp/ablation/shift" "${paper[@]}" task.shift=true)
fi

if run_stage 5; then
  log "stage 5: beyond digits (read sentences from synthetic voices)"
  require_tools "stage 5 (synthetic voices)" espeak-ng flite
  sentences=$exp/sentences
  [ -f "$sentences/tts/train.jsonl" ] || speech-peft prepare tts_voices data/sentences/read_sentences.txt \
    "$sentences/tts" --voices 3 0 >/dev/null     # 3 sentences per voice; 8 voices held out for testing
  python "$here/local/read_real.py" "$sentences/read_real.jsonl" >/dev/null
  # Read speech runs about 3 BPE tokens a second; the canvas allows 6.
  (data_paths=(data.train="$sentences/tts/train.jsonl" data.val="$sentences/tts/val.jsonl"
               data.test="$sentences/tts/val.jsonl") rate=6.0 stage2_epochs=$sentence_epochs
   diffusion_pair "$sentences/diffusion" "${design[@]}")
fi

if run_stage 6; then
  log "stage 6: every system on every test set"
  speech-peft report asr "$exp" --evaluate --model "$whisper" --out "$results" --command "$command"
fi

if run_stage 7; then
  log "stage 7: $results"
  speech-peft report asr "$exp" --model "$whisper" --out "$results" --command "$command"
  cat "$results"
fi
