"""AdapterBias (Fu et al., 2022): a token-dependent shift ``v * alpha(x)`` added to a sublayer's output.

v is one vector per site; alpha is a scalar per token from a linear layer on what the sublayer
reads. v starts at zero (identity); alpha's layer starts random so v learns on the first step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import AdapterConfig
from .dims import input_dim, output_dim
from .registry import register_method
from .targeting import Target


@dataclass
class AdapterBiasConfig(AdapterConfig):
    method = "adapter_bias"
    default_roles = ("ffn",)


class AdapterBias(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(d_out))
        self.alpha = nn.Linear(d_in, 1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.alpha(x) * self.vector

    def can_fold(self, base: nn.Module, read: str | None) -> bool:
        # v * (w.x + c) is linear in x: exact to fold only when x is the wrapped linear's own input.
        return read is None and isinstance(base, nn.Linear) and base.bias is not None

    def fold(self, base: nn.Linear, sign: float) -> None:
        base.weight.add_(sign * torch.outer(self.vector, self.alpha.weight[0]))
        base.bias.add_(sign * self.vector * self.alpha.bias[0])


def _build(config: AdapterBiasConfig, target: Target, base: nn.Module, model: nn.Module) -> AdapterBias:
    return AdapterBias(input_dim(model, target, base), output_dim(base))


register_method("adapter_bias", AdapterBiasConfig, _build)
