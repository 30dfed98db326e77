"""Prompt tuning (shallow and deep) and prefix tuning as gated extra attention.

Each adapted attention sublayer also attends, from its own frozen queries, to n learned entries:
prefix tuning learns the keys and values directly (per layer); prompt tuning learns n token vectors
that the frozen key/value projections turn into keys and values (shallow: first layer only; deep:
every layer). The extra attention gets its own softmax and a per-head gate tanh(g), g = 0 at first
(zero-init attention as in LLaMA-Adapter), then passes through the frozen output projection, so the
model is unchanged at initialisation while the gates, then the prompts, learn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UserError
from .config import AdapterConfig
from .registry import register_method
from .site import unwrap
from .targeting import AdapterTargetError, Target, find_blocks


@dataclass
class PromptTuningConfig(AdapterConfig):
    method = "prompt"
    default_roles = ("attn",)
    num_tokens: int = 10
    depth: Literal["shallow", "deep"] = "deep"

    def __post_init__(self) -> None:
        if self.depth not in ("shallow", "deep"):
            raise UserError(f"depth must be 'shallow' or 'deep', got {self.depth!r}")
        if self.depth == "shallow" and self.layers is None:
            self.layers = [0]


@dataclass
class PrefixTuningConfig(AdapterConfig):
    method = "prefix"
    default_roles = ("attn",)
    num_tokens: int = 10


class GatedExtraAttention(nn.Module):
    def __init__(self, host: dict[str, nn.Linear], num_heads: int, num_tokens: int, mode: str):
        super().__init__()
        width = host["q"].out_features
        self.num_heads, self.head_dim = num_heads, width // num_heads
        self._host = host  # frozen host linears: referenced, not registered (never saved with the adapter)
        self.mode = mode
        if mode == "prefix":
            self.prefix_keys = nn.Parameter(torch.randn(num_tokens, width) * 0.02)
            self.prefix_values = nn.Parameter(torch.randn(num_tokens, width) * 0.02)
        else:
            self.prompts = nn.Parameter(torch.randn(num_tokens, host["k"].in_features) * 0.02)
        self.gate = nn.Parameter(torch.zeros(num_heads))

    def _keys_values(self) -> tuple[Tensor, Tensor]:
        if self.mode == "prefix":
            return self.prefix_keys, self.prefix_values
        return self._host["k"](self.prompts), self._host["v"](self.prompts)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        b, t, _ = x.shape
        q = self._host["q"](x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = (z.view(-1, self.num_heads, self.head_dim).transpose(0, 1) for z in self._keys_values())
        scores = torch.einsum("bhtd,hnd->bhtn", q, k) / math.sqrt(self.head_dim)
        context = torch.einsum("bhtn,hnd->bhtd", scores.softmax(-1), v)
        context = context * torch.tanh(self.gate).view(1, -1, 1, 1)
        return F.linear(context.transpose(1, 2).reshape(b, t, -1), self._host["o"].weight)


def _build(mode: str):
    def build(config, target: Target, base: nn.Module, model: nn.Module) -> GatedExtraAttention:
        block = next((b for b in find_blocks(model) if b.path == target.block), None)
        if block is None or target.role != "attn" or not block.layout.attention:
            raise AdapterTargetError(f"{config.method} tuning needs the 'attn' role of a block whose layout "
                                     f"names its q/k/v/o projections (target {target.write})")
        host = {k: unwrap(block.module.get_submodule(path)) for k, path in block.layout.attention.items()}
        return GatedExtraAttention(host, block.layout.num_heads(block.module), config.num_tokens, mode)

    return build


register_method("prompt", PromptTuningConfig, _build("prompt"))
register_method("prefix", PrefixTuningConfig, _build("prefix"))
