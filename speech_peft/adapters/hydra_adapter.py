"""Hydra, multi-head low-rank adaptation (Kim et al., 2024): a parallel and a sequential low-rank branch on
the same linear layer, their outputs summed:

    h(x) = W x  +  s_p B_p A_p x  +  s_s B_s A_s (W x)

The parallel branch is LoRA (it reads the layer's input); the sequential branch is a linear bottleneck on
the layer's output (a series adapter without activation). Both up projections start at zero, so the layer
starts as the frozen one. Everything is linear, so the adapter folds into W exactly:
W' = (I + s_s B_s A_s) W + s_p B_p A_p, and unfolds by solving for W.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import UserError
from .config import AdapterConfig
from .registry import register_method
from .targeting import Target


@dataclass
class HydraConfig(AdapterConfig):
    method = "hydra"
    default_roles = ("attn.q", "attn.v")

    r: int = 4                    # rank of each branch (the pair trains what a LoRA of rank 2r trains)
    alpha: float = 8.0            # both branches scale by alpha / r, as LoRA does
    sequential_r: int | None = None  # the sequential branch's rank, when it differs from r
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.r < 1 or (self.sequential_r is not None and self.sequential_r < 1):
            raise UserError(f"Hydra ranks must be at least 1 (r={self.r}, sequential_r={self.sequential_r})")


class HydraLinear(nn.Module):
    def __init__(self, base: nn.Linear, config: HydraConfig):
        super().__init__()
        r_par, r_seq = config.r, config.sequential_r or config.r
        self.parallel_scale, self.sequential_scale = config.alpha / r_par, config.alpha / r_seq
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.parallel_A = nn.Linear(base.in_features, r_par, bias=False)
        self.parallel_B = nn.Linear(r_par, base.out_features, bias=False)
        self.sequential_A = nn.Linear(base.out_features, r_seq, bias=False)
        self.sequential_B = nn.Linear(r_seq, base.out_features, bias=False)
        for down, up in ((self.parallel_A, self.parallel_B), (self.sequential_A, self.sequential_B)):
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
            nn.init.zeros_(up.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        parallel = self.parallel_B(self.parallel_A(self.dropout(x))) * self.parallel_scale
        sequential = self.sequential_B(self.sequential_A(self.dropout(y))) * self.sequential_scale
        return parallel + sequential

    def _parts(self) -> tuple[Tensor, Tensor]:
        """(S, P): the sequential map on the output and the parallel weight update, both scaled."""
        return (self.sequential_scale * self.sequential_B.weight @ self.sequential_A.weight,
                self.parallel_scale * self.parallel_B.weight @ self.parallel_A.weight)

    def can_fold(self, base: nn.Module, read: str | None) -> bool:
        return read is None and isinstance(base, nn.Linear)

    def fold(self, base: nn.Linear, sign: float) -> None:
        # The sequential branch also reads the bias: y + S (W x + b) + P x = (I + S) W x + P x + (I + S) b.
        seq, par = (m.to(base.weight.dtype) for m in self._parts())
        eye = torch.eye(seq.shape[0], dtype=seq.dtype, device=seq.device)
        if sign > 0:
            base.weight.copy_((eye + seq) @ base.weight + par)
            if base.bias is not None:
                base.bias.copy_((eye + seq) @ base.bias)
        else:
            base.weight.copy_(torch.linalg.solve(eye + seq, base.weight - par))
            if base.bias is not None:
                base.bias.copy_(torch.linalg.solve(eye + seq, base.bias))


def _build(config: HydraConfig, target: Target, base: nn.Module, model: nn.Module) -> HydraLinear:
    return HydraLinear(base, config)


register_method("hydra", HydraConfig, _build, accepts=lambda m: isinstance(m, nn.Linear))
