"""The held-out real speakers' table of the restoration recipe (stage 9), from each condition's
``quality/per_file.csv``: per condition and system, corpus WER (Whisper tiny.en, the utterances with text),
DNSMOS overall and speaker similarity to the clean file (Resemblyzer), means over files.

    python local/real_heldout_table.py HELDOUT_DIR > table.md
"""
from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

CONDITIONS = ("clean", "noise", "babble", "room_noise", "far_phone")
SYSTEMS = (("degraded", "the input (do nothing)"), ("spectral_gating", "spectral gating"), ("restored", "the restorer"))


def main(heldout: Path) -> None:
    print("| condition | system | WER % | DNSMOS OVRL | speaker similarity |")
    print("|---|---|---|---|---|")
    for condition in CONDITIONS:
        path = heldout / "conditions" / condition / "quality" / "per_file.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        for system, label in SYSTEMS:
            mine = [r for r in rows if r["condition"] == system]
            corpus = next((float(r["wer"]) for r in mine if r["id"] == "<corpus>"), float("nan"))
            files = [r for r in mine if r["id"] != "<corpus>"]
            mean = lambda key: statistics.mean(float(r[key]) for r in files if r.get(key))  # noqa: E731
            print(f"| {condition} | {label} | {100 * corpus:.1f} | {mean('dnsmos_ovrl'):.2f} | {mean('speaker_sim'):.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
