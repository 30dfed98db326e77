"""Pieces every task's Lightning module shares: frozen-encoder handling and adapter-only checkpoints."""
from __future__ import annotations

import copy
import time
from typing import Any

import lightning as L

from torch import nn

from ..adapters import add_adapter, config_from_dict
from ..adapters.injection import AdapterReport, sites
from ..adapters.io import module_fingerprint

FULL_FINETUNE = "full"


def attach_adapter(encoder: nn.Module, adapter: dict[str, Any], name: str = "default") -> AdapterReport | None:
    """Place the configured method (a plain dict with ``method``) on the encoder; ``full`` trains all."""
    adapter = copy.deepcopy(dict(adapter))
    if adapter.get("method") == FULL_FINETUNE:
        for p in encoder.parameters():
            p.requires_grad_(True)
        return None
    return add_adapter(encoder, config_from_dict(adapter), name)


def keep_frozen_parts_in_eval(encoder: nn.Module, mode: bool) -> None:
    """The frozen encoder stays in eval mode (no dropout, fixed norms); adapters follow ``mode``."""
    encoder.eval()
    for site in sites(encoder).values():
        site.adapters.train(mode)


def encoder_fingerprint(encoder: nn.Module) -> dict[str, str]:
    """A fingerprint of the frozen weights, stored in checkpoints to refuse another base on load."""
    parts = {}
    for name, module in encoder.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and ".adapters." not in f".{name}.":
            parts[name.replace(".base", "")] = module_fingerprint(module)["values"]
    return parts


def trainable_state(module: nn.Module) -> dict[str, Any]:
    """Trainable parameters plus the buffers that live inside adapters (e.g. BatchNorm statistics)."""
    state = module.state_dict()
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in state.items() if k in names or ".adapters." in f".{k}"}


class EpochTimer(L.Callback):
    """Seconds per training epoch (``times``), logged as ``epoch_time_s``; ``speech-peft fit`` stores them."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._start)
        module.log("epoch_time_s", self.times[-1])
