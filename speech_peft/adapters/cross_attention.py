"""Cross-attention adapter: a gated, pre-norm cross-attention sub-layer added inside a host block.

Queries come from the host block's output stream, keys and values from a memory given at call time
(``with adapter_memory(model, memory, mask): model(...)``), e.g. frozen Whisper encoder states
feeding a text decoder. The output is scaled by tanh(g) with g = 0 at first, so the host model is
unchanged until g moves (it gets the first gradient; the attention weights follow on the next step).
A projection maps the memory to the host width when the two differ.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from .config import AdapterConfig
from .dims import output_dim
from .site import sites
from .registry import register_method
from .targeting import Target


@dataclass
class CrossAttentionConfig(AdapterConfig):
    method = "cross_attention"
    default_roles = ("block",)

    memory_dim: int | None = None   # width of the memory; None: same as the host
    num_heads: int = 4
    dropout: float = 0.0


class CrossAttentionAdapter(nn.Module):
    def __init__(self, width: int, memory_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.memory_proj = nn.Linear(memory_dim, width) if memory_dim != width else nn.Identity()
        self.attn = nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)
        self.gate = nn.Parameter(torch.zeros(1))
        self.memory: Tensor | None = None
        self.memory_mask: Tensor | None = None  # (B, S), True where the memory is valid

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self.memory is None:
            raise RuntimeError("the cross-attention adapter needs a memory: call the model inside "
                               "`with adapter_memory(model, memory, mask):`")
        memory = self.memory_proj(self.memory)
        padding = None if self.memory_mask is None else ~self.memory_mask.bool()
        out, _ = self.attn(self.norm(y), memory, memory, key_padding_mask=padding, need_weights=False)
        return torch.tanh(self.gate) * out


@contextlib.contextmanager
def adapter_memory(model: nn.Module, memory: Tensor, mask: Tensor | None = None) -> Iterator[None]:
    """Give every cross-attention adapter in ``model`` this memory for the calls inside the block."""
    adapters = [a for site in sites(model).values() for a in site.adapters.values()
                if isinstance(a, CrossAttentionAdapter)]
    for adapter in adapters:
        adapter.memory, adapter.memory_mask = memory, mask
    try:
        yield
    finally:
        for adapter in adapters:
            adapter.memory = adapter.memory_mask = None


def _build(config: CrossAttentionConfig, target: Target, base: nn.Module, model: nn.Module):
    width = output_dim(base)
    return CrossAttentionAdapter(width, config.memory_dim or width, config.num_heads, config.dropout)


register_method("cross_attention", CrossAttentionConfig, _build)
