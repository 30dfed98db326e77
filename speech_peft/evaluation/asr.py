"""Evaluation of the fsdd_long ASR recipe (the tables are ``reports/asr.py``): AR baselines, the CTC head and diffusion decoding per bucket.

Every system decodes one utterance at a time, so seconds per item compare (the AR rows include their
encoder on 30 s of padded input, as Whisper decodes; the diffusion rows their encoder on the clip).
Each trained diffusion model is scored under each decoding in ``DECODINGS``; with K > 1 candidates
every selection rule is applied to the same candidates, the oracle picks per utterance the candidate
with the fewest word errors (the ceiling of any rule), and the hit rate is how often a rule's choice
is as good as the oracle's. Results are stored per (bucket, job) beside the experiment, so an
interrupted evaluation resumes; the report and ``results.json`` are rebuilt from them.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.audio import load_audio
from ..data.manifest import read_manifest
from ..decoders import DecodeOptions, choose
from ..fileio import write_json
from ..jobs.transcribe import load_decoder
from ..metrics.wer import score, word_errors
from ..models.diffusion_asr import DiffusionASRModel

RULES = ("confidence", "mbr", "rover")
MASK_T4 = (1.0, 0.9, 0.85, 0.8)             # the paper's re-masking ratios
PROGRESSIVE_T4 = (1.0, 0.75, 0.5, 0.25)     # fraction still masked at the input of each step
DECODINGS: dict[str, dict] = {
    "random re-masking (paper)": {"remask": "random", "schedule": MASK_T4},
    "low-confidence re-masking": {"remask": "low_confidence", "schedule": MASK_T4},
    "progressive": {"remask": "progressive", "schedule": PROGRESSIVE_T4},
    "progressive, EOS last": {"remask": "progressive", "schedule": PROGRESSIVE_T4, "hold_eos": True},
    "progressive, EOS last, distinct neighbours": {"remask": "progressive", "schedule": PROGRESSIVE_T4,
                                                   "hold_eos": True, "distinct_neighbours": True},
    "Mask-CTC (T=2), unsure words": {"init": "ctc", "remask": "progressive", "schedule": (1.0, 0.5),
                                     "hold_eos": True, "distinct_neighbours": True},
    "Mask-CTC (T=2), unsure and unknown words": {"init": "ctc", "remask": "progressive", "schedule": (1.0, 0.5),
                                                 "hold_eos": True, "distinct_neighbours": True,
                                                 "mask_unknown_words": True},
}
BEST_MASK, MASK_CTC = "progressive, EOS last, distinct neighbours", "Mask-CTC (T=2), unsure and unknown words"
# (label, export under the experiment, the decodings it is scored with)
MODELS = [("design", "diffusion/stage2/export", list(DECODINGS)),
          ("decoder LoRA", "diffusion_lora/export", [BEST_MASK, MASK_CTC]),
          ("decoder LoRA, AR + LoRA encoder", "diffusion_lora_ar_encoder/export", [BEST_MASK, MASK_CTC]),
          ("paper", "ablation/paper/stage2/export", ["random re-masking (paper)", BEST_MASK]),
          ("paper + AR shift", "ablation/shift/stage2/export", ["random re-masking (paper)", BEST_MASK])]
WITH_CANDIDATES = (BEST_MASK, MASK_CTC)     # also decoded with K = 4 on the design model
SENTENCE_MODEL = "diffusion/stage2/export"  # under EXP/sentences: the design trained on read sentences
BUCKET_MANIFEST = re.compile(r"(?P<family>test(?:_[a-z]+)*)_(?P<seconds>\d+)s")
TRAINING_RUNS = [("ar_lora", "AR + LoRA"),
                 ("diffusion_lora", "diffusion: LoRA on the frozen Whisper decoder + CTC head"),
                 ("diffusion_lora_ar_encoder", "diffusion: the same on the encoder AR + LoRA adapted"),
                 ("diffusion/stage1", "diffusion (design) stage 1: cross-attention adapters + CTC head"),
                 ("diffusion/stage2", "diffusion (design) stage 2: decoder + adapters + CTC head"),
                 ("ablation/paper/stage1", "ablation: paper, stage 1"), ("ablation/paper/stage2", "ablation: paper, stage 2"),
                 ("ablation/shift/stage1", "ablation: paper + AR shift, stage 1"),
                 ("ablation/shift/stage2", "ablation: paper + AR shift, stage 2"),
                 ("sentences/diffusion/stage1", "read sentences: diffusion (design) stage 1"),
                 ("sentences/diffusion/stage2", "read sentences: diffusion (design) stage 2")]


def test_set_of(stem: str) -> tuple[str, str, int] | None:
    """A bucket manifest's stem -> (test set, family, bucket seconds): ``test_30s`` -> ("30s", "test", 30),
    ``test_real_5s`` -> ("real_5s", "test_real", 5); None for any other manifest."""
    found = BUCKET_MANIFEST.fullmatch(stem)
    return (stem[5:], found["family"], int(found["seconds"])) if found else None


def _row(system: str, test_set: str, refs: list[str], hyps: list[str], seconds: float, **extra) -> dict:
    """One results row; ``test_set`` is a length bucket of a test family ("30s", "real_30s": ``family`` and
    ``bucket_s``) or a name."""
    result = score(refs, hyps)
    parsed = test_set_of(f"test_{test_set}")
    family, bucket = (parsed[1], parsed[2]) if parsed else (None, None)
    return {"system": system, "test_set": test_set, "family": family, "bucket_s": bucket,
            "candidates": extra.pop("candidates", 1),
            "rule": extra.pop("rule", None), "items": len(refs), "wer": result.wer,
            "mean_utterance_wer": result.mean_utterance_wer,
            "seconds_per_item": seconds / max(len(refs), 1), **extra}


@torch.no_grad()
def evaluate_ar(model: str, manifest: Path, system: str, bucket: str, language: str | None = None) -> list[dict]:
    """``model``: a Whisper name or an AR export; greedy decoding, one utterance at a time, in ``language``
    (None: an export's own, English for English-only models)."""
    entries = read_manifest(manifest)
    decoder = load_decoder(model, language=language)
    hyps, seconds = [], 0.0
    for entry in tqdm(entries, desc=system, unit="utt"):
        wave = load_audio(entry.audio)[None]
        start = time.perf_counter()
        hyps += [h.text for h in decoder(wave, torch.tensor([wave.shape[-1]]), [None])]
        seconds += time.perf_counter() - start
    return [_row(system, bucket, [e.text or "" for e in entries], hyps, seconds, decoding="greedy")]


@torch.no_grad()
def evaluate_diffusion(export: Path, manifest: Path, bucket: str, training: str, decodings: list[str],
                       candidates: int = 1, seed: int = 0) -> list[dict]:
    """One trained model under each decoding: rows for ``diffusion`` (duration canvas) or
    ``diffusion_ctc`` (Mask-CTC canvas), one per rule when ``candidates`` > 1; with K = 1, a
    ``ctc_greedy`` row for the CTC head alone when the model has one."""
    model = DiffusionASRModel.load(export)
    entries = read_manifest(manifest)
    refs = [e.text or "" for e in entries]
    states, encoder_seconds = [], 0.0
    for entry in entries:
        wave = load_audio(entry.audio)[None]
        lengths = torch.tensor([wave.shape[-1]])
        start = time.perf_counter()
        out = model.encoder(wave, lengths)
        encoder_seconds += time.perf_counter() - start
        states.append((out.hidden, out.mask, lengths))
    rows = []
    if model.ctc is not None and candidates == 1:
        hyps, seconds = [], encoder_seconds
        for hidden, mask, _ in states:
            start = time.perf_counter()
            ids = model.ctc_hypotheses(hidden, mask)[0][0]
            hyps.append(model.tokenizer.decode(ids).strip())
            seconds += time.perf_counter() - start
        rows.append(_row("ctc_greedy", bucket, refs, hyps, seconds, training=training, decoding="CTC head alone"))
    for decoding in decodings:
        spec = DECODINGS[decoding]
        if spec.get("init") == "ctc" and model.ctc is None:
            continue
        options = DecodeOptions(candidates=candidates, seed=seed, **spec)
        chosen: dict[str, list[str]] = {rule: [] for rule in RULES}
        oracle, hits, seconds = [], {rule: 0 for rule in RULES}, encoder_seconds
        for (hidden, mask, lengths), ref in tqdm(list(zip(states, refs)), desc=f"{training}: {decoding} K={candidates}",
                                                 unit="utt"):
            start = time.perf_counter()
            decoded = model.decode_states(hidden, mask, lengths, options)[0]
            seconds += time.perf_counter() - start
            texts = model.candidate_texts(decoded)
            errors = [word_errors(ref, t) for t in texts]
            oracle.append(texts[errors.index(min(errors))])
            for rule in RULES if candidates > 1 else RULES[:1]:
                pick = " ".join(choose(decoded, [t.split() for t in texts], rule).words)
                chosen[rule].append(pick)
                hits[rule] += word_errors(ref, pick) <= min(errors)
        system = "diffusion_ctc" if spec.get("init") == "ctc" else "diffusion"
        oracle_wer = score(refs, oracle).wer
        for rule in RULES if candidates > 1 else RULES[:1]:
            rows.append(_row(system, bucket, refs, chosen[rule], seconds, candidates=candidates,
                             rule=rule if candidates > 1 else None, training=training, decoding=decoding,
                             oracle_wer=oracle_wer, hit_rate=hits[rule] / len(refs)))
    return rows


def evaluate_all(exp: str | Path, buckets: list[str] | None = None, candidates: int = 4,
                 model: str = "whisper-tiny.en", decodings: list[str] | None = None) -> Path:
    """Every system on every bucket's test manifest (default: every ``data/test_<n>s.jsonl`` and
    ``data/test_<family>_<n>s.jsonl``, such as ``test_real_5s``);
    finished (bucket, job) results are kept, so an interrupted evaluation resumes. Models not trained
    (an ablation skipped) are left out. ``model``: the Whisper the systems were trained on, whose
    zero-shot rows (English: the items are English) stand beside them. ``decodings``: only these of each
    model's decodings (default: all of ``MODELS``')."""
    exp = Path(exp)
    if not buckets:
        found = sorted(parsed for p in (exp / "data").glob("test_*s.jsonl") if (parsed := test_set_of(p.stem)))
        buckets = [test_set for test_set, _, _ in sorted(found, key=lambda f: (f[1], f[2]))]
    if not buckets:
        raise FileNotFoundError(f"{exp}/data: no test_<n>s.jsonl manifests (run the recipe's stage 0)")
    out = exp / "eval" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    for bucket in buckets:
        manifest = exp / "data" / f"test_{bucket}.jsonl"
        jobs = {"ar_zero_shot": lambda: evaluate_ar(model, manifest, "ar_zero_shot", bucket, "en")}
        if (exp / "ar_lora" / "export").is_dir():
            jobs["ar_lora"] = lambda: evaluate_ar(str(exp / "ar_lora" / "export"), manifest, "ar_lora", bucket)
        for label, folder, scored in MODELS:
            if (exp / folder).is_dir():
                scored = [d for d in scored if decodings is None or d in decodings]
                jobs[f"{label}/K=1"] = lambda f=folder, lab=label, d=scored: evaluate_diffusion(
                    exp / f, manifest, bucket, lab, d)
        if (exp / MODELS[0][1]).is_dir() and candidates > 1:
            jobs[f"design/K={candidates}"] = lambda: evaluate_diffusion(
                exp / MODELS[0][1], manifest, bucket, "design", list(WITH_CANDIDATES), candidates)
        _run(jobs, bucket, results, out)
    sentences = exp / "sentences"
    if (sentences / SENTENCE_MODEL).is_dir():
        for test_set, manifest in (("read_real", sentences / "read_real.jsonl"),
                                   ("tts_unseen_voices", sentences / "tts" / "val.jsonl")):
            jobs = {"ar_zero_shot": lambda: evaluate_ar(model, manifest, "ar_zero_shot", test_set, "en"),
                    "design/K=1": lambda: evaluate_diffusion(sentences / SENTENCE_MODEL, manifest, test_set, "design",
                                                             [BEST_MASK, *[d for d in DECODINGS if "Mask-CTC" in d]])}
            _run(jobs, f"sentences/{test_set}", results, out)
    return out


def _run(jobs: dict, prefix: str, results: dict, out: Path) -> None:
    for job, run in jobs.items():
        key = f"{prefix}/{job}"
        if key not in results:
            results[key] = run()
            write_json(out, results)
