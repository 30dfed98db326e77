"""Stage 5 of the multilingual recipe: WER per test set and language-ID accuracy of every system
(EXP/decode/*.jsonl against EXP/data/test.jsonl) -> RESULTS.md and results.json beside it.

    python results.py EXP RESULTS.md [--command "how it was made"]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from speech_peft.data.manifest import read_manifest
from speech_peft.fileio import write_json, write_text
from speech_peft.metrics.wer import score_by

SYSTEMS = [  # decode name, what it is
    ("frozen_detected", "frozen Whisper base, language detected"),
    ("frozen_given", "frozen Whisper base, language given"),
    ("shared_detected", "one shared LoRA, language detected"),
    ("shared_given", "one shared LoRA, language given"),
    ("plugins_detected", "per-language LoRA plug-ins, chosen by the language the shared LoRA detects"),
    ("plugins_given", "per-language LoRA plug-ins, language given"),
]


def language_accuracy(test: Path, decoded: Path) -> dict[str, float]:
    truth = {e.id: (e.task, e.language) for e in read_manifest(test)}
    hits: dict[str, list[bool]] = {}
    for line in decoded.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        task, language = truth[row["id"]]
        found = (row.get("segments") or [{}])[0].get("language")
        hits.setdefault(task, []).append(found == language)
        hits.setdefault("all", []).append(found == language)
    return {task: sum(v) / len(v) for task, v in hits.items()}


def training(exp: Path) -> str:
    """What each language's training set holds, read from its manifest."""
    parts = []
    for path in sorted((exp / "data").glob("*_train.jsonl")):
        items = read_manifest(path)
        parts.append(f"{path.name.split('_')[0]} {len(items)} utterances ({len({e.text for e in items})} "
                     f"sentences, {len({e.speaker for e in items})} voices)")
    return "; ".join(parts) or "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("exp", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--command", default="bash recipes/multilingual/asr/run.sh")
    args = parser.parse_args()
    test = args.exp / "data" / "test.jsonl"
    tasks = sorted({e.task for e in read_manifest(test)})
    results = {}
    for name, what in SYSTEMS:
        decoded = args.exp / "decode" / f"{name}.jsonl"
        if not decoded.is_file():
            continue
        wer = score_by(str(test), str(decoded), "task")
        detected = name.endswith("_detected")
        results[name] = {"what": what, "wer": {k: r.wer for k, r in wer.items()},
                         "words": {k: r.counts.words for k, r in wer.items()},
                         "language_id": language_accuracy(test, decoded) if detected else None}
    columns = [t for t in tasks] + ["all"]
    epochs = sorted({json.loads(f.read_text())["epochs"] for f in args.exp.glob("*/**/fit_result.json")})
    lines = ["# Per-language adapters on the frozen multilingual Whisper base", "",
             "Test sets: sentences never trained on, read by espeak-ng voice variants never trained on "
             f"(`<lang>_tts`), and the bundled real English recordings (`en_real`). Training: {training(args.exp)}, "
             f"{'/'.join(map(str, epochs)) or '?'} epochs, the checkpoint with the lowest validation loss "
             "(other voices reading other sentences). Adapters: LoRA (r 8) on the decoder's "
             "attention; each plug-in trained on its language only, the shared one on all four. WER % (plain "
             "normaliser); language-ID accuracy % where the language is detected. WER above 100% comes from "
             "insertions: output that loops or is in another language.", "",
             "| system | " + " | ".join(f"WER {c}" for c in columns) + " | language ID (tts / real) |",
             "|---|" + "---|" * (len(columns) + 1)]
    for name, row in results.items():
        cells = [f"{100 * row['wer'][c]:.1f}" for c in columns]
        lid = row["language_id"]
        lid_cell = "given" if lid is None else \
            f"{100 * _mean([v for k, v in lid.items() if k.endswith('_tts')]):.0f} / {100 * lid.get('en_real', 0):.0f}"
        lines.append(f"| {row['what']} | " + " | ".join(cells) + f" | {lid_cell} |")
    lid_rows = [(row["what"], row["language_id"]) for row in results.values() if row["language_id"]]
    if lid_rows:
        lines += ["", "Language-ID accuracy % per test set:", "",
                  "| system | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        lines += [f"| {what} | " + " | ".join(f"{100 * lid.get(c, 0):.0f}" for c in columns) + " |"
                  for what, lid in lid_rows]
    lines += ["", f"Regenerate: `{args.command}` (stage 5 alone rebuilds this table from `{args.exp}`)."]
    write_text(args.out, "\n".join(lines) + "\n")
    write_json(args.out.with_name("results.json"), results)
    print("\n".join(lines))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


if __name__ == "__main__":
    main()
