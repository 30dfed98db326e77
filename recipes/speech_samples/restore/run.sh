#!/usr/bin/env bash
# Speech restoration in the manner of Miipher-2 on real recordings (bundled in data/speech_samples):
# a frozen Whisper tiny.en encoder with parallel adapters cleans features; a trained bridge turns them
# into the log-mel of the frozen pretrained HiFi-GAN V1 (universal), which speaks.
#
#   bash recipes/speech_samples/restore/run.sh              # all stages -> RESULTS.md
#   bash recipes/speech_samples/restore/run.sh --stage 6    # only regenerate RESULTS.md
#   bash recipes/speech_samples/restore/run.sh --profile gpu --stop_stage 6   # one GPU -> exp/speech_samples/restore_gpu
#   ... --epochs 4 -- trainer.limit_train_batches=0.5       # Hydra overrides after --
#
#   0 manifests: clean recordings, synthetic voices (espeak-ng, flite), FSDD digit sequences; held-out
#     evaluation sets degraded with real RIRs + real noise unseen in training (and a harder one:
#     low SNR, reverberation and a telephone band)
#   1 train the cleaner (parallel adapters) on every voice
#   2 train the bridge on clean features (wideband voices only)
#   3 fine-tune the bridge on cleaned features
#   4 restore the evaluation sets, the clean originals, and copy-synthesis (the bridge's ceiling)
#   5 score quality (PESQ, STOI, SI-SDR, DNSMOS, speaker similarity, WER)
#   6 measure feature distance and real-time factor, write RESULTS.md
#   7 ship the restorer with the package (speech_peft/pretrained/restorer-whisper-tiny.en), which
#     `speech-peft restore IN OUT` uses when no --checkpoint is given
#   8 (GPU profile, run on its own: --stage 8) distil a fast student of HiFi-GAN V1 from the log-mels
#     of the training voices and the bridge's predictions of them (DISTILL_SECONDS of training, 480 by
#     default: about 11k steps on an H200), ship it (speech_peft/pretrained/hifigan-student, used by
#     `speech-peft restore --student`), restore the held-out sets through it, rewrite RESULTS.md
#   9 (run on its own: --stage 9 --stop_stage 10; needs ../shared/data) real speakers in training: the
#     real-speaker pool (speechocean762, LibriSpeech, VCTK; held-out speakers left out); bridges that read
#     the input's mel, exported with input-gain synthesis, each for the same steps (REAL_STEPS, 400 by
#     default): mel, features+mel (stage 1's cleaner); and the ablation: mel on the synthetic voices only;
#     then two dilated features+mel bridges on real + synthetic voices with wider noises: the log-mel
#     objective (3,000 steps) and the compressed-gain objective (1,500 steps); then features+mel fine-tuned
#     1,500 steps on noise textures (random spectral envelopes, level swings, hum; equalised recordings),
#     without and with the noise floor as an input (noise-aware), and guided by RNNoise (the bridge also
#     reads how the pretrained suppressor lowered each band; 1,200 steps, as RNNoise doubles a step's time),
#     then the guided one 600 more steps on the ceiling-gain objective
#  10 held-out real speakers (a speaker-disjoint fifth of speechocean762 and LibriSpeech) under clean,
#     noise, babble, room + noise and far room + loud noise + telephone band: the input, spectral gating,
#     the shipped restorer and every stage-9 restorer side by side (RESULTS_real_speakers.md)
#  11 (run on its own: --stage 11 --stop_stage 11, after stage 9) the shipped restorer's attenuation limit
#     (20, 10, 6 dB) on the pool's validation speakers and the training noises, never the held-out ones
#     (RESULTS_attenuation_limit.md)
#  12 (run on its own: --stage 12 --stop_stage 12, after stage 9) noises no restorer here trained on: the shipped
#     restorer, the textures, noise-aware and guided bridges and RNNoise (alone, and as input gains limited to 10 dB) on the
#     validation speakers with the ESC-50 clips as noise
#     (RESULTS_unseen_noise.md), to choose between them before the held-out speakers see either; beside
#     them the input-gain ceiling (local/input_gain_ceiling.py), the most any bridge could reach
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

stage=0 stop_stage=7 data=data/speech_samples quick=false extra=() epochs="" profile=cpu
exp=exp/speech_samples/restore
source recipes/_shared/parse_args.sh "$@"
case $profile in
  cpu) hardware=() ;;
  gpu) hardware=(trainer=gpu data.batch_size=32)  # one GPU, bf16-mixed; its own folder, never the shipped one
       [ "$exp" = exp/speech_samples/restore ] && exp=exp/speech_samples/restore_gpu ;;
esac
fsdd=../shared/data/fsdd; [ -d "$fsdd" ] || fsdd=data/fsdd_subset
cleaner_epochs=${epochs:-5} bridge_epochs=${epochs:-8} finetune_epochs=${epochs:-2}
results_file() {  # results_file NAME: the committed table, or the trial run's own (trial runs never overwrite it)
  if [ "$exp" = exp/speech_samples/restore ]; then echo "$here/$1"; else echo "$exp/$1"; fi
}
results=$(results_file RESULTS.md)
fit=(speech-peft fit --config-dir "$here/conf" experiment=restore_speech_samples trainer.enable_progress_bar=false
     "${hardware[@]}")
cleaner=$exp/cleaner/export restorer=$exp/bridge_cleaned/export
log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

if run_stage 0; then
  require_tools "stage 0 (synthetic voices)" espeak-ng flite
  log "stage 0: manifests; synthetic voices; held-out evaluation sets from $data/asr"
  m=$exp/manifests
  speech-peft prepare folder "$data/clean" "$m" >/dev/null
  grep -v '"id": "sep_source[12]_3"' "$m/all.jsonl" > "$m/recordings_train.jsonl"
  grep '"id": "sep_source[12]_3"' "$m/all.jsonl" > "$m/recordings_val.jsonl"
  speech-peft prepare tts_voices data/sentences/read_sentences.txt "$exp/tts" --voices 6 0 >/dev/null
  speech-peft prepare fsdd_long "$fsdd" "$exp/fsdd_long" --long-items 10 5 >/dev/null
  cat "$m/recordings_train.jsonl" "$exp/tts/train.jsonl" > "$m/wideband_train.jsonl"
  cat "$m/recordings_val.jsonl" "$exp/tts/val.jsonl" > "$m/val.jsonl"
  cat "$m/wideband_train.jsonl" "$exp/fsdd_long"/{train,val,test}.jsonl > "$m/cleaner_train.jsonl"
  held_out=(--p-real 1 --noise "$data/noise/noise4.wav" "$data/noise/noise5.wav" --rir "$data/rirs/rir3.wav" "$data/rirs/rir4.wav")
  speech-peft degrade "$data/asr" --out "$exp/eval/degraded" --effects reverb noise --min-effects 2 \
    --p-clean 0 --snr 5 15 --seed 1 "${held_out[@]}" >/dev/null
  speech-peft degrade "$data/asr" --out "$exp/eval/hard" --effects reverb noise band_limit --min-effects 3 \
    --p-clean 0 --snr 0 5 --seed 2 "${held_out[@]}" >/dev/null
fi

if run_stage 1 && [ ! -f "$exp/cleaner/fit_result.json" ]; then
  log "stage 1: cleaner (parallel adapters on the frozen encoder)"
  "${fit[@]}" task=restore_cleaner data.train="$exp/manifests/cleaner_train.jsonl" data.val="$exp/manifests/val.jsonl" \
    data.repeats=1 data.degrade.p_clean=0.2 trainer.max_epochs="$cleaner_epochs" exp_dir="$exp/cleaner" "${extra[@]}"
fi

bridge_data=(data.train="$exp/manifests/wideband_train.jsonl" data.val="$exp/manifests/val.jsonl" data.repeats=1)
if run_stage 2 && [ ! -f "$exp/bridge_clean/fit_result.json" ]; then
  log "stage 2: bridge from clean features to HiFi-GAN's log-mel"
  "${fit[@]}" task=restore_bridge task.stage=clean task.cleaner_dir="$cleaner" "${bridge_data[@]}" \
    trainer.max_epochs="$bridge_epochs" exp_dir="$exp/bridge_clean" "${extra[@]}"
fi

if run_stage 3 && [ ! -f "$exp/bridge_cleaned/fit_result.json" ]; then
  log "stage 3: bridge fine-tuned on cleaned features"
  "${fit[@]}" task=restore_bridge task.stage=cleaned task.cleaner_dir="$cleaner" task.lr=3e-4 \
    task.init_bridge="$exp/bridge_clean/export/vocoder.safetensors" "${bridge_data[@]}" \
    trainer.max_epochs="$finetune_epochs" exp_dir="$exp/bridge_cleaned" "${extra[@]}"
fi

# Outputs live beside the restorer that made them: retraining it (removing its folder) drops them too,
# and `speech-peft restore` refuses to mix two restorers' outputs in one folder.
eval_out=$exp/bridge_cleaned/eval
if run_stage 4; then
  log "stage 4: restore the held-out sets and the clean originals; copy-synthesis of the clean audio"
  speech-peft restore "$exp/eval/degraded" "$eval_out/restored" --checkpoint "$restorer" >/dev/null
  speech-peft restore "$exp/eval/hard" "$eval_out/restored_hard" --checkpoint "$restorer" >/dev/null
  speech-peft restore "$data/asr" "$eval_out/clean_restored" --checkpoint "$restorer" >/dev/null
  speech-peft restore "$data/asr" "$eval_out/ceiling" --checkpoint "$restorer" --copy-synthesis >/dev/null
fi

if run_stage 5; then
  log "stage 5: quality"
  speech-peft score quality --ref "$data/asr" --deg "$exp/eval/degraded" --out "$eval_out/restored" \
    --also ceiling="$eval_out/ceiling" clean="$data/asr" clean_restored="$eval_out/clean_restored" \
    --transcripts "$data/asr/transcripts.tsv" --report "$exp/quality" >/dev/null
  speech-peft score quality --ref "$data/asr" --deg "$exp/eval/hard" --out "$eval_out/restored_hard" \
    --transcripts "$data/asr/transcripts.tsv" --report "$exp/quality_hard" --plots 2 >/dev/null
fi

if run_stage 6; then
  log "stage 6: $results"
  speech-peft report restore "$exp" --out "$results" --measure "$restorer" "$exp/eval/degraded/degraded.jsonl" \
    --command "bash recipes/speech_samples/restore/run.sh"
  cat "$results"
fi

shipped=speech_peft/pretrained/restorer-whisper-tiny.en
real=$exp/real_speakers
default_variant=features_mel_gain  # the stage-9 bridge that won on held-out real speakers (RESULTS_real_speakers.md)
ship() {  # ship EXPORT: the restorer `speech-peft restore` uses without --checkpoint
  mkdir -p "$(dirname "$shipped")" && rm -rf "$shipped.new" && cp -r "$1" "$shipped.new"
  rm -rf "$shipped" && mv "$shipped.new" "$shipped"
}
if run_stage 7 && [ "$exp" = exp/speech_samples/restore ]; then  # trial runs never replace the shipped one
  if [ -f "$real/$default_variant/export/export.json" ]; then
    log "stage 7: the shipped restorer stays stage 10's real-speaker winner ($default_variant)"
  else
    log "stage 7: ship $restorer as $shipped"
    ship "$restorer"
  fi
fi

student=$exp/student
if run_stage 8; then
  log "stage 8: distil the student vocoder; restore through it"
  if [ ! -f "$student/export.json" ]; then
    python -m speech_peft.vocoders.distill corpus "$exp/manifests/wideband_train.jsonl" "$exp/manifests/val.jsonl" \
      --out "$exp/student_mels.npz" --restorer "$restorer"
    python -m speech_peft.vocoders.distill train --mels "$exp/student_mels.npz" --out "$student" \
      --seconds "${DISTILL_SECONDS:-480}" | tee "$exp/student_train.log"
    if [ "$exp" = exp/speech_samples/restore ]; then
      shipped_student=speech_peft/pretrained/hifigan-student
      rm -rf "$shipped_student.new" && mkdir -p "$shipped_student.new"
      cp "$student"/{student.safetensors,export.json,distillation.json} "$shipped_student.new"
      rm -rf "$shipped_student" && mv "$shipped_student.new" "$shipped_student"
    fi
  fi
  with_student=(--checkpoint "$restorer" --student "$student")
  speech-peft restore "$exp/eval/degraded" "$exp/student_eval/restored" "${with_student[@]}" >/dev/null
  speech-peft restore "$exp/eval/hard" "$exp/student_eval/restored_hard" "${with_student[@]}" >/dev/null
  speech-peft restore "$data/asr" "$exp/student_eval/ceiling" "${with_student[@]}" --copy-synthesis >/dev/null
  speech-peft score quality --ref "$data/asr" --deg "$exp/eval/degraded" --out "$exp/student_eval/restored" \
    --also ceiling="$exp/student_eval/ceiling" restored_hard="$exp/student_eval/restored_hard" \
    --transcripts "$data/asr/transcripts.tsv" --report "$exp/quality_student" >/dev/null
  speech-peft report restore "$exp" --out "$results" --command "bash recipes/speech_samples/restore/run.sh"
fi

shared=../shared/data
# Wider training: the ESC-50 clips join noise1-3 (noise4-5 and rir3-4 stay held out), 10% clean inputs, a dilated
# bridge (0.75 s of context); each variant's own steps and objective follow its pool.
wide="data.degrade.noise_files=[$(printf '%s\n' "$data"/noise/noise{1,2,3}.wav "$shared"/speech_samples/esc50/*.wav \
  | paste -sd,)] data.degrade.p_clean=0.1 task.bridge.dilation_growth=2"
# Noises no recording holds: textures (random spectral envelopes, level swings, hum) and the training recordings
# through random equalisers, louder (0-25 dB SNR), babble of every pool talker; the ESC-50 clips stay out, to
# judge on (stage 12). Fine-tunes features_mel_gain; features_mel_floor also reads each band's noise floor,
# features_mel_guided how RNNoise lowered each band.
textures="task.init_bridge=$real/features_mel_gain/export/vocoder.safetensors task.lr=3e-4 data.degrade.p_clean=0.1"
textures+=" data.degrade.snr_db=[0.0,25.0] data.degrade.p_texture=0.6 data.degrade.noise_eq_db=20.0"
textures+=" data.degrade.babble_files=[@every_talker@] +trainer.max_steps=1500"
# The guided bridge fine-tuned 600 steps on the ceiling-gain objective (cutting into the words costs 4x)
guided_ceiling="${textures/max_steps=1500/max_steps=600} task.bridge.guide=rnnoise task.objective=ceiling_gain"
guided_ceiling=${guided_ceiling/features_mel_gain\/export/features_mel_guided\/export}
variants=(  # name bridge-inputs synthesis training-pool [overrides] (the features-only bridge is stage 3's)
  "mel_gain mel input_gain real"
  "features_mel_gain features+mel input_gain real"
  "mel_gain_synthetic_only mel input_gain synthetic"
  "features_mel_dilated features+mel input_gain real+synthetic $wide +trainer.max_steps=3000"
  "features_mel_compressed features+mel input_gain real+synthetic $wide task.objective=compressed_gain +trainer.max_steps=1500"
  "features_mel_textures features+mel input_gain real+synthetic $textures"
  "features_mel_floor features+mel input_gain real+synthetic $textures task.bridge.noise_floor=true"
  "features_mel_guided features+mel input_gain real+synthetic ${textures/max_steps=1500/max_steps=1200} task.bridge.guide=rnnoise"
  "features_mel_guided_ceiling features+mel input_gain real+synthetic ${guided_ceiling}"
  "features_mel_guided_loud features+mel input_gain real+synthetic ${guided_ceiling} task.overcut_loudness=4.0")
has_real_speakers() { [ -d "$shared/speechocean762" ] && [ -d "$shared/librispeech_speakers" ]; }
if run_stage 9 && ! has_real_speakers; then
  log "stage 9 skipped: $shared holds no real-speaker folders (speechocean762, librispeech_speakers)"
elif run_stage 9; then
  log "stage 9: real speakers in training: bridge variants, ${REAL_STEPS:-400} steps each"
  python "$here/local/real_heldout.py" "$shared" "$real/heldout" >/dev/null
  python "$here/local/real_train.py" "$shared" "$real/heldout/heldout_speakers.txt" "$real/pool" >/dev/null
  cp "$real/pool/train.jsonl" "$real/pool/real.jsonl"
  cp "$exp/manifests/wideband_train.jsonl" "$real/pool/synthetic.jsonl"
  cat "$real/pool/real.jsonl" "$real/pool/synthetic.jsonl" > "$real/pool/real+synthetic.jsonl"
  babble=$(head -n 40 "$real/pool/babble.txt" | paste -sd,)  # 40 talkers (features_mel_textures: every one)
  real_fit=("${fit[@]}" data.val="$real/pool/val.jsonl" data.repeats=1 "+data.degrade.babble_files=[$babble]"
            trainer.max_epochs=1000)
  for variant in "${variants[@]}"; do
    read -r name inputs synthesis pool overrides <<< "$variant"
    overrides=${overrides//@every_talker@/$(paste -sd, "$real/pool/babble.txt")}
    read -r -a overrides <<< "${overrides:-+trainer.max_steps=${REAL_STEPS:-400}}"
    [ -f "$real/$name/fit_result.json" ] || "${real_fit[@]}" task=restore_bridge task.stage=cleaned \
      task.bridge.inputs="$inputs" task.synthesis="$synthesis" task.cleaner_dir="$cleaner" \
      data.train="$real/pool/$pool.jsonl" exp_dir="$real/$name" "${overrides[@]}" "${extra[@]}"
  done
fi

if run_stage 10 && has_real_speakers; then
  log "stage 10: held-out real speakers under five conditions: the input, spectral gating, each restorer"
  systems=()  # stage 3's restorer: the features-only bridge (Miipher-2's design), HiFi-GAN speaking
  [ -f "$restorer/export.json" ] && systems+=("features_vocoder=$restorer")
  for variant in "${variants[@]}"; do
    read -r name _ <<< "$variant"
    [ -f "$real/$name/export/export.json" ] && systems+=("$name=$real/$name/export")
  done
  bash "$here/local/real_heldout_eval.sh" "$shared" "$real" "${systems[@]}"
  table=$(results_file RESULTS_real_speakers.md)
  { echo "# Held-out real speakers (stages 9-10)"; echo
    echo "Made by \`bash recipes/speech_samples/restore/run.sh --stage 9 --stop_stage 10\`; speakers no stage"
    echo "trains on (local/real_heldout.py)."; echo
    python "$here/local/real_heldout_table.py" "$real/heldout" \
      features_vocoder="features (stage 3, synthetic voices), HiFi-GAN speaks" mel_gain="mel, input gains" \
      features_mel_gain="features+mel, input gains" \
      mel_gain_synthetic_only="mel, input gains, synthetic voices only" \
      features_mel_dilated="features+mel, dilated, real + synthetic, log-mel objective, 3,000 steps" \
      features_mel_compressed="features+mel, dilated, real + synthetic, compressed-gain objective, 1,500 steps"
  } > "$table"
  if [ "$exp" = exp/speech_samples/restore ] && [ -f "$real/$default_variant/export/export.json" ]; then
    log "stage 10: ship $default_variant as $shipped"
    ship "$real/$default_variant/export"
  fi
fi

validation_set() {  # validation_set DIR: the pool's validation speakers laid out as a held-out set in DIR/heldout
  [ -f "$real/heldout/heldout_speakers.txt" ] || python "$here/local/real_heldout.py" "$shared" "$real/heldout" >/dev/null
  [ -f "$real/pool/val.jsonl" ] || python "$here/local/real_train.py" "$shared" "$real/heldout/heldout_speakers.txt" \
    "$real/pool" >/dev/null
  [ -f "$1/heldout/transcripts.tsv" ] || python "$here/local/real_dev.py" "$real/pool" "$1/heldout" >/dev/null
}

if run_stage 11 && has_real_speakers; then
  log "stage 11: the shipped restorer's attenuation limit, chosen on the validation speakers (training noises)"
  dev=$real/dev  # never the held-out speakers, nor their noises and rooms
  validation_set "$dev"
  limits=(20 10 6) systems=()
  for limit in "${limits[@]}"; do systems+=("limit_$limit=$shipped:input_gain:$limit"); done
  ASR=whisper-tiny.en NOISES="$(echo "$data"/noise/noise{1,2,3}.wav)" RIRS="$(echo "$data"/rirs/rir{1,2}.wav)" \
    bash "$here/local/real_heldout_eval.sh" "$shared" "$dev" "${systems[@]}"
  table=$(results_file RESULTS_attenuation_limit.md)
  { echo "# The attenuation limit on the validation speakers (stage 11)"; echo
    echo "Made by \`bash recipes/speech_samples/restore/run.sh --stage 11 --stop_stage 11\`: the shipped restorer"
    echo "with \`--attenuation-limit-db\` 20 (its own), 10 and 6 on the real-speaker pool's validation speakers"
    echo "(local/real_dev.py), degraded with the training noises and rooms (noise1-3, rir1-2)."; echo
    python "$here/local/real_heldout_table.py" "$dev/heldout" \
      limit_20="input gains, limit 20 dB (shipped)" limit_10="input gains, limit 10 dB" limit_6="input gains, limit 6 dB"
  } > "$table"
fi

if run_stage 12 && has_real_speakers; then
  log "stage 12: the shipped restorer, the textures, noise-aware and guided bridges and RNNoise on the validation speakers, unseen noises"
  unseen=$real/unseen_noise  # validation speakers; the ESC-50 clips, which none of these restorers trained on
  validation_set "$unseen"
  # RNNoise: pretrained, never trained here; limited to 1 dB it changes the audio by next to nothing, which
  # measures how far WER moves for no restoration at all
  systems=("shipped=$shipped" rnnoise=rnnoise rnnoise_10=rnnoise::10 rnnoise_1=rnnoise::1)
  for name in textures floor guided guided_ceiling guided_loud; do
    [ -f "$real/features_mel_$name/export/export.json" ] && systems+=("$name=$real/features_mel_$name/export")
  done
  CEILING=1 ASR=whisper-tiny.en NOISES="$(echo "$shared"/speech_samples/esc50/*.wav)" \
    RIRS="$(echo "$data"/rirs/rir{1,2}.wav)" bash "$here/local/real_heldout_eval.sh" "$shared" "$unseen" "${systems[@]}"
  table=$(results_file RESULTS_unseen_noise.md)
  { echo "# Noises no restorer trained on, on the validation speakers (stage 12)"; echo
    echo "Made by \`bash recipes/speech_samples/restore/run.sh --stage 12 --stop_stage 12\`: the real-speaker pool's"
    echo "validation speakers (local/real_dev.py) degraded with the five ESC-50 clips as noise (neither restorer"
    echo "trained on them) and the training rooms (rir1-2)."; echo
    python "$here/local/real_heldout_table.py" "$unseen/heldout" shipped="features+mel, input gains (shipped)" \
      input_gain_ceiling="ceiling: input gains toward the clean file's own mel (no bridge can do better)" \
      rnnoise="RNNoise (pretrained suppressor)" rnnoise_10="RNNoise as input gains, limit 10 dB" \
      rnnoise_1="RNNoise as input gains, limit 1 dB (next to no change: how far WER moves for nothing)" \
      textures="features+mel, input gains, trained on noise textures" \
      floor="features+mel, input gains, noise textures, noise-aware (reads the noise floor)" \
      guided="features+mel, input gains, noise textures, guided (reads how RNNoise lowered each band)" \
      guided_ceiling="features+mel, input gains, guided, ceiling-gain objective (cutting past the clean level costs 4x)" \
      guided_loud="the same, an over-cut of the talker's loud bands costing up to 5x more again (overcut_loudness 4)"
  } > "$table"
fi
