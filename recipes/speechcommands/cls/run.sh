#!/usr/bin/env bash
# Google Speech Commands (v2 layout: one folder per word, validation_list.txt, testing_list.txt),
# the official split. Needs the corpus:
#   bash recipes/speechcommands/cls/run.sh --data /path/to/speech_commands_v0.02
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

stage=0 stop_stage=3 data="" quick=false extra=()
methods="linear_probe lora conformer"
folds="official"
epochs=10 exp=exp/speechcommands/cls
source recipes/_shared/parse_args.sh "$@"
[ -n "$data" ] || { echo "--data /path/to/speech_commands is required" >&2; exit 2; }

layout=speechcommands experiment=speechcommands_official conf_dir=$here/conf results=$here/RESULTS.md
command="bash recipes/speechcommands/cls/run.sh --data $data"
source recipes/_shared/cls_stages.sh
