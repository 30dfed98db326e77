"""The 12 real read sentences (data/speech_samples/asr) as a manifest with their transcripts.

    python recipes/fsdd_long/asr/local/read_real.py OUT.jsonl
"""
from __future__ import annotations

import sys
from pathlib import Path

from speech_peft.data.builders import from_folder
from speech_peft.data.manifest import write_manifest
from speech_peft.metrics.wer import read_references

SAMPLES = Path(__file__).resolve().parents[4] / "data" / "speech_samples" / "asr"

if __name__ == "__main__":
    refs = read_references(str(SAMPLES / "transcripts.tsv"))
    entries = from_folder(SAMPLES)
    missing = [e.id for e in entries if e.id not in refs]
    if missing:
        raise SystemExit(f"{SAMPLES}/transcripts.tsv: no transcript for {missing}")
    for entry in entries:
        entry.text = refs[entry.id]
    print(write_manifest(entries, sys.argv[1], relative=False))
