"""The adapter-family tables of a classification recipe, measured on its finished runs and written into its
RESULTS.md between markers (the main table above them is left as it is):

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
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from ..adapters import save_adapter, set_active_adapters
from ..adapters.io import WEIGHTS
from ..adapters.merging import METHODS as MERGES
from ..adapters.merging import merge_adapters
from ..adapters.coda import conditional_adapters
from ..adapters.site import sites
from ..data.dataset import AudioDataset, collate
from ..data.manifest import read_manifest
from ..exports import read_export_info
from ..fileio import write_json, write_text
from ..models.classifier import EXPORT_KIND, MODEL_ARGUMENTS, AudioClassifierModel
from .classification import classification_table

# Each section of the family tables: its heading, what its method table's columns mean, its markers.
SECTIONS = {
    "sparse": ("Adapter family: sparse, split-and-merge, low-bit storage, merging",
               "\"trainable %\" counts every adapter weight (a sparse adapter trains only its kept 40%)"),
    "routed": ("Adapter family: multi-head, generated, routed, conditional and rank-parallel adapters",
               "\"trainable %\" counts what trains (a hypernetwork, a routed inventory, every rank's factors "
               "once); HD-PiSSA and LTE train on 2 processes with DDP, 16 clips each per step; CoDA's "
               "\"vs dense\" is the same trained adapter with every token through every block"),
}


def markers(section: str) -> tuple[str, str]:
    tag = "adapter family" if section == "sparse" else f"adapter family ({section})"
    return f"<!-- {tag}: begin -->", f"<!-- {tag}: end -->"


BEGIN, END = markers("sparse")


def classifier_with(export: Path, adapter: Path | None = None, head: dict | None = None) -> AudioClassifierModel:
    """A fold's exported classifier, optionally with another saved adapter and head in its place."""
    config = read_export_info(export, EXPORT_KIND)["config"]
    module = AudioClassifierModel(**{k: v for k, v in config.items() if k in MODEL_ARGUMENTS},
                                  adapter_dir=str(adapter or export / "adapter"))
    module.head.load_state_dict(head or load_file(export / "head.safetensors"), strict=True)
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
    _, rows = classification_table(exp)
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
    heads = [load_file(e / "head.safetensors") for e in exports]
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


def render(result: dict, section: str = "sparse") -> str:
    folds = sorted({f for r in result["methods"] for f in r.get("per_fold", {})})
    title, trainable_note = SECTIONS[section]
    begin, end = markers(section)
    speed = any(r.get("speedup_vs_dense") for r in result["methods"])
    lines = [begin, "", f"## {title}", "",
             "Measured together (same day, same settings); \"adapter on disk\" is the adapter file alone, "
             f"{trainable_note}; encoder time is with the adapter against the bare encoder, alternated, on 32 "
             "test clips.", "",
             "| method | accuracy % (mean ± std) | folds | trainable % | adapter on disk | encoder time vs bare | "
             + ("faster than dense | " if speed else "") + "s / epoch | " + " | ".join(folds) + " |",
             "|" + "---|" * (7 + speed + len(folds))]
    for r in sorted(result["methods"], key=lambda r: -r["acc_mean"]):
        per = " | ".join(f"{100 * r['per_fold'][f]:.1f}" if f in r.get("per_fold", {}) else "–" for f in folds)
        dense = (f"{r['speedup_vs_dense']:.2f}x | " if r.get("speedup_vs_dense") else "– | ") if speed else ""
        lines.append(f"| {r['method']} | {100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} | {r['folds']} | "
                     f"{100 * r['trainable'] / r['total']:.3f} | {r['adapter_bytes'] / 1024:.0f} KiB | "
                     f"{r['relative_time']:.2f}x | {dense}{r.get('epoch_s', 0):.1f} | {per} |")
    if result["storage"]:
        bits = [k for k in result["storage"][0] if k.endswith("-bit")]
        lines += ["", "Low-bit storage of the trained parallel adapters (each fold's export saved in fewer bits, "
                      "reloaded, tested on its held-out speaker; bytes of the adapter file):", "",
                  "| fold | float32 | " + " | ".join(bits) + " |", "|---|---|" + "---|" * len(bits)]
        for e in result["storage"]:
            cells = " | ".join(f"{100 * e[b]:.1f}% ({e['bytes'][b.split('-')[0]] / 1024:.0f} KiB)" for b in bits)
            lines.append(f"| {e['fold']} | {100 * e['float32']:.1f}% ({e['bytes']['32'] / 1024:.0f} KiB) | {cells} |")
        mean = lambda key: 100 * statistics.mean(e[key] for e in result["storage"])  # noqa: E731
        lines.append("| mean | " + f"{mean('float32'):.1f}%" + " | " + " | ".join(f"{mean(b):.1f}%" for b in bits) + " |")
    coda = result.get("coda")
    if coda:
        lines += ["", f"CoDA: the trained `{coda['method']}` adapters run with 1 token in n through each block at "
                      f"inference (n = 1 is the dense path: every token through every block, same weights); accuracy "
                      f"over {coda['folds']} folds, encoder time on 32 test clips against the dense path:", "",
                  "| tokens through each block | accuracy % | encoder time vs dense | speed-up |", "|---|---|---|---|"]
        for row in coda["rows"]:
            share = "all" if row["reduction"] == 1 else f"1 in {row['reduction']}"
            lines.append(f"| {share} | {100 * row['accuracy']:.2f} | {row['time_vs_dense']:.2f}x | "
                         f"{1 / row['time_vs_dense']:.2f}x |")
    merging = result.get("merging")
    if merging:
        names = ["inputs"] + ["ensemble"] + list(MERGES)
        lines += ["", f"Merging {len(merging['inputs'])} parallel adapters trained on fold {merging['fold']} from "
                      "different seeds (heads averaged), tested on its held-out speaker:", "",
                  "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        inputs = " / ".join(f"{100 * a:.1f}" for a in merging["inputs"])
        lines.append(f"| {inputs} | " + " | ".join(f"{100 * merging[n]:.1f}" for n in names[1:]) + " |")
    return "\n".join(lines + ["", end, ""])


def write_family_report(exp: str | Path, out: str | Path, result: dict, section: str = "sparse") -> Path:
    """Put the rendered tables of ``section`` into ``out`` between its markers, replacing an earlier version
    in place (other sections and the main table stay as they are)."""
    write_json(Path(exp) / ("adapter_family.json" if section == "sparse" else f"adapter_family_{section}.json"),
               result)
    out = Path(out)
    text = out.read_text() if out.is_file() else ""
    begin, end = markers(section)
    if begin in text and end in text:
        head, tail = text[: text.index(begin)], text[text.index(end) + len(end):].lstrip("\n")
        return write_text(out, head + render(result, section) + ("\n" + tail if tail else ""))
    return write_text(out, text.rstrip("\n") + "\n\n" + render(result, section))

