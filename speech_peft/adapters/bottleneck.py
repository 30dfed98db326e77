"""Bottleneck adapters: series (Houlsby / Pfeiffer placement) and parallel (He et al., 2022).

Series: ``y + s * f(y)`` on a sublayer's output, before the residual addition. Houlsby places one
after attention and one after the feed-forward; Pfeiffer only after the feed-forward.
Parallel: ``y + s * f(x)`` where x is what the sublayer reads (its pre-norm output), so the adapter
runs beside the sublayer instead of after it.

The inner function f is a linear bottleneck (down, activation, up) or the Conformer adapter of
PETL-AST (pointwise conv, GLU, depthwise conv, BatchNorm, SiLU, pointwise conv). Its last projection
starts at zero: the adapter is the identity at first, the last projection gets the first gradient
and everything before it gets gradients from the second step on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from ..errors import UserError
from .config import AdapterConfig
from .dims import input_dim, output_dim
from .registry import register_method
from .targeting import Target

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "identity": nn.Identity}


@dataclass
class BottleneckFields(AdapterConfig):
    bottleneck_dim: int | None = None    # hidden width; when None, width // reduction_factor
    reduction_factor: int = 16
    kind: Literal["linear", "conformer"] = "linear"
    activation: str = "relu"
    layer_norm: bool = False             # normalise the adapter's input first
    kernel_size: int = 31                # conformer kind: depthwise kernel
    scale: float = 1.0

    def hidden(self, width: int) -> int:
        return self.bottleneck_dim or max(1, width // self.reduction_factor)


@dataclass
class SeriesAdapterConfig(BottleneckFields):
    method = "series"
    placement: Literal["houlsby", "pfeiffer"] = "pfeiffer"

    @property
    def default_roles(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("attn", "ffn") if self.placement == "houlsby" else ("ffn",)

    def __post_init__(self) -> None:
        if self.placement not in ("houlsby", "pfeiffer"):
            raise UserError(f"placement must be 'houlsby' or 'pfeiffer', got {self.placement!r}")


@dataclass
class ParallelAdapterConfig(BottleneckFields):
    method = "parallel"
    default_roles = ("ffn",)
    scale: float = 4.0  # He et al.'s choice for the feed-forward parallel adapter


class LinearBottleneck(nn.Module):
    def __init__(self, d_in: int, d_out: int, hidden: int, activation: str):
        super().__init__()
        self.down = nn.Linear(d_in, hidden)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(hidden, d_out)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.act(self.down(x)))


class ConformerBottleneck(nn.Module):
    """Pointwise conv -> GLU -> depthwise conv -> BatchNorm -> SiLU -> pointwise conv, over time."""

    def __init__(self, d_in: int, d_out: int, hidden: int, kernel_size: int):
        super().__init__()
        self.pointwise_in = nn.Conv1d(d_in, 2 * hidden, 1)
        self.glu = nn.GLU(dim=1)
        self.depthwise = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden)
        self.norm = nn.BatchNorm1d(hidden)
        self.act = nn.SiLU()
        self.pointwise_out = nn.Conv1d(hidden, d_out, 1)
        nn.init.zeros_(self.pointwise_out.weight)
        nn.init.zeros_(self.pointwise_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.glu(self.pointwise_in(x.transpose(1, 2)))
        h = self.act(self.norm(self.depthwise(h)))
        return self.pointwise_out(h).transpose(1, 2)


class BottleneckAdapter(nn.Module):
    def __init__(self, d_in: int, d_out: int, config: BottleneckFields, reads_output: bool):
        super().__init__()
        self.reads_output = reads_output
        self.scale = config.scale
        self.norm = nn.LayerNorm(d_in) if config.layer_norm else nn.Identity()
        hidden = config.hidden(d_in)
        if config.kind == "linear":
            self.inner = LinearBottleneck(d_in, d_out, hidden, config.activation)
        elif config.kind == "conformer":
            self.inner = ConformerBottleneck(d_in, d_out, hidden, config.kernel_size)
        else:
            raise UserError(f"unknown bottleneck kind {config.kind!r} (linear, conformer)")

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        source = y if self.reads_output else x
        return self.scale * self.inner(self.norm(source))


def _build_series(config: SeriesAdapterConfig, target: Target, base: nn.Module, model: nn.Module):
    width = output_dim(base)
    return BottleneckAdapter(width, width, config, reads_output=True)


def _build_parallel(config: ParallelAdapterConfig, target: Target, base: nn.Module, model: nn.Module):
    return BottleneckAdapter(input_dim(model, target, base), output_dim(base), config, reads_output=False)


register_method("series", SeriesAdapterConfig, _build_series)
register_method("parallel", ParallelAdapterConfig, _build_parallel)
