#!/usr/bin/env bash
# Stage 9 of the restoration recipe: held-out real speakers (../shared/data) under the conditions people
# have, judged against doing nothing and against spectral gating.
#   bash local/real_heldout_eval.sh SHARED_DATA EXP RESTORER
# Conditions: clean; real noise at 6-12 dB; babble of 3-6 other held-out talkers at 6-12 dB; a real room
# and real noise at 6-12 dB; a far room, loud noise (0-5 dB) and a telephone band. Systems: the input,
# spectral gating (restore --baseline spectral-gating), the restorer. Scores: speech-peft score quality
# (DNSMOS, speaker similarity to the clean file, WER of Whisper tiny.en where the source has text).
set -euo pipefail
shared=$1 exp=$2 restorer=$3
data=data/speech_samples
python "$(dirname "$0")/real_heldout.py" "$shared" "$exp/heldout" >/dev/null
noise=("$data/noise/noise4.wav" "$data/noise/noise5.wav") rirs=("$data/rirs/rir3.wav" "$data/rirs/rir4.wav")
common=(--p-clean 0 --p-real 1 --noise "${noise[@]}" --rir "${rirs[@]}" --babble "$exp/heldout/babble"/*.wav)
declare -A conditions=(
  [clean]="--p-clean 1 --effects noise"
  [noise]="--effects noise --snr 6 12 --min-effects 1 --max-effects 1"
  [babble]="--effects babble --snr 6 12 --min-effects 1 --max-effects 1"
  [room_noise]="--effects reverb noise --snr 6 12 --min-effects 2 --max-effects 2"
  [far_phone]="--effects reverb noise band_limit --snr 0 5 --min-effects 3 --max-effects 3"
)
for name in clean noise babble room_noise far_phone; do
  out=$exp/heldout/conditions/$name
  # shellcheck disable=SC2086
  [ -d "$out/degraded" ] || speech-peft degrade "$exp/heldout/clean" --out "$out/degraded" "${common[@]}" \
    ${conditions[$name]} --seed 9 >/dev/null
  speech-peft restore "$out/degraded" "$out/spectral_gating" --baseline spectral-gating >/dev/null
  speech-peft restore "$out/degraded" "$out/restored" --checkpoint "$restorer" >/dev/null
  speech-peft score quality --ref "$exp/heldout/clean" --deg "$out/degraded" --out "$out/restored" \
    --also spectral_gating="$out/spectral_gating" --transcripts "$exp/heldout/transcripts.tsv" \
    --report "$out/quality" --plots 0 >/dev/null
done
