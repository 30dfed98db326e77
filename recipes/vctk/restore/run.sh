#!/usr/bin/env bash
# Speech restoration trained on VCTK clean speech (microphone 1); test speakers p232 and p257, as in
# VoiceBank-DEMAND. Stages in recipes/_shared/restore_corpus.sh.
#
#   bash recipes/vctk/restore/run.sh --data /corpora/VCTK-Corpus-0.92              # -> exp/vctk/restore/quality
#   bash recipes/vctk/restore/run.sh --data /corpora/VCTK-Corpus-0.92 --profile gpu
#
# TEST_ITEMS: how many test utterances are degraded and restored (100 on the CPU).
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
corpus=vctk data=${VCTK:-} exp=exp/vctk/restore
train_set=train dev_set=val test_set=test
download_help="VCTK not found (--data DIR or VCTK=DIR). Download VCTK-Corpus-0.92.zip from
https://datashare.ed.ac.uk/handle/10283/3443 and unzip it; pass --data VCTK-Corpus-0.92
(wav48_silence_trimmed/ and txt/ inside; VCTK 0.80's wav48/ works too)."
source recipes/_shared/restore_corpus.sh "$@"
