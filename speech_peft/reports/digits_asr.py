"""The digits_long ASR recipe's RESULTS.md and results.json: AR against diffusion decoding on speakers no
trained part heard, one table per test family (``test``: FSDD jackson and nicolas; ``test_real``: the
speaker-disjoint real speakers of speech_commands_digits and speechocean762)."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from ..evaluation.asr import BEST_MASK, MASK_CTC, TRAINING_RUNS
from ..fileio import write_json, write_text
from .asr import bucket_table, gap_to_ar_lora
from .training import training_table

FAMILIES = {"test_real": "real speakers of speech_commands_digits and speechocean762 (speaker-disjoint)",
            "test": "FSDD jackson and nicolas"}
TRAININGS = ["decoder LoRA, AR + LoRA encoder", "decoder LoRA", "design"]
DIFFUSION = [f"{system} [{training}] {decoding}" for training in TRAININGS
             for system, decoding in (("diffusion_ctc", MASK_CTC), ("diffusion", BEST_MASK))]
HEADLINE = ["AR zero-shot (greedy)", "AR + LoRA (greedy)", *DIFFUSION,
            *(f"CTC head alone (greedy) [{training}]" for training in TRAININGS[:-1]), "CTC head alone (greedy)"]


def _speakers(exp: Path) -> dict[str, int]:
    """Speakers with items per split, from the data stage's speakers.tsv."""
    table = exp / "data" / "speakers.tsv"
    if not table.exists():
        return {}
    with table.open() as rows:
        return dict(Counter(row["split"] for row in csv.DictReader(rows, delimiter="\t") if int(row["items"]) > 0))


def _seconds(row: dict) -> str:
    return f"{row['seconds_per_item']:.3f}"


def write_digits_report(exp: str | Path, out: str | Path, command: str) -> Path:
    """RESULTS.md and results.json beside it (every row) from ``EXP/eval/results.json``; the decoding-speed
    table is ``EXP/eval/decode_speed.md`` (``benches/decode_speed.py``'s output) when the recipe made it."""
    exp, out = Path(exp), Path(out)
    every = [row for rows in json.loads((exp / "eval" / "results.json").read_text()).values() for row in rows]
    write_json(out.with_name(out.stem.lower() + ".json"), {"rows": every})
    speakers = _speakers(exp)
    sections = []
    for family, who in FAMILIES.items():
        rows = [r for r in every if r.get("family") == family and r["candidates"] == 1]
        if not rows:
            continue
        items = {r["bucket_s"]: r.get("items") for r in rows}
        sizes = ", ".join(f"{b} s: {n}" for b, n in sorted(items.items()) if n)
        sections.append(f"## `{family}`: {who}, {speakers.get(family, '?')} speakers"
                        f"{f' (items per bucket: {sizes})' if sizes else ''}\n\n"
                        f"WER % (difference to AR + LoRA in points, ✓ within 2):\n\n"
                        f"{bucket_table(rows, HEADLINE, gap_to_ar_lora(rows))}\n\n"
                        f"Seconds per item (CPU, one utterance at a time, encoder included):\n\n"
                        f"{bucket_table(rows, HEADLINE[:2] + DIFFUSION, _seconds)}")
    sections = "\n\n".join(sections) + "\n" if sections else "(not run: the recipe's scoring stage)\n"
    speed = exp / "eval" / "decode_speed.md"
    speed_text = speed.read_text().strip() if speed.exists() else "(not run: the recipe's speed stage)"
    text = f"""# Speaker-diverse spoken digits (digits_long): diffusion-decoded ASR against autoregressive Whisper

Does keeping Whisper's pretrained decoder frozen (LoRA on it, its own cross-attention, a small CTC head)
carry AR + LoRA's generalisation over to diffusion decoding? Items of 5-30 s, one speaker each, built
from every real source (FSDD, speech_commands_digits, speechocean762 digit strings) plus synthetic voices
(training only); the split is by speaker, and no trained part hears a test speaker. "[decoder LoRA]": the
frozen Whisper decoder with LoRA; "[decoder LoRA, AR + LoRA encoder]": the same reading the encoder states
of AR + LoRA's adapter (its encoder LoRA folded into the frozen encoder; never trained here); "[design]":
Whisper's decoder fully trained (the fsdd_long recipe's design, stages 1 and 2); all train with speed
perturbation (0.9, 1.0, 1.1) and SpecAugment on the cached encoder states. "diffusion_ctc" decodes from the
CTC head's hypothesis (Mask-CTC), "diffusion" from an all-MASK canvas sized by duration; both K=1. Cells:
corpus WER % after the project's normaliser.

{sections}
## Decoding speed (`benches/decode_speed.py`, side by side on the FSDD 20 s and 30 s test items)

{speed_text}

## Training

{training_table(exp, [("ar_lora", "AR + LoRA")] + [r for r in TRAINING_RUNS if r[0].startswith("diffusion")],
                "run")}

Regenerate: `{command}` (its last stage alone rebuilds this file and {out.stem.lower()}.json from
`{exp}/eval/results.json`).
"""
    return write_text(out, text)
