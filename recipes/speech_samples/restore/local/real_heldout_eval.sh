#!/usr/bin/env bash
# Stage 10 of the restoration recipe: held-out real speakers under the conditions people have, each
# restorer judged against doing nothing and against spectral gating.
#   bash local/real_heldout_eval.sh SHARED_DATA EXP NAME=RESTORER[:SYNTHESIS[:ATTENUATION_LIMIT_DB]] ...
# Conditions: clean; real noise at 6-12 dB; babble of 3-6 other held-out talkers at 6-12 dB; a real room
# and real noise at 6-12 dB; a far room, loud noise (0-5 dB) and a telephone band. Systems: the input
# (input), spectral gating (spectral_gating), then each NAME: restore --checkpoint RESTORER [--synthesis
# SYNTHESIS] [--attenuation-limit-db DB] (RESTORER "rnnoise": restore --baseline rnnoise [--attenuation-limit-db
# DB]). Each system's outputs are scored once, on their own, into
# conditions/C/quality/NAME
# (DNSMOS, speaker similarity to the clean file, WER of each $ASR model where the source has text);
# existing reports are kept, so adding a system scores only it.
#   ASR: the WER models (default "whisper-tiny.en whisper-base"); SCORE_FLAGS: e.g. --no-dnsmos;
#   CEILING=1: also input_gain_ceiling (local/input_gain_ceiling.py: the input lowered toward the clean
#   file's own mel, the most an input-gain restorer can reach); CONDITIONS: a subset of the five (default:
#   all); NOISES, RIRS: other noises and rooms (default: the recipe's held-out noise4-5 and rir3-4);
#   EXP/heldout may be made beforehand (local/real_dev.py: the validation speakers, for choosing a setting).
set -euo pipefail
shared=$1 exp=$2
shift 2
read -r -a asr <<< "${ASR:-whisper-tiny.en whisper-base}"
read -r -a score_flags <<< "${SCORE_FLAGS:-}"
data=data/speech_samples
heldout=$exp/heldout
[ -f "$heldout/transcripts.tsv" ] || python "$(dirname "$0")/real_heldout.py" "$shared" "$heldout" >/dev/null
read -r -a noise <<< "${NOISES:-$data/noise/noise4.wav $data/noise/noise5.wav}"
read -r -a rirs <<< "${RIRS:-$data/rirs/rir3.wav $data/rirs/rir4.wav}"
common=(--p-clean 0 --p-real 1 --noise "${noise[@]}" --rir "${rirs[@]}" --babble "$heldout/babble"/*.wav)
declare -A conditions=(
  [clean]="--p-clean 1 --effects noise"
  [noise]="--effects noise --snr 6 12 --min-effects 1 --max-effects 1"
  [babble]="--effects babble --snr 6 12 --min-effects 1 --max-effects 1"
  [room_noise]="--effects reverb noise --snr 6 12 --min-effects 2 --max-effects 2"
  [far_phone]="--effects reverb noise band_limit --snr 0 5 --min-effects 3 --max-effects 3"
)
score() {  # score FOLDER REPORT: one system's outputs on their own ("degraded" in its report)
  [ -f "$2/per_file.csv" ] || speech-peft score quality --deg "$1" --ref "$heldout/clean" \
    --transcripts "$heldout/transcripts.tsv" --asr "${asr[@]}" --report "$2" --plots 0 "${score_flags[@]}" >/dev/null
}
read -r -a chosen <<< "${CONDITIONS:-clean noise babble room_noise far_phone}"
for condition in "${chosen[@]}"; do
  [ -n "${conditions[$condition]:-}" ] || { echo "CONDITIONS: no condition $condition (${!conditions[*]})" >&2; exit 2; }
  out=$heldout/conditions/$condition
  # shellcheck disable=SC2086
  [ -d "$out/degraded" ] || speech-peft degrade "$heldout/clean" --out "$out/degraded" "${common[@]}" \
    ${conditions[$condition]} --seed 9 >/dev/null
  score "$out/degraded" "$out/quality/input"
  speech-peft restore "$out/degraded" "$out/spectral_gating" --baseline spectral-gating >/dev/null
  score "$out/spectral_gating" "$out/quality/spectral_gating"
  if [ "${CEILING:-0}" = 1 ]; then
    [ -f "$out/quality/input_gain_ceiling/per_file.csv" ] || python "$(dirname "$0")/input_gain_ceiling.py" \
      "$out/degraded" "$heldout/clean" "$out/input_gain_ceiling"
    score "$out/input_gain_ceiling" "$out/quality/input_gain_ceiling"
  fi
  for system in "$@"; do
    name=${system%%=*} spec=${system#*=}
    IFS=: read -r restorer synthesis limit <<< "$spec"
    flags=()
    [ -z "$synthesis" ] || flags+=(--synthesis "$synthesis")
    [ -z "$limit" ] || flags+=(--attenuation-limit-db "$limit")
    case $restorer in rnnoise) flags+=(--baseline "$restorer") ;; *) flags+=(--checkpoint "$restorer") ;; esac
    speech-peft restore "$out/degraded" "$out/$name" "${flags[@]}" >/dev/null
    score "$out/$name" "$out/quality/$name"
  done
done
