#!/usr/bin/env bash
# Runs a command as on a fresh machine without the optional system tools: espeak-ng, flite, ffmpeg and sox
# (and their companions) are hidden from PATH, everything else stays reachable.
#   bash tests/without_system_tools.sh make test
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: bash tests/without_system_tools.sh COMMAND [ARGS...]" >&2; exit 2; }
bare=$(mktemp -d)
trap 'rm -rf "$bare"' EXIT
IFS=: read -r -a dirs <<< "$PATH"
declare -A seen=()
for dir in "${dirs[@]}"; do
  [ -d "$dir" ] || continue
  links=()
  for tool in "$dir"/*; do
    name=${tool##*/}
    case $name in
      espeak|espeak-ng|flite|flite_*|ffmpeg|ffprobe|ffplay|sox|soxi|play|rec) continue ;;
    esac
    [ -z "${seen[$name]:-}" ] && [ -x "$tool" ] || continue  # the first on PATH wins, as before
    seen[$name]=1 links+=("$tool")
  done
  [ ${#links[@]} -eq 0 ] || ln -s "${links[@]}" "$bare/"
done
PATH=$bare "$@"
