"""The adapter-family measurements of a classification recipe, on its finished runs (``reports/adapter_family.py``
writes them into its RESULTS.md):

- per method: accuracy over folds, trainable %, bytes of the saved adapter, encoder time with the adapter
  relative to the bare encoder (alternated, on test clips);
- low-bit storage: each fold's exported adapter saved in 8, 4, 2 and 1 bits, reloaded and tested;
- merging: adapters trained on the same fold from different seeds, each alone, their ensemble (mean
  probabilities) and every merge (heads averaged), on that fold's test speaker.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..adapters import save_adapter, set_active_adapters
from ..adapters.coda import conditional_adapters
from ..adapters.io import WEIGHTS
from ..adapters.merging import METHODS as MERGES
from ..adapters.merging import merge_adapters
from ..adapters.site import sites
from ..data.dataset import AudioDataset, collate
from ..data.manifest import read_manifest
from ..exports import read_export_info
from ..models.classifier import EXPORT_KIND, MODEL_ARGUMENTS, AudioClassifierModel
from ..tensor_files import load_tensors
from .classification import classification_rows


def classifier_with(export: Path, adapter: Path | None = None, head: dict | None = None) -> AudioClassifierModel:
    """A fold's exported classifier, optionally with another saved adapter and head in its place."""
    config = read_export_info(export, EXPORT_KIND)["config"]
    module = AudioClassifierModel(**{k: v for k, v in config.items() if k in MODEL_ARGUMENTS},
                                  adapter_dir=str(adapter or export / "adapter"))
    module.head.load_state_dict(head or load_tensors(export / "head.safetensors"), strict=True)
    return module.eval()


@torch.inference_mode()
def probabilities(classifier: AudioClassifierModel, manifest: Path) -> tuple[torch.Tensor, torch.Tensor]:
    entries = read_manifest(manifest)
    loader = DataLoader(AudioDataset(entries, 16000), batch_size=16, collate_fn=collate)
    probs, targets = [], []
    for batch in loader:
        probs.append(classifier(batch.waveforms, batch.lengths).softmax(-1))
        targets.append(classifier._targets(batch))
    return torch.cat(probs), torch.cat(targets)


def accuracy(probs: torch.Tensor, targets: torch.Tensor) -> float:
    return (probs.argmax(-1) == targets).float().mean().item()


@torch.inference_mode()
def relative_encoder_time(classifier: AudioClassifierModel, manifest: Path, clips: int = 32, repeats: int = 3) -> float:
    """Encoder time with the adapter over the bare encoder's, alternated, medians."""
    entries = read_manifest(manifest)[:clips]
    batch = collate([AudioDataset(entries, 16000)[i] for i in range(len(entries))])
    encoder = classifier.encoder

    def adapted(on: bool) -> None:
        set_active_adapters(encoder, ["default"] if on else [])

    ratio = alternated_ratio(lambda: encoder(batch.waveforms, batch.lengths), adapted, repeats)
    set_active_adapters(encoder, ["default"])
    return ratio


@torch.inference_mode()
def coda_speedup(classifier: AudioClassifierModel, manifest: Path, clips: int = 32, repeats: int = 3) -> float | None:
    """How much faster the encoder runs with its CoDA adapter's routing than with every token through every
    block (same weights); None for other adapters."""
    routed = conditional_adapters(classifier.encoder)
    if not routed:
        return None
    entries = read_manifest(manifest)[:clips]
    batch = collate([AudioDataset(entries, 16000)[i] for i in range(len(entries))])
    reduction = routed[0].reduction

    def routing(on: bool) -> None:
        for module in routed:
            module.reduction = reduction if on else 1

    ratio = alternated_ratio(lambda: classifier.encoder(batch.waveforms, batch.lengths), routing, repeats)
    routing(True)
    return 1.0 / ratio


def coda_curve(exp: Path, method: str, reductions: tuple[int, ...] = (1, 2, 4, 8)) -> dict | None:
    """A trained CoDA adapter run with 1 token in ``n`` through each block for each ``n`` (1: the dense path):
    accuracy over the folds' test speakers and encoder time against the dense path on 32 test clips."""
    runs = sorted(r for r in (exp / method).glob("fold_*") if (r / "export" / "export.json").is_file())
    if not runs:
        return None
    accuracies: dict[int, list[float]] = {n: [] for n in reductions}
    times: dict[int, list[float]] = {n: [] for n in reductions}
    for run in runs:
        manifest = exp / "manifests" / run.name / "test.jsonl"
        classifier = classifier_with(run / "export")
        routed = conditional_adapters(classifier.encoder)
        for n in reductions:
            for module in routed:
                module.reduction = n
            accuracies[n].append(accuracy(*probabilities(classifier, manifest)))
            if run == runs[0]:
                times[n].append(1.0 / coda_speedup(classifier, manifest) if n > 1 else 1.0)
    return {"method": method, "folds": len(runs),
            "rows": [{"reduction": n, "accuracy": statistics.mean(accuracies[n]), "time_vs_dense": times[n][0]}
                     for n in reductions]}


def alternated_ratio(run, switch, repeats: int = 3) -> float:
    """Median time of ``run`` with ``switch(True)`` over its median with ``switch(False)``, alternated, after
    one warm-up of each."""
    times = {True: [], False: []}
    for state in (True, False, True, False) + (True, False) * repeats:
        switch(state)
        start = time.perf_counter()
        run()
        times[state].append(time.perf_counter() - start)
    return statistics.median(times[True][2:]) / statistics.median(times[False][2:])


def measure(exp: str | Path, methods: list[str], storage_method: str = "parallel", bits: tuple = (8, 4, 2, 1),
            merge_fold: str | None = None, merge_runs: list[str] = ()) -> dict:
    """Measure the three tables; ``merge_runs``: run folders (same fold, other seeds) merged with the
    ``storage_method`` run of ``merge_fold``."""
    exp = Path(exp)
    rows = classification_rows(exp)
    result = {"methods": [], "storage": [], "merging": None}
    for row in (r for r in rows if r["method"] in methods):
        fold = sorted(row["per_fold"])[0]
        run = exp / row["method"] / f"fold_{fold}"
        classifier = classifier_with(run / "export")
        adapter = run / "export" / "adapter" / WEIGHTS
        test = exp / "manifests" / f"fold_{fold}" / "test.jsonl"
        result["methods"].append({**{k: row[k] for k in ("method", "folds", "acc_mean", "acc_std", "trainable",
                                                          "total", "per_fold", "epoch_s")},
                                  "adapter_bytes": adapter.stat().st_size if adapter.is_file() else 0,
                                  "relative_time": relative_encoder_time(classifier, test),
                                  "speedup_vs_dense": coda_speedup(classifier, test)})
    for run in sorted((exp / storage_method).glob("fold_*")) if bits else []:
        if not (run / "export" / "export.json").is_file():
            continue
        manifest = exp / "manifests" / run.name / "test.jsonl"
        classifier = classifier_with(run / "export")
        entry = {"fold": run.name.removeprefix("fold_"), "float32": accuracy(*probabilities(classifier, manifest)),
                 "bytes": {"32": (run / "export" / "adapter" / WEIGHTS).stat().st_size}}
        with tempfile.TemporaryDirectory() as tmp:
            for b in bits:
                saved = save_adapter(classifier.encoder, Path(tmp) / f"bits{b}", bits=b)
                entry[f"{b}-bit"] = accuracy(*probabilities(classifier_with(run / "export", saved), manifest))
                entry["bytes"][str(b)] = (saved / WEIGHTS).stat().st_size
        result["storage"].append(entry)
    if merge_fold and merge_runs:
        result["merging"] = merge_table(exp, storage_method, merge_fold, [Path(r) for r in merge_runs])
    coda = next((m for m in methods if m.startswith("coda") and (exp / m).is_dir()), None)
    result["coda"] = coda_curve(exp, coda) if coda else None
    return result


@torch.inference_mode()
def unit_activities(classifier: AudioClassifierModel, manifest: Path, clips: int = 32) -> dict[str, torch.Tensor]:
    """Per adapter place, its bottleneck units' outputs (tokens, units) on the first ``clips`` clips."""
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for path, site in sites(classifier.encoder).items():
        inner = getattr(site.adapters["default"], "inner", None) if "default" in site.adapters else None
        if inner is not None and hasattr(inner, "act"):
            hooks.append(inner.act.register_forward_hook(
                lambda module, args, out, path=path: captured.setdefault(path, []).append(out.reshape(-1, out.shape[-1]))))
    entries = read_manifest(manifest)[:clips]
    try:
        for i in range(0, len(entries), 16):
            batch = collate([AudioDataset(entries[i:i + 16], 16000)[k] for k in range(len(entries[i:i + 16]))])
            classifier(batch.waveforms, batch.lengths)
    finally:
        for hook in hooks:
            hook.remove()
    return {path: torch.cat(parts) for path, parts in captured.items()}


def merge_table(exp: Path, method: str, fold: str, others: list[Path]) -> dict:
    runs = [exp / method / f"fold_{fold}"] + others
    exports = [r / "export" for r in runs]
    manifest = exp / "manifests" / f"fold_{fold}" / "test.jsonl"
    heads = [load_tensors(e / "head.safetensors") for e in exports]
    head = {k: torch.stack([h[k] for h in heads]).mean(0) for k in heads[0]}
    classifiers = [classifier_with(e) for e in exports]
    singles = [probabilities(c, manifest) for c in classifiers]
    # MerA aligns units by what they compute on training clips of the fold (never its test speaker).
    train = exp / "manifests" / f"fold_{fold}" / "train.jsonl"
    activities = [unit_activities(c, train) for c in classifiers]
    targets = singles[0][1]
    table = {"fold": fold, "inputs": [accuracy(p, t) for p, t in singles],
             "ensemble": accuracy(torch.stack([p for p, _ in singles]).mean(0), targets)}
    with tempfile.TemporaryDirectory() as tmp:
        for merge in MERGES:
            options = {"weights": [1.0 / len(exports)] * len(exports)} if merge == "task_arithmetic" else {}
            options = {"activities": activities} if merge == "mera" else options
            merged = merge_adapters([e / "adapter" for e in exports], Path(tmp) / merge, merge, **options)
            table[merge] = accuracy(probabilities(classifier_with(exports[0], merged, head), manifest)[0], targets)
    return table
