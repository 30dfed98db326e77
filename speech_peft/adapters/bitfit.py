"""Baselines: BitFit (Ben Zaken et al., 2022) and the linear probe.

BitFit trains the bias terms. Here each bias gets a zero-initialised delta beside the frozen one, so
it can be switched off, saved alone and merged like any other adapter; training the delta is the
same as training the bias. The linear probe places nothing: it freezes the whole encoder and
leaves the trainable part to the task head.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .config import AdapterConfig
from .registry import register_method
from .targeting import Target


def _has_bias(module: nn.Module) -> bool:
    bias = getattr(module, "bias", None)
    return isinstance(bias, nn.Parameter) and not any(True for _ in module.children())


@dataclass
class BitFitConfig(AdapterConfig):
    method = "bitfit"
    target_modules: list[str] | None = field(default_factory=lambda: ["*"])


@dataclass
class LinearProbeConfig(AdapterConfig):
    method = "linear_probe"


class BiasDelta(nn.Module):
    def __init__(self, bias: Tensor, channel_dim: int):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros_like(bias))
        self.channel_dim = channel_dim  # -1 for (..., C) outputs, 1 for convolutions' (B, C, ...)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self.channel_dim == -1:
            return self.delta
        return self.delta.view(-1, *([1] * (y.dim() - 2)))

    def can_fold(self, base: nn.Module, read: str | None) -> bool:
        return True

    def fold(self, base: nn.Module, sign: float) -> None:
        base.bias.add_(sign * self.delta)


def _build(config: BitFitConfig, target: Target, base: nn.Module, model: nn.Module) -> BiasDelta:
    conv = isinstance(base, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d))
    return BiasDelta(base.bias, channel_dim=1 if conv else -1)


register_method("bitfit", BitFitConfig, _build, accepts=_has_bias)
register_method("linear_probe", LinearProbeConfig, None)
