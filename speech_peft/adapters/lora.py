"""LoRA (Hu et al., 2021) and its PiSSA initialisation (Meng et al., 2024) on linear layers.

The update is ``scale * B(A(dropout(x)))`` with ``scale = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA).
Plain LoRA starts with B = 0, so the model is unchanged and B receives the first gradient.
PiSSA starts A and B at the top-r singular components of W; to keep the base weights intact (and
the model the base model whenever the adapter is off) the frozen initial product is subtracted,
so the adapted layer computes exactly PiSSA's ``W_res x + B A x``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import UserError
from .config import AdapterConfig
from .registry import register_method
from .targeting import Target


@dataclass
class LoRAConfig(AdapterConfig):
    method = "lora"
    default_roles = ("attn.q", "attn.v")

    r: int = 8
    alpha: float = 16.0
    reduction_factor: int | None = None  # PETL-AST style: r = in_features // reduction_factor per layer
    dropout: float = 0.0
    init: Literal["kaiming", "gaussian", "pissa"] = "kaiming"
    use_rslora: bool = False

    def rank_for(self, base: nn.Linear) -> int:
        return max(1, base.in_features // self.reduction_factor) if self.reduction_factor else self.r

    def scale_for(self, rank: int) -> float:
        return self.alpha / (math.sqrt(rank) if self.use_rslora else rank)

    @property
    def scale(self) -> float:
        return self.scale_for(self.r)


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, scale: float, dropout: float, init: str):
        super().__init__()
        if r < 1 or r > min(base.in_features, base.out_features):
            raise UserError(f"LoRA rank {r} must lie in 1..{min(base.in_features, base.out_features)}")
        self.scale = scale
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        self.pissa = init == "pissa"
        with torch.no_grad():
            if init == "kaiming":
                nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
                nn.init.zeros_(self.lora_B.weight)
            elif init == "gaussian":
                nn.init.normal_(self.lora_A.weight, std=1.0 / r)
                nn.init.zeros_(self.lora_B.weight)
            elif init == "pissa":
                u, s, vh = torch.linalg.svd(base.weight.detach().float(), full_matrices=False)
                root = (s[:r] / scale).sqrt()
                self.lora_A.weight.copy_(root[:, None] * vh[:r])
                self.lora_B.weight.copy_(u[:, :r] * root[None, :])
            else:
                raise UserError(f"unknown LoRA init {init!r} (kaiming, gaussian, pissa)")
        if self.pissa:
            self.register_buffer("pissa_A0", self.lora_A.weight.detach().clone())
            self.register_buffer("pissa_B0", self.lora_B.weight.detach().clone())

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        x = self.dropout(x)
        delta = self.lora_B(self.lora_A(x))
        if self.pissa:
            delta = delta - nn.functional.linear(nn.functional.linear(x, self.pissa_A0), self.pissa_B0)
        return delta * self.scale

    def delta_weight(self) -> Tensor:
        weight = self.lora_B.weight @ self.lora_A.weight
        if self.pissa:
            weight = weight - self.pissa_B0 @ self.pissa_A0
        return weight * self.scale

    def can_fold(self, base: nn.Module, read: str | None) -> bool:
        return read is None and isinstance(base, nn.Linear)

    def fold(self, base: nn.Linear, sign: float) -> None:
        base.weight.add_(sign * self.delta_weight().to(base.weight.dtype))


def _build(config: LoRAConfig, target: Target, base: nn.Module, model: nn.Module) -> LoRALinear:
    rank = config.rank_for(base)
    return LoRALinear(base, rank, config.scale_for(rank), config.dropout, config.init)


register_method("lora", LoRAConfig, _build, accepts=lambda m: isinstance(m, nn.Linear))
