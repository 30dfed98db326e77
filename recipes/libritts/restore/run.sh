#!/usr/bin/env bash
# Speech restoration trained on LibriTTS (or LibriTTS-R) clean speech; stages in recipes/_shared/restore_corpus.sh.
#
#   bash recipes/libritts/restore/run.sh --data /corpora/LibriTTS_R                # -> exp/libritts/restore/quality
#   bash recipes/libritts/restore/run.sh --data /corpora/LibriTTS_R --profile gpu
#
# TRAIN, DEV, TEST name the subsets (default train-clean-100, dev-clean, test-clean); TEST_ITEMS how many
# test utterances are degraded and restored (100 on the CPU).
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
corpus=libritts data=${LIBRITTS:-} exp=exp/libritts/restore
train_set=${TRAIN:-train-clean-100} dev_set=${DEV:-dev-clean} test_set=${TEST:-test-clean}
download_help="LibriTTS not found (--data DIR or LIBRITTS=DIR). Download from https://www.openslr.org/141 (LibriTTS-R)
or https://www.openslr.org/60 (LibriTTS):
  for part in $train_set $dev_set $test_set; do wget https://www.openslr.org/resources/141/\$part.tar.gz; tar xzf \$part.tar.gz; done
which unpacks to LibriTTS_R/<subset>/<speaker>/<chapter>/*.wav; pass --data LibriTTS_R."
source recipes/_shared/restore_corpus.sh "$@"
