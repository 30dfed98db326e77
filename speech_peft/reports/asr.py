"""The fsdd_long ASR recipe's RESULTS.md and results.json, from the rows ``evaluation/asr.py`` stored."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..evaluation.asr import BEST_MASK, MASK_CTC, RULES, TRAINING_RUNS  # noqa: F401  (the rows' labels)
from ..fileio import write_json, write_text
from .training import training_table


def _label(row: dict) -> str:
    if row["system"].startswith("ar_"):
        return {"ar_zero_shot": "AR zero-shot (greedy)", "ar_lora": "AR + LoRA (greedy)"}[row["system"]]
    if row["system"] == "ctc_greedy":  # the design's head unnamed, as the fsdd_long tables have always shown it
        return "CTC head alone (greedy)" + ("" if row.get("training", "design") == "design" else f" [{row['training']}]")
    label = f"{row['system']} [{row['training']}] {row['decoding']}"
    return label + (f", K={row['candidates']} {row['rule']}" if row["candidates"] > 1 else "")


def bucket_table(rows: list[dict], labels: list[str], fmt: Callable[[dict], str]) -> str:
    """One line per label (in the order given, once each) and a column per length bucket of ``rows``."""
    buckets = sorted({r["bucket_s"] for r in rows})
    cells = {(_label(r), r["bucket_s"]): r for r in rows}
    lines = ["| system | " + " | ".join(f"{b} s" for b in buckets) + " |\n|---|" + "---|" * len(buckets)]
    for label in dict.fromkeys(labels):
        if any((label, b) in cells for b in buckets):
            lines.append(f"| {label} | " + " | ".join(fmt(cells[(label, b)]) if (label, b) in cells else "–"
                                                    for b in buckets) + " |")
    return "\n".join(lines) if len(lines) > 1 else "(not run: no system of this kind was trained)"


def gap_to_ar_lora(rows: list[dict]) -> Callable[[dict], str]:
    """A cell's WER % and its difference to AR + LoRA's in the same bucket, ✓ within the 2-point target."""
    base = {r["bucket_s"]: r for r in rows if _label(r) == "AR + LoRA (greedy)"}

    def cell(row: dict) -> str:
        wer = f"{100 * row['wer']:.1f}"
        if row["bucket_s"] not in base:
            return wer
        points = 100 * (row["wer"] - base[row["bucket_s"]]["wer"])
        return f"{wer} ({points:+.1f}{' ✓' if points <= 2.0 else ''})"
    return cell


def _sentence_table(rows: list[dict]) -> str:
    if not rows:
        return "(not run: stage 5 of the recipe)"
    sets = list(dict.fromkeys(r["test_set"] for r in rows))
    cells = {(_label(r), r["test_set"]): r for r in rows}
    lines = ["| system | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for label in dict.fromkeys(_label(r) for r in rows):
        lines.append(f"| {label} | " + " | ".join(
            f"{100 * cells[(label, t)]['wer']:.1f} ({cells[(label, t)]['seconds_per_item']:.2f})"
            if (label, t) in cells else "–" for t in sets) + " |")
    return "\n".join(lines)


def write_asr_report(exp: str | Path, out: str | Path, command: str, model: str = "whisper-tiny.en") -> Path:
    """RESULTS.md and, beside it, results.json (every row) from the stored evaluation; a report named
    otherwise (RESULTS_base.md) keeps its rows in the matching results_base.json."""
    exp, out = Path(exp), Path(out)
    stored = json.loads((exp / "eval" / "results.json").read_text())
    every = [row for key in stored for row in stored[key]]
    rows_file = out.with_name(out.stem.lower() + ".json")
    write_json(rows_file, {"rows": every})
    rows = [r for r in every if r.get("bucket_s") is not None and r.get("family", "test") == "test"]

    def table(labels: list[str], fmt) -> str:
        return bucket_table(rows, labels, fmt)

    def wer(row: dict) -> str:
        return f"{100 * row['wer']:.1f}"

    gap = gap_to_ar_lora(rows)

    labels = [_label(r) for r in rows]
    design = [lab for lab, r in zip(labels, rows) if r.get("training") == "design" and r["candidates"] == 1]
    headline = [lab for lab in labels if lab.startswith(("AR", "CTC"))]
    headline += [f"diffusion [design] {BEST_MASK}", f"diffusion_ctc [design] {MASK_CTC}"]
    headline += [lab for lab in labels if ", K=" in lab and lab.endswith(" rover")]
    ablation = [lab for lab, r in zip(labels, rows) if r.get("decoding") in ("random re-masking (paper)", BEST_MASK)
                and r["candidates"] == 1 and r["system"] == "diffusion"]
    ablation.sort(key=lambda lab: ("paper]" not in lab, "shift]" not in lab, "design" in lab))
    multi = [lab for lab, r in zip(labels, rows) if r["candidates"] > 1]
    oracle = table(multi, lambda r: f"{wer(r)} / {100 * r['oracle_wer']:.1f} / {100 * r['hit_rate']:.0f}")
    speed = table(headline + design, lambda r: f"{r['seconds_per_item']:.3f}")
    sentences = _sentence_table([r for r in every if r.get("bucket_s") is None])
    text = f"""# Long spoken-digit sequences (fsdd_long): diffusion-decoded ASR against autoregressive Whisper{
        "" if model == "whisper-tiny.en" else f" ({model})"}

Test speakers (jackson, nicolas) are never heard in training; 20 test items per length bucket. Each
cell: corpus WER % after the project's normaliser; in the headline, the difference to AR + LoRA in
points, ✓ where the target (within 2 points) is met. Diffusion rows decode K=1 candidate unless stated;
"[design]" is this recipe's training (AR shift kept, antithetic t over U(0, 1) with 1/t weighting, gap
slots, a CTC head beside the decoder), "[paper]" the Whisfusion recipe (no shift; t ~ U(0, 1), then
U(0.7, 1); mean loss), on the same data (epochs: the Training table). "diffusion" starts from an
all-MASK canvas sized by duration; "diffusion_ctc" from the CTC head's hypothesis (Mask-CTC).

## Headline

{table(headline, gap)}

## Ablation: training (each decoded with the paper's random re-masking and with this recipe's decoding)

{table(ablation, wer)}

## Ablation: decoding (the design model, K=1)

{table(design, wer)}

## Candidates (K=4 in one batch): WER / oracle WER / hit rate %

{oracle}

## Seconds per item (CPU, 2 threads, one utterance at a time, encoder included)

AR runs its encoder on 30 s of padded input, as Whisper decodes; the diffusion and CTC rows run it on
the clip itself. These are measured system by system, possibly beside other work on the same cores;
`benches/decode_speed.py` compares decoding alone side by side, alternating (benches/README.md).

{speed}

## Beyond digits: read sentences

The same design trained on 80 sentences read by synthetic voices (espeak-ng and flite, 3 sentences
per voice), tested on the 12 real read sentences (other speakers, other sentences: open vocabulary)
and on 8 synthetic voices never heard (the training sentences). No target yet: it shows how far the
digit result carries. WER % (seconds per item).

{sentences}

## Training

{training_table(exp, TRAINING_RUNS, "run")}

Regenerate: `{command}` (its last stage alone rebuilds this file and {rows_file.name} from
`{exp}/eval/results.json`).
"""
    return write_text(out, text)
