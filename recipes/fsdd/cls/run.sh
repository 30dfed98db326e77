#!/usr/bin/env bash
# Spoken-digit classification on the Free Spoken Digit Dataset with a frozen Whisper tiny.en encoder
# and parameter-efficient adapters, leave-one-speaker-out (train on 5 speakers, test on the 6th).
#
#   bash recipes/fsdd/cls/run.sh                  # all methods, all 6 folds -> RESULTS.md
#   bash recipes/fsdd/cls/run.sh --quick          # bundled subset, LoRA, held-out nicolas, 10 epochs
#   bash recipes/fsdd/cls/run.sh --stage 3        # only regenerate RESULTS.md
#   bash recipes/fsdd/cls/run.sh --stage 4        # only the adapter-family tables (methods, low-bit storage, merging)
#   bash recipes/fsdd/cls/run.sh --stage 5        # only the routed-family table (Hydra, hyper, MHR, CoDA, HD-PiSSA, LTE)
#   bash recipes/fsdd/cls/run.sh --model base     # LoRA on the frozen multilingual Whisper base encoder
#                                                 # -> exp/fsdd/cls_base, RESULTS_base.md
#   bash recipes/fsdd/cls/run.sh --profile gpu    # one GPU: every clip padded to 30 s as Whisper was trained
#                                                 # (55x the encoder time of the clip's own length on the CPU)
#                                                 # -> exp/fsdd/cls_gpu/RESULTS.md
#   ... -- task.lr=5e-4                           # Hydra overrides after --
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."

stage=0 stop_stage=5 data="" quick=false extra=() profile=cpu
routed="hydra hyper mhr coda_4x hd_pissa lte"  # HD-PiSSA, LTE: 2 processes (DDP); also coda_2x, coda_8x
methods="linear_probe lora parallel full sparse sparse_large mosa $routed"  # also: conformer bitfit houlsby prompt prefix pissa ...
folds="george jackson lucas nicolas theo yweweler"
epochs=6 exp=exp/fsdd/cls model=tiny
default_methods=$methods
source recipes/_shared/parse_args.sh "$@"

layout=fsdd experiment=fsdd_loso conf_dir=$here/conf results=$here/RESULTS.md
command="bash recipes/fsdd/cls/run.sh"
if $quick; then
  data=${data:-data/fsdd_subset} methods=lora folds=nicolas epochs=10 stop_stage=$(( stop_stage > 3 ? 3 : stop_stage ))
  [ "$exp" = exp/fsdd/cls ] && exp=exp/fsdd_quick/cls
  results=$exp/RESULTS.md command="bash recipes/fsdd/cls/run.sh --quick"
fi
if [ "$profile" = gpu ]; then
  hardware="trainer=gpu data.num_workers=8 encoder.pad_to_30s=true"
  [ "$exp" = exp/fsdd/cls ] && exp=exp/fsdd/cls_gpu
  results=$exp/RESULTS.md command="bash recipes/fsdd/cls/run.sh --profile gpu"
fi
case $model in
  tiny) ;;
  base) hardware="${hardware:-} encoder=whisper_base" stop_stage=$(( stop_stage > 3 ? 3 : stop_stage ))
        [ "$methods" = "$default_methods" ] && methods=lora
        case $exp in exp/fsdd/cls|exp/fsdd_quick/cls|exp/fsdd/cls_gpu) exp=${exp}_base ;; esac
        if $quick || [ "$profile" = gpu ]; then results=$exp/RESULTS.md; else results=$here/RESULTS_base.md; fi
        command="$command --model base" ;;
  *) echo "unknown model $model (tiny, base)" >&2; exit 2 ;;
esac
[ -n "$data" ] || { [ -d ../shared/data/fsdd ] && data=../shared/data/fsdd || data=data/fsdd_subset; }
source recipes/_shared/cls_stages.sh

# Stage 4: the adapter family. Two more parallel adapters on one fold (other seeds) to merge with the first,
# then per-method encoder time, low-bit storage of every fold's parallel adapter, and the merges, written
# into RESULTS.md below the main table.
if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  merge_fold=nicolas runs=()
  for seed in 1 2; do
    dir=$exp/merging/parallel_seed$seed/fold_$merge_fold runs+=("$dir")
    [ -f "$dir/fit_result.json" ] && continue
    log "stage 4: train parallel, held-out $merge_fold, seed $seed"
    speech-peft fit --config-dir "$conf_dir" experiment="$experiment" adapter=parallel seed=$seed \
      data.train="$exp/manifests/fold_$merge_fold/train.jsonl" data.val="$exp/manifests/fold_$merge_fold/val.jsonl" \
      data.test="$exp/manifests/fold_$merge_fold/test.jsonl" trainer.max_epochs="$epochs" exp_dir="$dir" \
      trainer.enable_progress_bar=false "${hardware_args[@]}" "${extra[@]}"
  done
  log "stage 4: adapter family tables -> $results"
  speech-peft report family "$exp" --out "$results" --merge-fold $merge_fold --merge-runs "${runs[@]}"
fi

# Stage 5: the routed family (multi-head, generated, routed, conditional, rank-parallel) beside LoRA, with
# encoder time against the bare encoder and CoDA's speed-up over its own dense path, into RESULTS.md.
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: routed adapter family table -> $results"
  speech-peft report family "$exp" --out "$results" --section routed --bits --methods lora $routed
fi
