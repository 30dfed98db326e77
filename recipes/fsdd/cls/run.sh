#!/usr/bin/env bash
# Spoken-digit classification on the Free Spoken Digit Dataset with a frozen Whisper tiny.en encoder
# and parameter-efficient adapters, leave-one-speaker-out (train on 5 speakers, test on the 6th).
#
#   bash recipes/fsdd/cls/run.sh                  # all methods, all 6 folds -> RESULTS.md
#   bash recipes/fsdd/cls/run.sh --quick          # bundled subset, LoRA, held-out nicolas, 10 epochs
#   bash recipes/fsdd/cls/run.sh --stage 3        # only regenerate RESULTS.md
#   ... -- task.lr=5e-4                           # Hydra overrides after --
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

stage=0 stop_stage=3 data="" quick=false extra=()
methods="linear_probe lora parallel full"  # also: conformer bitfit houlsby prompt prefix pissa lora_all ...
folds="george jackson lucas nicolas theo yweweler"
epochs=6 exp=exp/fsdd/cls
source recipes/_shared/parse_args.sh "$@"

layout=fsdd experiment=fsdd_loso conf_dir=$here/conf results=$here/RESULTS.md
command="bash recipes/fsdd/cls/run.sh"
if $quick; then
  data=${data:-data/fsdd_subset} methods=lora folds=nicolas epochs=10
  [ "$exp" = exp/fsdd/cls ] && exp=exp/fsdd_quick/cls
  results=$exp/RESULTS.md command="bash recipes/fsdd/cls/run.sh --quick"
fi
[ -n "$data" ] || { [ -d ../shared/data/fsdd ] && data=../shared/data/fsdd || data=data/fsdd_subset; }
source recipes/_shared/cls_stages.sh
