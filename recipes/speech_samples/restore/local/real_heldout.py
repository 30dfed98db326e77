"""Held-out real speakers for the restoration recipe: a fixed, speaker-disjoint share of the real-speaker
folders of ../shared/data that no stage trains on (every fifth speaker in sorted order).

    python local/real_heldout.py SHARED_DATA OUT [--per-source 24] [--per-speaker 6]

A scored speaker whose source has transcripts gives up to ``--per-speaker`` utterances, so a WER cell
holds hundreds of words and one word moves it by about 0.1 point instead of 0.7; one without gives one
(DNSMOS and speaker similarity need no more).

Writes OUT/clean/<id>.wav (16 kHz), OUT/transcripts.tsv (id<TAB>text, where the source has text),
OUT/speakers.tsv (id<TAB>source/speaker: the table resamples speakers for its intervals), OUT/babble/
(utterances of other held-out speakers, the babble talkers, never the ones scored) and
OUT/heldout_speakers.txt (source<TAB>speaker: what a training stage must leave out).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from speech_peft.data.audio import load_audio, save_audio

SOURCES = ("speechocean762", "librispeech_speakers")  # 16 kHz, hundreds of speakers each


def heldout(speakers: list[str]) -> list[str]:
    return sorted(speakers)[::5]


def write_lists(out: Path, transcripts: list[str], speakers: list[str]) -> None:
    """OUT/transcripts.tsv and OUT/speakers.tsv of an evaluation folder (``id<TAB>...`` lines), and a summary."""
    (out / "transcripts.tsv").write_text("".join(f"{t}\n" for t in transcripts))
    (out / "speakers.tsv").write_text("".join(f"{s}\n" for s in speakers))
    print(f"{len(speakers)} scored, {len(list((out / 'babble').glob('*.wav')))} babble talkers, "
          f"{len(transcripts)} with transcripts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-source", type=int, default=24, help="scored speakers per source")
    parser.add_argument("--per-speaker", type=int, default=6,
                        help="utterances of each scored speaker, where the source has transcripts")
    args = parser.parse_args()
    (args.out / "clean").mkdir(parents=True, exist_ok=True)
    (args.out / "babble").mkdir(parents=True, exist_ok=True)
    transcripts, kept, speaker_of = [], [], []
    for source in SOURCES:
        with open(args.shared / source / "manifest.tsv", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        by_speaker: dict[str, list[dict]] = {}
        for row in rows:
            if 2.0 <= float(row["seconds"]) <= 12.0:
                by_speaker.setdefault(row["speaker"], []).append(row)
        speakers = heldout(list(by_speaker))
        kept += [f"{source}\t{s}" for s in speakers]
        for n, speaker in enumerate(speakers):
            utterances = sorted(by_speaker[speaker], key=lambda r: r["id"])
            scored = n < args.per_source
            has_text = bool(utterances[0]["text"].strip())
            folder = args.out / ("clean" if scored else "babble")
            for row in utterances[:args.per_speaker if scored and has_text else 1]:
                save_audio(folder / f"{row['id']}.wav", load_audio(args.shared / source / row["path"], 16000), 16000)
                if scored:
                    speaker_of.append(f"{row['id']}\t{source}/{speaker}")
                if scored and row["text"].strip():
                    transcripts.append(f"{row['id']}\t{row['text'].strip().lower()}")
    (args.out / "heldout_speakers.txt").write_text("".join(f"{k}\n" for k in kept))
    write_lists(args.out, transcripts, speaker_of)


if __name__ == "__main__":
    main()
