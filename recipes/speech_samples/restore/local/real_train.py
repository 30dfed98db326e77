"""The training pool of real speakers for the restoration recipe: every utterance of speechocean762,
LibriSpeech and the 16 kHz VCTK samples whose speaker is not held out (local/real_heldout.py), as a
manifest of clean recordings, plus a list of some of them to play as babble.

    python local/real_train.py SHARED_DATA HELDOUT_SPEAKERS OUT
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from speech_peft.data.manifest import Entry, write_manifest

SOURCES = ("speechocean762", "librispeech_speakers", "vctk_samples")


def main(shared: Path, heldout_list: Path, out: Path) -> None:
    held = {tuple(line.split("\t")) for line in heldout_list.read_text().splitlines() if line}
    entries = []
    for source in SOURCES:
        with open(shared / source / "manifest.tsv", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if (source, row["speaker"]) in held or int(row["sample_rate"]) < 16000 or float(row["seconds"]) < 2.0:
                    continue
                entries.append(Entry(f"{source}/{row['id']}", str((shared / source / row["path"]).resolve()),
                                     float(row["seconds"]), int(row["sample_rate"]),
                                     text=row.get("text", "").strip() or None, speaker=f"{source}/{row['speaker']}"))
    out.mkdir(parents=True, exist_ok=True)
    speakers = sorted({e.speaker for e in entries})
    val_speakers = set(speakers[1::20])  # a few speakers for the validation loss, never for training
    write_manifest([e for e in entries if e.speaker not in val_speakers], out / "train.jsonl")
    write_manifest([e for e in entries if e.speaker in val_speakers], out / "val.jsonl")
    babble = sorted({e.speaker: e.audio for e in entries if e.speaker not in val_speakers}.values())[::4]
    (out / "babble.txt").write_text("".join(f"{b}\n" for b in babble))
    print(f"{len(entries)} utterances of {len(speakers)} speakers ({len(val_speakers)} for validation); "
          f"{len(babble)} babble talkers")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
