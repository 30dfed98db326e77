"""The held-out real speakers' table of the restoration recipe, from each condition's per-system reports
(``conditions/C/quality/SYSTEM/per_file.csv``, written by ``local/real_heldout_eval.sh``): per condition
and system, corpus WER of each Whisper model (the utterances with text), DNSMOS overall and speaker
similarity to the clean file (Resemblyzer), means over files. ``LABELS``: ``name=label`` arguments name
the rows and fix their order; the input and spectral gating come first.

    python local/real_heldout_table.py HELDOUT_DIR [NAME=LABEL ...] > table.md
"""
from __future__ import annotations

import csv
import math
import statistics
import sys
from pathlib import Path

CONDITIONS = ("clean", "noise", "babble", "room_noise", "far_phone")
FIRST = {"input": "the input (do nothing)", "spectral_gating": "spectral gating (noisereduce)"}
COLUMNS = (("wer", "WER % tiny.en"), ("wer_whisper-base", "WER % base"), ("dnsmos_ovrl", "DNSMOS OVRL"),
           ("speaker_sim", "speaker similarity"))


def read_system(report: Path) -> dict[str, float]:
    """Corpus WERs and per-file means of one system's report (its rows are the "degraded" condition)."""
    with open(report / "per_file.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["condition"] == "degraded"]
    corpus = next((r for r in rows if r["id"] == "<corpus>"), {})
    files = [r for r in rows if r["id"] != "<corpus>"]
    values = {}
    for key, _ in COLUMNS:
        if key.startswith("wer"):
            values[key] = 100 * float(corpus[key]) if corpus.get(key) else math.nan
        else:
            present = [float(r[key]) for r in files if r.get(key)]
            values[key] = statistics.mean(present) if present else math.nan
    return values


def _cell(key: str, value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.1f}" if key.startswith("wer") else f"{value:.3f}" if key == "speaker_sim" else f"{value:.2f}"


def main(heldout: Path, labels: dict[str, str]) -> None:
    order = {**FIRST, **labels}
    print("| condition | system | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for condition in CONDITIONS:
        reports = heldout / "conditions" / condition / "quality"
        present = {p.name for p in reports.iterdir() if (p / "per_file.csv").is_file()} if reports.is_dir() else set()
        for name in [n for n in order if n in present] + sorted(present - set(order)):
            values = read_system(reports / name)
            cells = " | ".join(_cell(key, values[key]) for key, _ in COLUMNS)
            print(f"| {condition} | {order.get(name, name)} | {cells} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), dict(arg.split("=", 1) for arg in sys.argv[2:]))
