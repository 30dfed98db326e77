"""Evaluation of the fsdd_long ASR recipe: AR baselines and diffusion decoding per length bucket.

For diffusion decoding, candidates are decoded once per K and every selection rule is applied to
the same candidates, so rules compare on equal footing; the oracle picks, per utterance, the
candidate with the fewest word errors (the ceiling of any rule), and the hit rate is how often a
rule's choice is as good as the oracle's. Results are stored as JSON beside the experiment and the
table is rebuilt from them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.audio import load_audio
from ..data.manifest import read_manifest
from ..decoders import DecodeOptions, choose
from ..exports import read_export_info
from ..fileio import write_json, write_text
from ..jobs.transcribe import transcribe_entries
from ..metrics.wer import score, word_errors
from ..tasks.diffusion_asr import EXPORT_KIND as DIFFUSION_EXPORT
from ..tasks.diffusion_asr import DiffusionASR
from .training import training_table

RULES = ("confidence", "mbr", "rover")


@torch.no_grad()
def evaluate_diffusion(export: str | Path, manifest: str | Path, ks: tuple[int, ...] = (1, 4, 15),
                       schedule: tuple[float, ...] = (1.0, 0.9, 0.85, 0.8), remask: str = "random",
                       seed: int = 0) -> list[dict]:
    model = DiffusionASR.from_export(export)
    entries = read_manifest(manifest)
    refs = [e.text or "" for e in entries]
    rows = []
    for k in ks:
        options = DecodeOptions(candidates=k, schedule=tuple(schedule), remask=remask, seed=seed)
        chosen: dict[str, list[str]] = {rule: [] for rule in RULES}
        oracle, hits, seconds = [], {rule: 0 for rule in RULES}, 0.0
        for entry, ref in tqdm(list(zip(entries, refs)), desc=f"diffusion K={k}", unit="utt"):
            wave = load_audio(entry.audio)[None]
            start = time.perf_counter()
            candidates = model.decode_candidates(wave, torch.tensor([wave.shape[-1]]), options)[0]
            seconds += time.perf_counter() - start
            texts = model.candidate_texts(candidates)
            errors = [word_errors(ref, t) for t in texts]
            oracle.append(texts[errors.index(min(errors))])
            for rule in RULES:
                pick = " ".join(choose(candidates, [t.split() for t in texts], rule).words)
                chosen[rule].append(pick)
                hits[rule] += word_errors(ref, pick) <= min(errors)
        oracle_wer = score(refs, oracle).wer
        for rule in RULES:
            result = score(refs, chosen[rule])
            rows.append({"system": f"diffusion K={k} {rule}", "wer": result.wer,
                         "mean_utterance_wer": result.mean_utterance_wer, "oracle_wer": oracle_wer,
                         "hit_rate": hits[rule] / len(refs), "seconds_per_utt": seconds / len(refs)})
    return rows


def evaluate_ar(model: str, manifest: str | Path, name: str) -> list[dict]:
    """``model``: a Whisper name or an AR export (Whisper + its trained adapter)."""
    entries = read_manifest(manifest)
    start = time.perf_counter()
    hyps = transcribe_entries(entries, model, progress=False)
    seconds = (time.perf_counter() - start) / len(entries)
    result = score([e.text or "" for e in entries], [hyps.get(e.id, "") for e in entries])
    return [{"system": name, "wer": result.wer, "mean_utterance_wer": result.mean_utterance_wer,
             "seconds_per_utt": seconds}]


def evaluate_all(exp: str | Path, buckets: list[str] | None, ks: tuple[int, ...]) -> Path:
    """Every system on every bucket's test manifest (default: every ``data/test_<n>s.jsonl``);
    finished (system, bucket) results are kept, so an interrupted evaluation resumes."""
    exp = Path(exp)
    if not buckets:
        found = sorted((exp / "data").glob("test_*s.jsonl"), key=lambda p: int(p.stem[5:-1]))
        buckets = [p.stem[5:] for p in found]
    if not buckets:
        raise FileNotFoundError(f"{exp}/data: no test_<n>s.jsonl manifests (run the recipe's stage 0)")
    out = exp / "eval" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    for bucket in buckets:
        manifest = exp / "data" / f"test_{bucket}.jsonl"
        jobs = {"whisper-tiny.en AR zero-shot": lambda: evaluate_ar("whisper-tiny.en", manifest, "AR zero-shot"),
                "whisper-tiny.en AR + LoRA": lambda: evaluate_ar(str(exp / "ar_lora" / "export"), manifest, "AR + LoRA"),
                "diffusion": lambda: evaluate_diffusion(exp / "diffusion_stage2" / "export", manifest, ks)}
        for job, run in jobs.items():
            key = f"{bucket}/{job}"
            if key not in results:
                results[key] = run()
                write_json(out, results)
    return out


TRAINING_RUNS = [("ar_lora", "AR + LoRA"), ("diffusion_stage1", "diffusion stage 1 (cross-attention adapters)"),
                 ("diffusion_stage2", "diffusion stage 2 (decoder + adapters)")]


def write_asr_report(exp: str | Path, out: str | Path, command: str) -> Path:
    exp = Path(exp)
    results = json.loads((exp / "eval" / "results.json").read_text())
    buckets = sorted({key.split("/")[0] for key in results}, key=lambda b: float(b.rstrip("s")))
    systems = list(dict.fromkeys(row["system"] for rows in results.values() for row in rows))
    table = {(key.split("/")[0], row["system"]): row for key, rows in results.items() for row in rows}

    def cell(bucket: str, system: str, field: str, percent: bool = True) -> str:
        row = table.get((bucket, system))
        if row is None or field not in row:
            return "–"
        return f"{100 * row[field]:.1f}" if percent else f"{row[field]:.2f}"

    head = "| system | " + " | ".join(buckets) + " |\n|---|" + "---|" * len(buckets)
    wer = "\n".join(f"| {s} | " + " | ".join(f"{cell(b, s, 'wer')} ({cell(b, s, 'mean_utterance_wer')})"
                                              for b in buckets) + " |" for s in systems)
    diffusion = [s for s in systems if s.startswith("diffusion")]
    oracle = "\n".join(f"| {s} | " + " | ".join(f"{cell(b, s, 'oracle_wer')} / {cell(b, s, 'hit_rate')}"
                                                 for b in buckets) + " |" for s in diffusion)
    speed = "\n".join(f"| {s} | " + " | ".join(cell(b, s, "seconds_per_utt", percent=False) for b in buckets) + " |"
                      for s in systems)
    export = exp / "diffusion_stage2" / "export"
    meta = read_export_info(export, DIFFUSION_EXPORT)["config"] if export.is_dir() else {}
    rate = meta.get("tokens_per_second")
    canvas = (f"a canvas of 1 + ceil({rate:g} x seconds) positions (at most {meta['max_length']})" if rate
              else f"L = {meta.get('max_length', '?')} positions")
    text = f"""# Long spoken-digit sequences (fsdd_long): diffusion-decoded ASR against autoregressive Whisper

Test speakers are never heard in training. Each cell: corpus WER % (mean-utterance WER % in brackets),
after the project's normaliser. "diffusion K=k rule": k candidates decoded in parallel over T=4 steps
(mask ratios 1.0, 0.9, 0.85, 0.8) on {canvas}, one chosen by the rule.

{head}
{wer}

## Candidates: oracle WER % / hit rate % (how often the rule's pick is as good as the best candidate)

{head}
{oracle}

## Seconds per utterance (encoder + decoding, CPU)

AR rows decode the bucket in batches of 8, diffusion rows one utterance at a time, so they do not
compare; `benches/decode_speed.py` measures both on the same clip, alternating.

{head}
{speed}

## Training

{training_table(exp, TRAINING_RUNS, "run")}

Regenerate: `{command}` (its last stage alone rebuilds this file from `{exp}/eval/results.json`).
"""
    return write_text(out, text)
