"""Where an adapter lives: ``AdapterSite`` wraps one module of the frozen model and adds the deltas of
its active adapters to that module's output. The rest of the adapter core builds on this file alone."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class AdapterSite(nn.Module):
    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapters = nn.ModuleDict()
        self.reads: dict[str, str | None] = {}
        self.time_first: dict[str, bool] = {}
        self.active: tuple[str, ...] = ()
        self.merged: set[str] = set()
        self._captured: dict[str, Tensor] = {}
        self._hooks: dict[str, torch.utils.hooks.RemovableHandle] = {}

    def __getattr__(self, name: str):
        # Host code reads attributes of the module it owns (conv.stride, linear.weight): pass them through.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("base"), name)

    def live(self) -> list[str]:
        return [n for n in self.active if n in self.adapters and n not in self.merged]

    def capture(self, read: str, output) -> None:
        if any(self.reads[n] == read for n in self.live()):
            self._captured[read] = output[0] if isinstance(output, tuple) else output

    def forward(self, *args, **kwargs):
        out = self.base(*args, **kwargs)
        live = self.live()
        if not live:
            return out
        y = out[0] if isinstance(out, tuple) else out
        total = y
        for name in live:
            read = self.reads[name]
            if read is None:
                x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, Tensor))
            elif read in self._captured:
                x = self._captured[read]
            else:
                raise RuntimeError(f"adapter {name!r} reads the output of {read!r}, which did not run first")
            if self.time_first.get(name):  # adapters are written for (batch, time, ...) tensors
                total = total + self.adapters[name](x.transpose(0, 1), y.transpose(0, 1)).transpose(0, 1)
            else:
                total = total + self.adapters[name](x, y)
        self._captured.clear()
        return (total, *out[1:]) if isinstance(out, tuple) else total


def unwrap(module: nn.Module) -> nn.Module:
    """The original module behind an adapter site."""
    return module.base if isinstance(module, AdapterSite) else module


def sites(model: nn.Module) -> dict[str, AdapterSite]:
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterSite)}
