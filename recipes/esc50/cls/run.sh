#!/usr/bin/env bash
# ESC-50 environmental sound classification, the 5 official folds (validation: every 10th clip of the
# training folds, never the test fold). Needs the ESC-50 layout (audio/, meta/esc50.csv):
#   bash recipes/esc50/cls/run.sh --data /path/to/ESC-50
# The default encoder is the frozen Whisper tiny.en; for AST pass a local AST directory:
#   bash recipes/esc50/cls/run.sh --data ... -- encoder=ast encoder.name=/path/to/ast
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

stage=0 stop_stage=3 data="" quick=false extra=()
methods="linear_probe lora conformer"
folds="fold1 fold2 fold3 fold4 fold5"
epochs=20 exp=exp/esc50/cls
source recipes/_shared/parse_args.sh "$@"
[ -n "$data" ] || { echo "--data /path/to/ESC-50 is required" >&2; exit 2; }

layout=esc50 experiment=esc50_folds conf_dir=$here/conf results=$here/RESULTS.md
command="bash recipes/esc50/cls/run.sh --data $data"
source recipes/_shared/cls_stages.sh
