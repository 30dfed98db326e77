"""Merging trained adapters of the same method and placement into one, in weight space.

- ``average``: the mean of the adapters' weights; ``task_arithmetic``: their weighted sum (``weights``).
- ``ties`` (Yadav et al., 2023): keep each adapter's largest ``density`` fraction of values, elect each
  value's sign by the summed mass, average the values that agree with it.
- ``dare`` (Yu et al., 2024): drop each value with probability ``drop``, rescale the rest by 1 / (1 - drop),
  then average.
- ``mera`` (MerA): bottleneck adapters trained apart number their hidden units arbitrarily, so before
  averaging, each adapter's units are matched to the first adapter's (a permutation found by optimal
  assignment on the units' weights: down row, down bias, up column) and reordered.

LoRA adapters merge as their weight updates (B A, scaled), which no unit order affects (so ``mera`` is
``average`` for them), and are written back as one LoRA whose rank is the sum of the inputs' ranks (exact).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from ..errors import UserError
from .io import CONFIG, read_manifest, read_tensors, write_adapter_files

METHODS = ("average", "task_arithmetic", "ties", "dare", "mera")
MERGEABLE = ("lora", "parallel", "series")


def align_units(reference: dict[str, Tensor], other: dict[str, Tensor], reference_activity: Tensor | None = None,
                other_activity: Tensor | None = None) -> Tensor:
    """The permutation ``p`` of ``other``'s bottleneck units that best matches ``reference``'s: unit ``j`` of
    the reference pairs with unit ``p[j]`` of ``other`` (maximum total similarity). With activities, the
    units' outputs (tokens, units) on the same inputs, units pair by correlation; otherwise by the cosine of
    their weights (down row, up column, down bias)."""
    from scipy.optimize import linear_sum_assignment

    def units(t: dict[str, Tensor]) -> Tensor:
        parts = [t["down.weight"], t["up.weight"].T] + ([t["down.bias"][:, None]] if "down.bias" in t else [])
        features = torch.cat(parts, dim=1).float()
        return features / features.norm(dim=1, keepdim=True).clamp(min=1e-12)

    def standardised(activity: Tensor) -> Tensor:
        centred = (activity.float() - activity.float().mean(0)).T
        return centred / centred.norm(dim=1, keepdim=True).clamp(min=1e-12)

    if reference_activity is not None and other_activity is not None:
        similarity = standardised(reference_activity) @ standardised(other_activity).T
    else:
        similarity = units(reference) @ units(other).T
    rows, cols = linear_sum_assignment(similarity.numpy(), maximize=True)
    return torch.as_tensor(cols[rows.argsort()], dtype=torch.long)


def permute_units(tensors: dict[str, Tensor], order: Tensor) -> dict[str, Tensor]:
    out = dict(tensors)
    out["down.weight"] = tensors["down.weight"][order]
    out["up.weight"] = tensors["up.weight"][:, order]
    if "down.bias" in tensors:
        out["down.bias"] = tensors["down.bias"][order]
    return out


def combine(values: list[Tensor], method: str, weights: list[float], density: float, drop: float,
            generator: torch.Generator) -> Tensor:
    """One tensor from the same tensor of every adapter."""
    stack = torch.stack([v.float() for v in values])
    w = torch.tensor(weights, dtype=torch.float32).view(-1, *([1] * values[0].dim()))
    if method in ("average", "mera"):
        return stack.mean(0)
    if method == "task_arithmetic":
        return (w * stack).sum(0)
    if method == "dare":
        kept = torch.rand(stack.shape, generator=generator) >= drop
        return (stack * kept / (1.0 - drop)).mean(0)
    if method == "ties":
        flat = stack.reshape(len(values), -1)
        keep = max(1, round(density * flat.shape[1]))
        threshold = flat.abs().topk(keep, dim=1).values[:, -1:]
        trimmed = torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))
        sign = torch.sign(trimmed.sum(0))
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
        merged = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
        return merged.reshape(values[0].shape)
    raise UserError(f"unknown merge method {method!r}; known: {', '.join(METHODS)}")


def merge_adapters(directories: list[str | os.PathLike], out_dir: str | os.PathLike, method: str = "average",
                   weights: list[float] | None = None, density: float = 0.2, drop: float = 0.5,
                   seed: int = 0, activities: list[dict[str, Tensor]] | None = None) -> Path:
    """Merge saved adapters (same method, same places, same shapes) into one saved adapter at ``out_dir``.
    ``activities`` (mera): per adapter, per place, its bottleneck units' outputs (tokens, units) on the same
    inputs, to align units by what they compute rather than by their weights."""
    if method not in METHODS:
        raise UserError(f"unknown merge method {method!r}; known: {', '.join(METHODS)}")
    if len(directories) < 1:
        raise UserError("merging needs at least one adapter")
    directories = [Path(d) for d in directories]
    manifests = [read_manifest(d) for d in directories]
    configs = [json.loads((d / CONFIG).read_text()) for d in directories]
    kind = configs[0]["method"]
    if kind not in MERGEABLE:
        raise UserError(f"{directories[0]}: {kind} adapters cannot be merged (mergeable: {', '.join(MERGEABLE)})")
    for d, m, c in zip(directories[1:], manifests[1:], configs[1:]):
        if c["method"] != kind or m["targets"] != manifests[0]["targets"]:
            raise UserError(f"{d}: a {c['method']} adapter placed elsewhere than {directories[0]}: only adapters "
                             "of the same method and places merge")
        if m["base_fingerprint"] != manifests[0]["base_fingerprint"]:
            raise UserError(f"{d} was trained on another base model than {directories[0]}")
    weights = list(weights) if weights is not None else [1.0 / len(directories)] * len(directories)
    if len(weights) != len(directories):
        raise UserError(f"{len(weights)} weights for {len(directories)} adapters")
    tensors = [read_tensors(d / "adapter.safetensors") for d in directories]
    generator = torch.Generator().manual_seed(seed)
    paths = [t["write"] for t in manifests[0]["targets"]]
    if kind == "lora":
        merged, config = _merge_lora(tensors, configs, paths, method, weights, density, drop, generator)
    else:
        merged, config = _merge_bottleneck(tensors, configs[0], paths, method, weights, density, drop, generator,
                                           activities)
    fields = {k: manifests[0][k] for k in ("targets", "base_model", "base_fingerprint")}
    return write_adapter_files(out_dir, merged, config, {"name": manifests[0]["name"], "method": kind, **fields,
                                                         "merged_from": [str(d) for d in directories],
                                                         "merge_method": method})


def _split(tensors: dict[str, Tensor], path: str) -> dict[str, Tensor]:
    prefix = f"{path}." if path else ""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _merge_bottleneck(tensors, config, paths, method, weights, density, drop, generator, activities=None):
    merged: dict[str, Tensor] = {}
    for path in paths:
        parts = [_split(t, path) for t in tensors]
        inner = [{k.removeprefix("inner."): v for k, v in p.items() if k.startswith("inner.")} for p in parts]
        if method == "mera" and "down.weight" in inner[0]:
            acts = [a[path] for a in activities] if activities else [None] * len(inner)
            inner = [inner[0]] + [permute_units(other, align_units(inner[0], other, acts[0], act))
                                  for other, act in zip(inner[1:], acts[1:])]
            parts = [{**p, **{f"inner.{k}": v for k, v in i.items()}} for p, i in zip(parts, inner)]
        prefix = f"{path}." if path else ""
        for key in parts[0]:
            merged[prefix + key] = combine([p[key] for p in parts], method, weights, density, drop, generator)
    return merged, config


def _merge_lora(tensors, configs, paths, method, weights, density, drop, generator):
    merged: dict[str, Tensor] = {}
    rank = 0
    for path in paths:
        deltas = []
        for t, c in zip(tensors, configs):
            part = _split(t, path)
            a, b = part["lora_A.weight"].float(), part["lora_B.weight"].float()
            r = a.shape[0]
            scale = c["alpha"] / (r ** 0.5 if c.get("use_rslora") else r)
            update = b @ a
            if "pissa_A0" in part:  # PiSSA trains away from its principal-component start
                update = update - part["pissa_B0"].float() @ part["pissa_A0"].float()
            deltas.append(scale * update)
        delta = combine(deltas, "average" if method == "mera" else method, weights, density, drop, generator)
        keep = min(sum(_split(t, path)["lora_A.weight"].shape[0] for t in tensors), *delta.shape)
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        root = s[:keep].sqrt()
        prefix = f"{path}." if path else ""
        merged[prefix + "lora_A.weight"] = root[:, None] * vh[:keep]
        merged[prefix + "lora_B.weight"] = u[:, :keep] * root[None]
        rank = max(rank, keep)
    # One rank for every place: pad the smaller factorisations with zeros (they add nothing).
    for key in list(merged):
        value = merged[key]
        if key.endswith("lora_A.weight") and value.shape[0] < rank:
            merged[key] = torch.cat([value, value.new_zeros(rank - value.shape[0], value.shape[1])])
        if key.endswith("lora_B.weight") and value.shape[1] < rank:
            merged[key] = torch.cat([value, value.new_zeros(value.shape[0], rank - value.shape[1])], dim=1)
    config = {**configs[0], "r": rank, "alpha": float(rank), "use_rslora": False, "reduction_factor": None,
              "init": "kaiming"}
    return merged, config
