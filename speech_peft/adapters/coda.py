"""CoDA, conditional adapters (Lei et al., 2023): at each adapted block a router picks the top-k tokens (one in
``reduction``) that go through the frozen block; every token takes a light parallel adapter, and the
tokens left out skip the block's heavy attention and feed-forward. The block runs on k tokens instead
of T, so its cost falls by ``reduction`` (its attention by its square).

    out_i = x_i + adapter(x_i) + g_i [block(x_selected) - x_selected]_i     (g_i = 0 if i is not selected)

The selected tokens attend to each other only, at their own positions (the encoder added positions
before the first block). The router learns through the gate: ``g = 1 + s - stop_gradient(s)`` with
``s = sigmoid(router(x))`` is exactly 1 in the forward pass and passes the score's gradient back (a
straight-through top-k in place of the paper's soft top-k). With k = T every token is selected and the
block is the frozen block with a parallel adapter beside it (``ParallelAdapterConfig`` on the block).

The shipped configs leave the first block dense (``layers: "1-"``): routed from the first block on, most
tokens reach later frozen blocks without the processing those blocks were trained on, and on FSDD the
classifier fell from 97% to 66% (with the first block dense: see the recipe's RESULTS.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .bottleneck import BottleneckAdapter, BottleneckFields
from .dims import output_dim
from .registry import register_method
from .targeting import Target


@dataclass
class CoDAConfig(BottleneckFields):
    method = "coda"
    default_roles = ("block",)
    scale: float = 1.0
    reduction: int = 4          # one token in ``reduction`` goes through the frozen block
    router_init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.reduction < 1:
            raise ValueError(f"coda: reduction must be at least 1, got {self.reduction}")


class ConditionalAdapter(nn.Module):
    routes_base = True  # the site lets route() run the frozen block

    def __init__(self, width: int, config: CoDAConfig):
        super().__init__()
        self.reduction = config.reduction
        self.light = BottleneckAdapter(width, width, config, reads_output=False)
        self.router = nn.Linear(width, 1)
        nn.init.normal_(self.router.weight, std=config.router_init_std)
        nn.init.zeros_(self.router.bias)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # the light path, on every token
        return self.light(x, y)

    def selected(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(indices in time order (batch, k), gates (batch, k)) of the tokens the block processes."""
        scores = torch.sigmoid(self.router(x).squeeze(-1))                 # (batch, time)
        k = max(1, math.ceil(x.shape[1] / self.reduction))
        index = scores.topk(k, dim=1).indices.sort(dim=1).values
        chosen = scores.gather(1, index)
        return index, 1.0 + chosen - chosen.detach()

    def route(self, block: nn.Module, args: tuple, kwargs: dict, time_first: bool = False):
        x = args[0].transpose(0, 1) if time_first else args[0]              # (batch, time, width)
        batch, steps, width = x.shape
        index, gate = self.selected(x)
        gather = lambda t: t.gather(1, index.unsqueeze(-1).expand(-1, -1, width))  # noqa: E731
        picked = gather(x)
        # Per-token side inputs (a batch-first padding mask) follow their tokens.
        rest = [a.gather(1, index) if _per_token(a, batch, steps) else a for a in args[1:]]
        extra = {k: v.gather(1, index) if _per_token(v, batch, steps) else v for k, v in kwargs.items()}
        out = block(picked.transpose(0, 1) if time_first else picked, *rest, **extra)
        heavy = out[0] if isinstance(out, tuple) else out
        heavy = heavy.transpose(0, 1) if time_first else heavy
        update = (heavy - picked) * gate.unsqueeze(-1).to(heavy.dtype)
        merged = x.scatter_add(1, index.unsqueeze(-1).expand(-1, -1, width), update)
        merged = merged.transpose(0, 1) if time_first else merged
        return (merged, *out[1:]) if isinstance(out, tuple) else merged


def _per_token(value, batch: int, steps: int) -> bool:
    return isinstance(value, Tensor) and value.dim() == 2 and tuple(value.shape) == (batch, steps)


def _build(config: CoDAConfig, target: Target, base: nn.Module, model: nn.Module) -> ConditionalAdapter:
    if target.role != "block":
        raise ValueError("coda routes tokens around a whole block: target_roles must be [block]")
    return ConditionalAdapter(output_dim(base), config)


register_method("coda", CoDAConfig, _build)
