"""Where an adapter lives: ``AdapterSite`` wraps one module of the frozen model and adds the deltas of
its active adapters to that module's output; when a fusion is active (``fusion.py``), the deltas of
the adapters it fuses go through its combiner instead of being summed. The rest of the adapter core
builds on this file alone."""
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
        self.combiners = nn.ModuleDict()  # fusion name -> this site's combiner
        self.fused: dict[str, tuple[str, ...]] = {}  # fusion name -> the adapters it combines
        self.active_fusion: str | None = None
        self.row_adapters: dict[str, Tensor] | None = None  # mixed batch: adapter name -> its rows
        self._captured: dict[str, Tensor] = {}
        self._hooks: dict[str, torch.utils.hooks.RemovableHandle] = {}

    def __getattr__(self, name: str):
        # Host code reads attributes of the module it owns (conv.stride, linear.weight): pass them through.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("base"), name)

    def live(self) -> list[str]:
        fused = self.fused.get(self.active_fusion, ())
        return [n for n in self.active if n in self.adapters and n not in self.merged and n not in fused]

    def capture(self, read: str, output) -> None:
        wanted = self.live() + list(self.fused.get(self.active_fusion, ()))
        if any(self.reads[n] == read for n in wanted):
            self._captured[read] = output[0] if isinstance(output, tuple) else output

    def _read(self, name: str, own_input: Tensor) -> Tensor:
        read = self.reads[name]
        if read is None:
            return own_input
        if read in self._captured:
            return self._captured[read]
        raise RuntimeError(f"adapter {name!r} reads the output of {read!r}, which did not run first")

    def _delta(self, name: str, own_input: Tensor, y: Tensor, rows: Tensor | None = None) -> Tensor:
        x = self._read(name, own_input)
        if rows is not None:  # only these utterances (batch-first states)
            x, y = x[rows], y[rows]
        if self.time_first.get(name):  # adapters are written for (batch, time, ...) tensors
            return self.adapters[name](x.transpose(0, 1), y.transpose(0, 1)).transpose(0, 1)
        return self.adapters[name](x, y)

    def forward(self, *args, **kwargs):
        live = self.live()
        router = next((self.adapters[n] for n in live if getattr(self.adapters[n], "routes_base", False)), None)
        if router is not None and self.row_adapters is None:  # a conditional adapter runs the base itself
            out = router.route(self.base, args, kwargs, time_first=self.time_first.get(live[0], False))
        else:
            out = self.base(*args, **kwargs)
        if self.row_adapters is not None:
            return self._mixed(out, args, kwargs)
        fusion = self.active_fusion if self.active_fusion in self.combiners else None
        if not live and fusion is None:
            return out
        y = out[0] if isinstance(out, tuple) else out
        own_input = args[0] if args else next(v for v in kwargs.values() if isinstance(v, Tensor))
        total = y
        for name in live:
            total = total + self._delta(name, own_input, y)
        if fusion is not None:
            total = total + self._fuse(fusion, own_input, y)
        self._captured.clear()
        return (total, *out[1:]) if isinstance(out, tuple) else total

    def _mixed(self, out, args, kwargs):
        """Each utterance through its own adapter (``mixed_batch.set_row_adapters``); rows naming none, or
        an adapter that does not sit here, get the base output."""
        y = out[0] if isinstance(out, tuple) else out
        own_input = args[0] if args else next(v for v in kwargs.values() if isinstance(v, Tensor))
        total = y
        for name, rows in self.row_adapters.items():
            if name in self.adapters and name not in self.merged and len(rows):
                rows = rows.to(y.device)
                total = total.index_add(0, rows, self._delta(name, own_input, y, rows))
        self._captured.clear()
        return (total, *out[1:]) if isinstance(out, tuple) else total

    def _fuse(self, fusion: str, own_input: Tensor, y: Tensor) -> Tensor:
        """The combined delta of a fusion's adapters. With per-utterance weights an adapter runs only on
        the utterances that give it weight, so hard and oracle routing cost one adapter per utterance."""
        fused, combiner = self.fused[fusion], self.combiners[fusion]
        state = self._read(fused[0], own_input)  # the layer's state, as the adapters read it
        weights = combiner.weights(state, y)
        if weights is None:  # per-frame weights (attention fusion) need every delta
            return combiner(state, y, torch.stack([self._delta(n, own_input, y) for n in fused], dim=-2))
        mixed = torch.zeros_like(y)
        for k, name in enumerate(fused):
            rows = (weights[:, k] != 0).nonzero().squeeze(1)
            if len(rows) == len(weights):
                mixed = mixed + weights[:, k, None, None].to(y.dtype) * self._delta(name, own_input, y)
            elif len(rows):
                part = weights[rows, k, None, None].to(y.dtype) * self._delta(name, own_input, y, rows)
                mixed = mixed.index_add(0, rows, part)
        return mixed


def unwrap(module: nn.Module) -> nn.Module:
    """The original module behind an adapter site."""
    return module.base if isinstance(module, AdapterSite) else module


def base_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s weights under the names they have without adapter sites (each site's base module in its
    place), adapters and fusion combiners left out: what a merged model saves, or loads into a bare copy."""
    return {k.replace(".base.", "."): v for k, v in model.state_dict().items()
            if ".adapters." not in k and ".combiners." not in k}


def sites(model: nn.Module) -> dict[str, AdapterSite]:
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterSite)}
