#!/usr/bin/env bash
# Diffusion-decoded ASR (Whisfusion) on speaker-diverse long spoken-digit sequences: does keeping Whisper's
# pretrained decoder frozen (LoRA on it, its own cross-attention, a small CTC head) carry AR + LoRA's
# generalisation over to diffusion decoding? Items of 5-30 s of one speaker each, from every real source in
# ../shared/data (FSDD, speech_commands_digits, speechocean762 digit strings) plus synthetic voices
# (training only, espeak-ng and flite when installed); split by speaker. Test speakers, heard by no trained
# part: FSDD jackson and nicolas (test) and a speaker-disjoint quarter of the real sources (test_real).
#
#   bash recipes/digits_long/asr/run.sh                  # all stages -> RESULTS.md, results.json, exports
#   bash recipes/digits_long/asr/run.sh --stage 6        # only rebuild RESULTS.md from the stored results
#   bash recipes/digits_long/asr/run.sh --profile gpu    # one GPU: batch 32, longer training
#
#   0 make the long items and manifests          1 AR + LoRA baseline (1 epoch)
#   2 diffusion, LoRA on the frozen Whisper decoder + CTC head (speed perturbation, SpecAugment on states),
#     reading the encoder as stage 1's LoRA adapted it (folded into the frozen encoder, never trained here)
#   3 diffusion, Whisper's decoder fully trained (the fsdd_long design, stages 1 and 2), same data
#   4 score every system on every bucket of both test sets   5 decoding speed (benches/decode_speed.py)
#   6 write RESULTS.md and results.json          7 ship the LoRA exports to speech_peft/pretrained/:
#     speech-peft transcribe --model speech_peft/pretrained/whisper-tiny.en-digits-diffusion FILES
#     speech-peft transcribe --model speech_peft/pretrained/whisper-tiny.en-digits-lora FILES
#   8 (asked for alone, then 4-6) the ablation: stage 2's decoder on Whisper's own encoder
#
# Every training stage resumes from its last epoch when the recipe is run again; the checkpoint kept is
# the one whose real decoder did best on the validation speakers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

stage=0 stop_stage=7 data="" quick=false extra=() epochs="" profile=cpu
exp=exp/digits_long/asr
source recipes/_shared/parse_args.sh "$@"
[ -n "$data" ] || data=../shared/data
results=$here/RESULTS.md
[ "$exp" = exp/digits_long/asr ] || results=$exp/RESULTS.md  # trial runs never overwrite the committed table
command="bash recipes/digits_long/asr/run.sh"
case $profile in
  # epochs of the LoRA decoder; of the fully trained decoder's stage 2
  cpu) hardware=(data.batch_size=8) lora_epochs=12 stage2_epochs=12 ;;   # ~25 and ~38 min on 2 cores
  gpu) hardware=(trainer=gpu data.batch_size=32 data.num_workers=8) lora_epochs=60 stage2_epochs=60 ;;
esac
fit=(speech-peft fit --config-dir "$here/conf" experiment=digits_long_asr trainer.enable_progress_bar=false "${hardware[@]}")
data_paths=(data.train="$exp/data/train.jsonl" data.val="$exp/data/val.jsonl" data.test="$exp/data/test_real.jsonl")
# The fsdd_long recipe's design (measured in its ablation): AR shift kept, antithetic t over U(0, 1) with
# 1/t weighting, gap slots, a CTC head for the Mask-CTC canvas, validation by the real decoder.
# Canvas: 3.3 positions a second (fsdd_long: 3.0), as speed 1.1 packs a tenth more words into a second.
diffusion=(task=diffusion_asr task.max_length=128 task.tokens_per_second=3.3 task.cache_dir="$exp/encoder_cache"
           task.val_wer=true callbacks.checkpoint.monitor=val/wer
           task.shift=true task.antithetic=true task.loss_weighting=inverse_t task.mask_range=[0.0,1.0]
           task.ctc_weight=0.5 task.gap_rate=0.1 task.decode.init=ctc task.decode.remask=progressive
           task.decode.schedule=[1.0,0.5] task.decode.hold_eos=true task.decode.distinct_neighbours=true
           task.decode.mask_unknown_words=true task.decode.candidates=1)
# Speed 0.9 / 1.0 / 1.1 only (no gain, no noise): three versions of each item, whose states the cache keeps;
# an item is never slowed past the 30 s Whisper hears.
augment=("data.augment={p: 1.0, speeds: [0.9, 1.0, 1.1], gain_db: [0.0, 0.0], p_noise: 0.0, max_seconds: 30.0}"
         "task.state_masking={time_masks: 2, max_time: 0.05, feature_masks: 2, max_features: 48}")
lora=("task.decoder_lora={r: 16, alpha: 32, target_roles: [attn.q, attn.k, attn.v, attn.o, ffn.up, ffn.down]}")
log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
source recipes/_shared/train.sh

if run_stage 0; then
  log "stage 0: long items from $data"
  [ -d "$data/speech_commands_digits" ] && [ -d "$data/speechocean762" ] && [ -d "$data/fsdd" ] || {
    echo "$data: needs fsdd/, speech_commands_digits/ and speechocean762/ (the shared real speakers; --data DIR)" >&2
    exit 1; }
  [ -f "$exp/data/train.jsonl" ] || speech-peft prepare digits_long "$data" "$exp/data" --skip-bad >/dev/null
fi

if run_stage 1; then
  log "stage 1: Whisper tiny.en AR + LoRA"
  train "$exp/ar_lora" task=whisper_ar adapter=lora trainer.max_epochs="${epochs:-1}"
fi

if run_stage 2; then
  [ -d "$exp/ar_lora/export/adapter" ] || { echo "$exp/ar_lora/export: missing (run stage 1 first)" >&2; exit 1; }
  log "stage 2: diffusion, LoRA on the frozen Whisper decoder, on the encoder AR + LoRA adapted"
  train "$exp/diffusion_lora_ar_encoder" "${diffusion[@]}" "${augment[@]}" "${lora[@]}" task.stage=1 task.lr=1e-3 \
    task.encoder_adapter="$exp/ar_lora/export/adapter" trainer.max_epochs="${epochs:-$lora_epochs}"
fi

if run_stage 3; then
  log "stage 3: diffusion, Whisper's decoder fully trained (stage 1: adapters, stage 2: decoder)"
  train "$exp/diffusion/stage1" "${diffusion[@]}" "${augment[@]}" task.stage=1 task.lr=1e-4 trainer.max_epochs=2
  train "$exp/diffusion/stage2" "${diffusion[@]}" "${augment[@]}" task.stage=2 task.lr=1e-4 \
    task.init_from="$exp/diffusion/stage1/export" trainer.max_epochs="${epochs:-$stage2_epochs}"
fi

if run_stage 4; then
  log "stage 4: every system on every bucket of test and test_real"
  speech-peft report asr "$exp" --evaluate --candidates 1 --layout digits_long --out "$results" --command "$command"
fi

if run_stage 5; then
  log "stage 5: decoding speed, side by side"
  tables=()
  for model in diffusion_lora_ar_encoder/export diffusion_lora/export diffusion/stage2/export; do
    [ -d "$exp/$model" ] || continue
    table="$exp/eval/speed_${model%%/*}.md"
    [ -f "$table" ] || { echo "Diffusion: \`$model\`."; echo
      python benches/decode_speed.py --exp "$exp" --diffusion "$model" --items 4 --ks 1; } > "$table.partial"
    [ -f "$table" ] || mv "$table.partial" "$table"
    tables+=("$table")
  done
  [ ${#tables[@]} -eq 0 ] || awk 'FNR == 1 && NR > 1 { print "" } { print }' "${tables[@]}" > "$exp/eval/decode_speed.md"
fi

if run_stage 6; then
  log "stage 6: $results"
  speech-peft report asr "$exp" --layout digits_long --out "$results" --command "$command"
  cat "$results"
fi

# The fully trained decoder (tens of MB) cannot ship: the LoRA exports do, each at most 10 MB.
if run_stage 7 && [ "$exp" = exp/digits_long/asr ]; then  # trial runs never replace the shipped ones
  for pair in diffusion_lora_ar_encoder/export:whisper-tiny.en-digits-diffusion ar_lora/export:whisper-tiny.en-digits-lora; do
    from=$exp/${pair%%:*} shipped=speech_peft/pretrained/${pair##*:}
    bytes=$(du -sb "$from" | cut -f1)
    [ "$bytes" -le 10000000 ] || { echo "$from: $bytes bytes, over the 10 MB an export may ship with" >&2; exit 1; }
    log "stage 7: ship $from as $shipped ($bytes bytes)"
    rm -rf "$shipped.new" && cp -r "$from" "$shipped.new" && rm -rf "$shipped" && mv "$shipped.new" "$shipped"
  done
fi

if run_stage 8; then
  log "stage 8: the ablation: LoRA on the frozen Whisper decoder, on Whisper's own encoder"
  train "$exp/diffusion_lora" "${diffusion[@]}" "${augment[@]}" "${lora[@]}" task.stage=1 task.lr=1e-3 \
    trainer.max_epochs="${epochs:-$lora_epochs}"
fi
