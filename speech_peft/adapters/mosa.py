"""MoSA, mixture of sparse adapters (Zhang et al., 2024): a parallel bottleneck adapter split into ``modules``
non-overlapping sparse sub-adapters; each training step updates a random ``active`` fraction of them, and
after training they are merged back into the one ordinary adapter they partition (``merge_mosa``), so
inference costs exactly what a bottleneck adapter costs.

The split is by weight: every weight of the adapter's two matrices belongs to one sub-adapter (a seeded
random partition), so the merged adapter is the sum of the sub-adapters. ``hierarchical`` (for small data)
splits at a coarser level instead: whole bottleneck units, so each sub-adapter is a narrower dense
adapter and each step trains a few complete units (our reading of the paper's hierarchical strategy).
Steps use inverted-dropout scaling (1 / active fraction); evaluation runs all sub-adapters unscaled.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UserError
from .bottleneck import _ACTIVATIONS, BottleneckAdapter, BottleneckFields, ParallelAdapterConfig
from .dims import input_dim, output_dim
from .injection import adapter_modules, records, replace_adapter_modules
from .registry import register_method
from .targeting import Target


@dataclass
class MoSAConfig(BottleneckFields):
    method = "mosa"
    default_roles = ("ffn",)
    scale: float = 4.0
    modules: int = 4          # sub-adapters the adapter is split into
    active: float = 0.5       # fraction of them each training step updates
    hierarchical: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.modules < 1 or not 0.0 < self.active <= 1.0:
            raise UserError(f"MoSA needs modules >= 1 and 0 < active <= 1 (got {self.modules}, {self.active})")


class MoSABottleneck(nn.Module):
    def __init__(self, d_in: int, d_out: int, config: MoSAConfig):
        super().__init__()
        hidden = config.hidden(d_in)
        self.scale, self.count = config.scale, config.modules
        self.keep = max(1, round(config.active * config.modules))
        self.down, self.up = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)
        self.act = _ACTIVATIONS[config.activation]()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        generator = torch.Generator().manual_seed(config.seed)
        if config.hierarchical:  # whole units: unit j of the bottleneck belongs to sub-adapter owner[j]
            owner = torch.randperm(hidden, generator=generator) % config.modules
            down_owner, up_owner = owner[:, None].expand(hidden, d_in), owner[None, :].expand(d_out, hidden)
        else:
            down_owner = torch.randint(config.modules, (hidden, d_in), generator=generator)
            up_owner = torch.randint(config.modules, (d_out, hidden), generator=generator)
        self.register_buffer("down_owner", down_owner.to(torch.uint8).contiguous())
        self.register_buffer("up_owner", up_owner.to(torch.uint8).contiguous())

    def sub_adapter_masks(self, chosen: Tensor) -> tuple[Tensor, Tensor]:
        """Masks of the union of sub-adapters ``chosen`` (indices) over the down and up weights."""
        pick = torch.zeros(self.count, dtype=torch.bool, device=chosen.device)
        pick[chosen] = True
        return pick[self.down_owner.long()], pick[self.up_owner.long()]

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        down, up = self.down.weight, self.up.weight
        if self.training and self.keep < self.count:
            chosen = torch.randperm(self.count, device=down.device)[: self.keep]
            down_mask, up_mask = self.sub_adapter_masks(chosen)
            factor = self.count / self.keep
            down, up = down * down_mask * factor, up * up_mask * factor
        h = self.act(F.linear(x, down, self.down.bias))
        return self.scale * F.linear(h, up, self.up.bias)


def merge_mosa(model: nn.Module, name: str) -> None:
    """Turn MoSA adapter ``name`` into the ordinary parallel adapter its sub-adapters add up to: same
    weights, no owner tables; saved and loaded as ``parallel`` from then on."""
    record = records(model)[name]
    if not isinstance(record.config, MoSAConfig):
        raise UserError(f"adapter {name!r} is {record.config.method}, not MoSA")
    fields = {k: v for k, v in record.config.to_dict().items()
              if k in ParallelAdapterConfig.__dataclass_fields__ and k != "method"}
    placed = adapter_modules(model, name)
    width = next(iter(placed.values())).down.out_features
    config = ParallelAdapterConfig(**{**fields, "bottleneck_dim": width})
    merged = {}
    for path, module in placed.items():
        merged[path] = BottleneckAdapter(module.down.in_features, module.up.out_features, config, reads_output=False)
        merged[path].inner.down.load_state_dict(module.down.state_dict())
        merged[path].inner.up.load_state_dict(module.up.state_dict())
    replace_adapter_modules(model, name, merged, config)


def _build(config: MoSAConfig, target: Target, base: nn.Module, model: nn.Module) -> MoSABottleneck:
    return MoSABottleneck(input_dim(model, target, base), output_dim(base), config)


register_method("mosa", MoSAConfig, _build, finalize=merge_mosa)
