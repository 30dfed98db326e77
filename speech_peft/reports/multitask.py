"""The multi-task ASR table: every system (baselines, oracle routing, each fusion) on every test set.

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
from ..errors import UserError
from ..fileio import atomic_write, folder_digest, write_json, write_text
from ..metrics.wer import score
from ..models.adapter_fusion import AdapterFusionASR
from ..models.whisper_ar import WhisperAR

TASKS = ("read", "far", "phone", "digits")
Transcribe = Callable[[Batch], list[str]]


def _systems(exp: Path, model_name: str) -> dict[str, tuple[Callable[[], tuple[Transcribe, object]], dict]]:
    """name -> (a loader giving the transcribe function and the module whose fusion weights to read, info)."""
    singles = {t: exp / "single" / t / "export" / "adapter" for t in TASKS}
    have_singles = all((d / "adapter.safetensors").is_file() for d in singles.values())
    systems: dict = {}

    def base():
        transcriber = WhisperTranscriber(load_whisper(model_name))
        return (lambda b: transcriber.transcribe(b.waveforms)), None

    systems["frozen base model"] = (base, {"kind": "baseline", "adapters_per_site": 0, "made_from": []})
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
    if name == "frozen base model":
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
        print(f"{name}: mean WER {row['mean_wer']:.2f}%", flush=True)
    return write_json(exp / "results.json", results)


def _plot_weights(row: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(row["weights"])
    layers = list(row["weights"][sets[0]])
    figure, axes = plt.subplots(1, len(layers), figsize=(2.2 * len(layers) + 1.5, 0.35 * len(sets) + 1.5),
                                sharey=True, squeeze=False)
    for ax, layer in zip(axes[0], layers):
        grid = [row["weights"][s][layer] for s in sets]
        ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(TASKS)), TASKS, rotation=45, fontsize=7)
        ax.set_title(layer.split("layers.")[-1].split(".")[0].join(("layer ", "")), fontsize=8)
    axes[0][0].set_yticks(range(len(sets)), sets, fontsize=7)
    figure.suptitle(f"{title}: mean weight per adapter (columns) by test set (rows), per encoder layer", fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


def write_multitask_report(exp: str | Path, out: str | Path, command: str) -> Path:
    exp, out = Path(exp), Path(out)
    results = json.loads((exp / "results.json").read_text())
    write_json(out.parent / "results.json", results)
    sets, systems = list(results["test_sets"]), results["systems"]
    reference = systems.get("full fine-tuning", {}).get("mean_wer")
    header = "| system | " + " | ".join(sets) + " | mean | vs full FT | trained % | adapters run per site |"
    lines = [header, "|" + "---|" * (len(sets) + 5)]
    for name, row in systems.items():
        relative = f"{100 * (row['mean_wer'] - reference) / reference:+.1f}%" if reference else "n/a"
        lines.append(f"| {name} | " + " | ".join(f"{row['wer'][s]:.1f}" for s in sets)
                     + f" | **{row['mean_wer']:.2f}** | {relative} | {100 * row['trained_fraction']:.2f} | "
                     f"{row['adapters_per_site']} |")
    plots = []
    for name, row in systems.items():
        if row.get("weights"):
            png = out.parent / f"fusion_weights_{name.split(': ')[-1].replace(' (hard top-1)', '_hard')}.png"
            _plot_weights(row, name, png)
            plots.append(f"![{name}]({png.name})")
    task_of = ", ".join(f"{s} ({t})" for s, t in results["test_sets"].items())
    text = f"""# Task-ID-free multi-task ASR on the frozen Whisper tiny.en (adapter fusion)

Corpus WER % (the project's normaliser, greedy decoding) on ten test sets of four tasks: {task_of}.
Test speakers, rooms and noises are never heard in training. "trained %" counts every parameter
trained to build the system (the single-task adapters included) against the base model's; "adapters run
per site" is the adapter deltas computed for an utterance at each adapted layer (one-hot routing runs only
the chosen adapter).

{chr(10).join(lines)}

{chr(10).join(plots)}

Regenerate: `{command}` (its last stage alone rebuilds this file and results.json from `{exp}`).
"""
    return write_text(out, text)


def best_fusion(exp: str | Path) -> Path:
    """The export of the task-ID-free fusion with the lowest mean WER in ``exp/results.json``."""
    systems = json.loads((Path(exp) / "results.json").read_text())["systems"]
    fused = {name: row for name, row in systems.items() if row["kind"] == "fusion"}
    if not fused:
        raise UserError(f"{exp}/results.json scores no fusion: run the recipe's stages 2 and 4")
    return Path(min(fused.values(), key=lambda row: row["mean_wer"])["export"])
