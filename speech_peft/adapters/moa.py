"""Mixtures of adapters (PETL-AST): several bottleneck experts at one site, mixed per token.

Dense-MoA: a router gives each token a softmax over experts; the delta is the weighted sum of every
expert's output. Soft-MoA (after Puigcerver et al.'s Soft MoE): each expert owns ``slots_per_expert``
slots; a slot is a softmax-over-tokens average of the tokens, the experts process their slots, and
each token takes a softmax-over-slots average of the results. Experts start at zero (identity).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import UserError
from .bottleneck import LinearBottleneck
from .config import AdapterConfig
from .dims import input_dim, output_dim
from .registry import register_method
from .targeting import Target


@dataclass
class MoAConfig(AdapterConfig):
    method = "moa"
    default_roles = ("ffn",)

    mode: Literal["dense", "soft"] = "dense"
    num_experts: int = 4
    slots_per_expert: int = 1
    bottleneck_dim: int | None = None
    reduction_factor: int = 16
    activation: str = "relu"
    placement: Literal["parallel", "series"] = "parallel"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("dense", "soft") or self.placement not in ("parallel", "series"):
            raise UserError(f"moa: mode must be dense|soft and placement parallel|series, got "
                             f"{self.mode!r}, {self.placement!r}")


class MixtureOfAdapters(nn.Module):
    def __init__(self, d_in: int, d_out: int, config: MoAConfig):
        super().__init__()
        hidden = config.bottleneck_dim or max(1, d_in // config.reduction_factor)
        self.mode, self.scale = config.mode, config.scale
        self.reads_output = config.placement == "series"
        self.experts = nn.ModuleList(LinearBottleneck(d_in, d_out, hidden, config.activation)
                                     for _ in range(config.num_experts))
        self.slots = config.slots_per_expert
        if self.mode == "dense":
            self.router = nn.Linear(d_in, config.num_experts)
        else:
            self.slot_keys = nn.Parameter(torch.randn(d_in, config.num_experts * self.slots) / d_in ** 0.5)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        source = y if self.reads_output else x
        if self.mode == "dense":
            weights = self.router(source).softmax(-1)                       # (B, T, E)
            outs = torch.stack([e(source) for e in self.experts], dim=-1)   # (B, T, D, E)
            return self.scale * (outs * weights.unsqueeze(-2)).sum(-1)
        logits = source @ self.slot_keys                                     # (B, T, E*S)
        slots = logits.softmax(1).transpose(1, 2) @ source                  # (B, E*S, D_in)
        outs = torch.cat([e(chunk) for e, chunk in zip(self.experts, slots.split(self.slots, dim=1))], dim=1)
        return self.scale * (logits.softmax(-1) @ outs)                     # (B, T, D_out)


def _build(config: MoAConfig, target: Target, base: nn.Module, model: nn.Module) -> MixtureOfAdapters:
    width = output_dim(base)
    d_in = width if config.placement == "series" else input_dim(model, target, base)
    return MixtureOfAdapters(d_in, width, config)


register_method("moa", MoAConfig, _build)
