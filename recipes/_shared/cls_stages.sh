#!/usr/bin/env bash
# The stages every classification recipe shares. A recipe's run.sh sets:
#   layout (prepare layout), data (corpus root), folds, methods, epochs, exp, experiment, conf_dir,
#   results (RESULTS.md path), command (how the recipe was called), optionally hardware (Hydra overrides
#   of the --profile, set by the recipe; the default profile is cpu)
# and then sources this file with the parsed --stage/--stop_stage.
#   0 prepare manifests and folds   1 train every method on every fold
#   2 test the checkpoint selected on validation   3 write RESULTS.md
set -euo pipefail
log() { echo "[$(date +%H:%M:%S)] $*"; }
case ${profile:=cpu} in
  cpu) : "${hardware:=}" ;;
  gpu) [ -n "${hardware:-}" ] || hardware="trainer=gpu data.num_workers=8" ;;  # one GPU, bf16-mixed
esac
read -r -a hardware_args <<< "$hardware"

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: manifests from $data"
  speech-peft prepare "$layout" "$data" "$exp/manifests" >/dev/null
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  for method in $methods; do
    for fold in $folds; do
      dir=$exp/$method/fold_$fold
      if [ -f "$dir/fit_result.json" ]; then log "stage 1: $method/$fold already trained"; continue; fi
      opts=() threads=${OMP_NUM_THREADS:-}
      case "$method" in
        full) opts=(task.lr=1e-4) ;;  # the whole encoder moves: a smaller step
        # Rank-parallel LoRA is data-parallel by definition: 2 processes (one thread each), each with half
        # of the global batch (ddp_batch, default 16 of the experiment's 32).
        hd_pissa|lte) opts=(trainer.devices=2 trainer.strategy=ddp data.batch_size="${ddp_batch:-16}") threads=1
                      [ "$profile" = gpu ] && opts+=(trainer.accelerator=cpu trainer.precision=32) ;;  # 2 processes, one GPU
      esac
      log "stage 1: train $method, held-out $fold"
      OMP_NUM_THREADS=$threads speech-peft fit --config-dir "$conf_dir" experiment="$experiment" adapter="$method" \
        data.train="$exp/manifests/fold_$fold/train.jsonl" data.val="$exp/manifests/fold_$fold/val.jsonl" \
        data.test="$exp/manifests/fold_$fold/test.jsonl" trainer.max_epochs="$epochs" exp_dir="$dir" \
        trainer.enable_progress_bar=false "${hardware_args[@]}" "${opts[@]}" "${extra[@]}"
    done
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  for method in $methods; do
    for fold in $folds; do
      dir=$exp/$method/fold_$fold
      [ -f "$dir/test_result.json" ] && { log "stage 2: $method/$fold already tested"; continue; }
      best=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" "$dir/fit_result.json")
      log "stage 2: test $method/$fold with $(basename "$best") (selected on validation)"
      speech-peft test --config-dir "$conf_dir" experiment="$experiment" adapter="$method" \
        data.test="$exp/manifests/fold_$fold/test.jsonl" exp_dir="$dir" ckpt_path="'$best'" \
        trainer.enable_progress_bar=false "${hardware_args[@]}" "${extra[@]}" >/dev/null
    done
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: $results"
  speech-peft report cls "$exp" --out "$results" --command "$command"
  cat "$results"
fi
