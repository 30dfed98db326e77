"""The validation speakers of the restoration recipe's real-speaker pool as an evaluation folder, laid out
as local/real_heldout.py lays out the held-out speakers: what an inference setting (the attenuation
limit) is chosen on, so the held-out speakers stay unseen by every choice.

    python local/real_dev.py POOL OUT [--babble 15]

POOL: local/real_train.py's output (val.jsonl, babble.txt). Writes OUT/clean/<id>.wav (16 kHz),
OUT/transcripts.tsv, OUT/speakers.tsv and OUT/babble/ (training-pool talkers, never a scored one).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from real_heldout import write_lists  # this folder: the held-out set's layout

from speech_peft.data.audio import load_audio, save_audio
from speech_peft.data.manifest import read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pool", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--babble", type=int, default=15, help="babble talkers")
    args = parser.parse_args()
    (args.out / "clean").mkdir(parents=True, exist_ok=True)
    (args.out / "babble").mkdir(parents=True, exist_ok=True)
    transcripts, speakers = [], []
    for entry in read_manifest(args.pool / "val.jsonl"):
        name = entry.id.split("/")[-1]
        save_audio(args.out / "clean" / f"{name}.wav", load_audio(entry.audio, 16000), 16000)
        speakers.append(f"{name}\t{entry.speaker}")
        if entry.text:
            transcripts.append(f"{name}\t{entry.text.lower()}")
    talkers = [line for line in (args.pool / "babble.txt").read_text().splitlines() if line]
    for n, path in enumerate(talkers[::max(1, len(talkers) // args.babble)][:args.babble]):
        save_audio(args.out / "babble" / f"talker{n}.wav", load_audio(path, 16000), 16000)
    write_lists(args.out, transcripts, speakers)


if __name__ == "__main__":
    main()
