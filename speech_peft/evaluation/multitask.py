"""The multi-task ASR evaluation: every system (baselines, oracle routing, each fusion) on every test set.

``evaluate_multitask(exp)`` transcribes ``exp/tasks/test_*.jsonl`` with each system it finds and writes
``exp/results.json`` (a rerun keeps the rows of systems whose files have not changed); ``write_multitask_report`` turns it into RESULTS.md, with the fusion weights per
layer and test set drawn as PNGs beside it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..adapters import count_parameters, load_adapter, set_active_adapters
from ..adapters.fusion import average_adapters
from ..asr.whisper_ar import WhisperTranscriber
from ..data.dataset import AudioDataset, Batch, LengthBucketSampler, collate
from ..data.manifest import read_manifest
from ..encoders.whisper import load_whisper
from ..fileio import folder_digest, write_json
from ..metrics.wer import score
from ..models.adapter_fusion import AdapterFusionASR
from ..models.whisper_ar import WhisperAR

TASKS = ("read", "far", "phone", "digits")
FROZEN = "frozen base model"
Transcribe = Callable[[Batch], list[str]]


def _systems(exp: Path, model_name: str) -> dict[str, tuple[Callable[[], tuple[Transcribe, object]], dict]]:
    """name -> (a loader giving the transcribe function and the module whose fusion weights to read, info)."""
    singles = {t: exp / "single" / t / "export" / "adapter" for t in TASKS}
    have_singles = all((d / "adapter.safetensors").is_file() for d in singles.values())
    systems: dict = {}

    def base():
        transcriber = WhisperTranscriber(load_whisper(model_name))
        return (lambda b: transcriber.transcribe(b.waveforms)), None

    systems[FROZEN] = (base, {"kind": "baseline", "adapters_per_site": 0, "made_from": []})
    for name, folder in (("full fine-tuning", "full"), ("one multi-task adapter", "multitask_adapter")):
        export = exp / "baselines" / folder / "export"
        if (export / "export.json").is_file():
            def ar(export=export):
                module = WhisperAR.load(export)
                return (lambda b: module.transcribe(b.waveforms)), None
            systems[name] = (ar, {"kind": "baseline", "adapters_per_site": 0 if folder == "full" else 1,
                                  "export": str(export), "made_from": [str(export)]})
    if have_singles:
        adapters = {t: str(d) for t, d in singles.items()}

        def weight_average():
            bundle = load_whisper(model_name)
            model = copy.deepcopy(bundle.model)
            for task, directory in adapters.items():
                load_adapter(model, directory, name=task)
            average_adapters(model, list(TASKS), "average")
            set_active_adapters(model, ["average"])
            transcriber = WhisperTranscriber(dataclasses.replace(bundle, model=model))
            return (lambda b: transcriber.transcribe(b.waveforms)), None

        made_from = [str(d) for d in singles.values()]
        systems["weight-space average of the adapters"] = (weight_average, {"kind": "baseline", "adapters_per_site": 1,
                                                                            "made_from": made_from})
        for kind, label in (("average", "output average of the adapters"), ("oracle", "oracle task-ID routing")):
            def untrained(kind=kind):
                module = AdapterFusionASR(adapters, model_name, {"kind": kind}).eval()
                return (lambda b: module.transcribe(b.waveforms, b.lengths, b.tasks)), module
            systems[label] = (untrained, {"kind": "baseline" if kind == "average" else "oracle",
                                          "adapters_per_site": len(TASKS) if kind == "average" else 1,
                                          "made_from": made_from})
    for export in sorted((exp / "fusion").glob("*/export")) if (exp / "fusion").is_dir() else []:
        if not (export / "export.json").is_file():
            continue
        kind = json.loads((export / "export.json").read_text())["config"]["fusion"]["kind"]
        # utterance-level routers also run hard: top-1 at inference, one adapter per utterance
        for hard in (False, True) if kind in ("router", "task") else (False,):
            def fused(export=export, hard=hard):
                module = AdapterFusionASR.load(export, hard=hard)
                return (lambda b: module.transcribe(b.waveforms, b.lengths)), module
            label = f"fusion: {export.parent.name}" + (" (hard top-1)" if hard else "")
            systems[label] = (fused, {"kind": "fusion", "adapters_per_site": 1 if hard else len(TASKS),
                                      "export": str(export), "made_from": [str(export)]})
    return systems


def _identity(folders: list[str], test_sets: dict) -> str:
    """A hash of the files a system is made from and of the test sets: a rerun rescores only what changed."""
    return folder_digest(folders, json.dumps({k: [e.id for e in v] for k, v in test_sets.items()}).encode())


def _trained_params(run: Path) -> int:
    result = run / "fit_result.json"
    return json.loads(result.read_text()).get("trainable_params", 0) if result.is_file() else 0


def _trained_fraction(name: str, info: dict, exp: Path, total: int) -> float:
    """Parameters trained to build the system (every stage), as a fraction of the base model's ``total``."""
    singles = sum(_trained_params(exp / "single" / t) for t in TASKS)
    if name == FROZEN:
        return 0.0
    if name == "full fine-tuning":
        return 1.0
    if name == "one multi-task adapter":
        return _trained_params(exp / "baselines" / "multitask_adapter") / total
    if info["kind"] == "fusion":
        return (singles + _trained_params(Path(info["export"]).parent)) / total
    return singles / total


def evaluate_multitask(exp: str | Path, model_name: str = "whisper-tiny.en", batch_size: int = 8) -> Path:
    exp = Path(exp)
    found = {p.stem[len("test_"):]: read_manifest(p) for p in sorted((exp / "tasks").glob("test_*.jsonl"))}
    if not found:
        raise FileNotFoundError(f"{exp}/tasks has no test_*.jsonl: run the recipe's stage 0")
    order = sorted(found, key=lambda name: (TASKS.index(found[name][0].task) if found[name][0].task in TASKS
                                            else len(TASKS), name))
    test_sets = {name: found[name] for name in order}
    results: dict = {"test_sets": {name: entries[0].task for name, entries in test_sets.items()}, "systems": {}}
    previous = json.loads((exp / "results.json").read_text()) if (exp / "results.json").is_file() else {}
    total = count_parameters(load_whisper(model_name).model)[1]
    for name, (load, info) in _systems(exp, model_name).items():
        identity = _identity(info["made_from"], test_sets)
        earlier = previous.get("systems", {}).get(name, {})
        if earlier.get("identity") == identity:  # same files, same test sets: scored already
            results["systems"][name] = earlier
            print(f"{name}: mean WER {earlier['mean_wer']:.2f}% (unchanged, kept)", flush=True)
            continue
        transcribe, module = load()
        row: dict = {**info, "identity": identity, "wer": {}, "weights": {}}
        for set_name, entries in test_sets.items():
            data = AudioDataset(entries, 16000, require_text=True)
            sampler = LengthBucketSampler([e.duration for e in entries], batch_size, shuffle=False)
            refs, hyps, weights = [], [], []
            with torch.inference_mode():
                for batch in tqdm(DataLoader(data, batch_sampler=sampler, collate_fn=collate),
                                  desc=f"{name} / {set_name}", unit="batch", leave=False):
                    hyps += transcribe(batch)
                    refs += batch.texts
                    if module is not None and module.fusion_config.kind in ("router", "task", "attention"):
                        weights.append({k: v.float().mean(0) for k, v in module.routing_weights().items()})
            row["wer"][set_name] = round(100 * score(refs, hyps).wer, 2)
            if weights:
                row["weights"][set_name] = {k: torch.stack([w[k] for w in weights]).mean(0).tolist() for k in weights[0]}
        row["mean_wer"] = round(sum(row["wer"].values()) / len(row["wer"]), 2)
        row["trained_fraction"] = _trained_fraction(name, info, exp, total)
        results["systems"][name] = row
        write_json(exp / "results.json", results)  # each system as it is scored: a killed run keeps the others
        print(f"{name}: mean WER {row['mean_wer']:.2f}%", flush=True)
    return write_json(exp / "results.json", results)
