"""The held-out real speakers' table of the restoration recipe, from each condition's per-system reports
(``conditions/C/quality/SYSTEM/per_file.csv``, written by ``local/real_heldout_eval.sh``): per condition
and system, corpus WER of each Whisper model (the utterances with text), DNSMOS overall and speaker
similarity to the clean file (Resemblyzer), means over files. Beside each system's WER, in brackets: the
95% interval of its change from the input's, by a paired bootstrap over speakers (``speakers.tsv``), so a
system beats the input when the whole interval lies below 0. ``LABELS``: ``name=label`` arguments name
the rows and fix their order; the input and spectral gating come first.

    python local/real_heldout_table.py HELDOUT_DIR [NAME=LABEL ...] > table.md
"""
from __future__ import annotations

import csv
import math
import statistics
import sys
from pathlib import Path

from speech_peft.metrics.text import normalize
from speech_peft.metrics.wer import read_references, wer_change_interval

CONDITIONS = ("clean", "noise", "babble", "room_noise", "far_phone")
FIRST = {"input": "the input (do nothing)", "spectral_gating": "spectral gating (noisereduce)"}
COLUMNS = (("wer", "WER % tiny.en"), ("wer_whisper-base", "WER % base"), ("dnsmos_ovrl", "DNSMOS OVRL"),
           ("speaker_sim", "speaker similarity"))


def read_rows(report: Path) -> list[dict[str, str]]:
    """One system's per-file rows and its corpus row (its outputs are the "degraded" condition)."""
    with open(report / "per_file.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["condition"] == "degraded"]


def read_system(rows: list[dict[str, str]]) -> dict[str, float]:
    """Corpus WERs and per-file means."""
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


def wer_change(rows: list[dict[str, str]], before: list[dict[str, str]], key: str, words: dict[str, int],
               speakers: dict[str, str]) -> tuple[float, float] | None:
    """The 95% interval of the WER change from ``before`` (the input's rows) to ``rows``, or None."""
    mine = {r["id"]: float(r[key]) for r in rows if r.get(key) and r["id"] in words}
    theirs = {r["id"]: float(r[key]) for r in before if r.get(key) and r["id"] in words}
    ids = sorted(set(mine) & set(theirs) & set(speakers))
    if not ids:
        return None
    return wer_change_interval([words[i] for i in ids], [round(theirs[i] * words[i]) for i in ids],
                               [round(mine[i] * words[i]) for i in ids], [speakers[i] for i in ids])


def _cell(key: str, value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.1f}" if key.startswith("wer") else f"{value:.3f}" if key == "speaker_sim" else f"{value:.2f}"


def main(heldout: Path, labels: dict[str, str]) -> None:
    order = {**FIRST, **labels}
    words = {i: len(normalize(text).split()) for i, text in read_references(str(heldout / "transcripts.tsv")).items()}
    speakers_file = heldout / "speakers.tsv"
    speakers = dict(line.split("\t") for line in speakers_file.read_text().splitlines() if line) \
        if speakers_file.is_file() else {}
    print("| condition | system | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for condition in CONDITIONS:
        reports = heldout / "conditions" / condition / "quality"
        present = {p.name for p in reports.iterdir() if (p / "per_file.csv").is_file()} if reports.is_dir() else set()
        before = read_rows(reports / "input") if "input" in present else []
        for name in [n for n in order if n in present] + sorted(present - set(order)):
            rows = read_rows(reports / name)
            values = read_system(rows)
            cells = []
            for key, _ in COLUMNS:
                cell = _cell(key, values[key])
                interval = wer_change(rows, before, key, words, speakers) if key.startswith("wer") and \
                    name != "input" and not math.isnan(values[key]) else None
                cells.append(f"{cell} [{interval[0]:+.1f}, {interval[1]:+.1f}]" if interval else cell)
            cells = " | ".join(cells)
            print(f"| {condition} | {order.get(name, name)} | {cells} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), dict(arg.split("=", 1) for arg in sys.argv[2:]))
