#!/usr/bin/env bash
# train DIR OVERRIDES...: "${fit[@]}" "${data_paths[@]}" OVERRIDES into DIR unless that run finished; after a
# kill it resumes from its last epoch. The recipe sets fit (the fit command), data_paths and extra.
train() {
  local dir=$1 resume=()
  shift
  [ -f "$dir/fit_result.json" ] && return 0
  [ -f "$dir/checkpoints/last.ckpt" ] && resume=(ckpt_path="$dir/checkpoints/last.ckpt")
  "${fit[@]}" "${data_paths[@]}" "$@" exp_dir="$dir" callbacks.checkpoint.save_last=true "${resume[@]}" "${extra[@]}"
}
