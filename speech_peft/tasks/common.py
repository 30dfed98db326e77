"""What every task's LightningModule shares: adapters on a frozen model, and one checkpoint rule.

The rule: a checkpoint holds what was trained (parameters that require gradients, plus buffers
that live inside adapters) and a fingerprint of the frozen weights; loading refuses another base
model, refuses missing or unexpected tensors, and then loads strictly.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..adapters import sites
from ..adapters.io import frozen_fingerprint
from ..errors import UserError



def keep_frozen_parts_in_eval(model: nn.Module, mode: bool) -> None:
    """The frozen model stays in eval mode (no dropout, fixed norms); adapters follow ``mode``."""
    model.eval()
    for site in sites(model).values():
        site.adapters.train(mode)
        site.combiners.train(mode)


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters plus the buffers that live inside adapters (e.g. BatchNorm statistics)."""
    state = module.state_dict()
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in state.items() if k in names or ".adapters." in f".{k}"}


def fingerprint(module: nn.Module) -> dict[str, str]:
    """The frozen weights' fingerprint; a sharded module (``sharding.py``) kept the one of its whole weights."""
    return getattr(module, "frozen_fingerprint", None) or frozen_fingerprint(module)


def save_trained_state(module: nn.Module, checkpoint: dict) -> None:
    """``on_save_checkpoint``: keep only what was trained, and the frozen weights' fingerprint."""
    trained = trainable_state(module).keys()
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}
    checkpoint["frozen_fingerprint"] = fingerprint(module)


def load_trained_state(module: nn.Module, checkpoint: dict) -> None:
    """``on_load_checkpoint``: check the checkpoint against this module, then complete it with the
    frozen weights so that Lightning's strict load sees every tensor."""
    saved = checkpoint.get("frozen_fingerprint")
    if saved is None:
        raise UserError("checkpoint has no frozen_fingerprint: it was not written by a speech_peft task")
    here = fingerprint(module)
    differing = sorted(k for k in set(saved) | set(here) if saved.get(k) != here.get(k))
    if differing:
        raise UserError(f"checkpoint was trained on another base model: the frozen weights of {differing[:3]} "
                         f"differ ({len(differing)} module(s))")
    expected, stored = set(trainable_state(module)), set(checkpoint["state_dict"])
    if expected != stored:
        raise UserError(f"checkpoint does not match this task's trainable tensors: missing "
                         f"{sorted(expected - stored)[:5]}, unexpected {sorted(stored - expected)[:5]}")
    checkpoint["state_dict"] = {**module.state_dict(), **checkpoint["state_dict"]}


def load_checkpoint_weights(module: nn.Module, path: str | Path) -> None:
    """Load a checkpoint written by ``fit`` into a built module, through the module's own hook."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)


def optimizer_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """The trainable parameters as AdamW groups. An adapter module may ask for a smaller step (``lr_scale``)
    or no weight decay (``decay = False``: factors that hold the frozen weight's own principal components,
    which decay would shrink); every other parameter trains at ``lr`` with ``weight_decay``."""
    special: dict[int, tuple[float, float]] = {}
    for site in sites(module).values():
        for adapter in site.adapters.values():
            setting = (lr * getattr(adapter, "lr_scale", 1.0), weight_decay if getattr(adapter, "decay", True) else 0.0)
            special.update({id(p): setting for p in adapter.parameters()})
    groups: dict[tuple[float, float], list] = {}
    for p in module.parameters():
        if p.requires_grad:
            groups.setdefault(special.get(id(p), (lr, weight_decay)), []).append(p)
    return [{"params": params, "lr": group_lr, "weight_decay": decay} for (group_lr, decay), params in groups.items()]
