"""SparseAdapter (He et al., 2022): a parallel bottleneck adapter pruned at initialisation and trained with
its mask fixed; "Large-Sparse" widens the bottleneck so the kept weights number what a dense adapter has.

Saliency: ``snip`` scores each weight by |gradient x weight| on a few training batches (``snip_prune``,
which the classification task runs before its first step); the up projection starts at zero, so its
score is |gradient| alone. ``magnitude`` keeps the largest initial weights (the zero up projection is
pruned at random); ``random`` keeps a seeded random subset. Each matrix keeps the same fraction. The
masked weights are exact zeros, so the saved file stores only the kept values (``storage.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UserError
from .bottleneck import _ACTIVATIONS, BottleneckFields
from .dims import input_dim, output_dim
from .registry import register_method
from .targeting import Target


@dataclass
class SparseAdapterConfig(BottleneckFields):
    method = "sparse"
    default_roles = ("ffn",)
    scale: float = 4.0
    sparsity: float = 0.6                    # fraction of each matrix pruned
    saliency: Literal["snip", "magnitude", "random"] = "snip"
    large: bool = False                      # Large-Sparse: width / (1 - sparsity), same kept count as dense
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise UserError(f"sparsity {self.sparsity} must lie in [0, 1)")
        if self.saliency not in ("snip", "magnitude", "random"):
            raise UserError(f"unknown saliency {self.saliency!r} (snip, magnitude, random)")

    def hidden(self, width: int) -> int:
        dense = super().hidden(width)
        return round(dense / (1.0 - self.sparsity)) if self.large else dense


class SparseBottleneck(nn.Module):
    def __init__(self, d_in: int, d_out: int, config: SparseAdapterConfig):
        super().__init__()
        hidden = config.hidden(d_in)
        self.scale, self.sparsity, self.saliency = config.scale, config.sparsity, config.saliency
        self.down, self.up = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)
        self.act = _ACTIVATIONS[config.activation]()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.register_buffer("down_mask", torch.ones_like(self.down.weight, dtype=torch.bool))
        self.register_buffer("up_mask", torch.ones_like(self.up.weight, dtype=torch.bool))
        self.register_buffer("pruned", torch.tensor(False))
        self.scoring = False  # set by snip_prune while it measures saliency
        if config.saliency != "snip":
            generator = torch.Generator().manual_seed(config.seed)
            random_up = torch.rand(self.up.weight.shape, generator=generator)
            down = self.down.weight.abs() if config.saliency == "magnitude" else \
                torch.rand(self.down.weight.shape, generator=generator)
            self.prune(down, random_up)

    def prune(self, down_scores: Tensor, up_scores: Tensor) -> None:
        """Keep the top (1 - sparsity) of each matrix by score; zero the rest for good."""
        with torch.no_grad():
            for weight, mask, scores in ((self.down.weight, self.down_mask, down_scores),
                                         (self.up.weight, self.up_mask, up_scores)):
                keep = max(1, round((1.0 - self.sparsity) * scores.numel()))
                chosen = torch.zeros(scores.numel(), dtype=torch.bool, device=mask.device)
                chosen[scores.flatten().topk(keep).indices] = True
                mask.copy_(chosen.view_as(mask))
                weight.mul_(mask)
            self.pruned.fill_(True)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self.training and not self.scoring and not bool(self.pruned):
            raise RuntimeError("a SNIP sparse adapter must be pruned before training: call snip_prune(model, "
                               "batches, loss) first (the classification task does)")
        h = self.act(F.linear(x, self.down.weight * self.down_mask, self.down.bias))
        return self.scale * F.linear(h, self.up.weight * self.up_mask, self.up.bias)


def snip_prune(model: nn.Module, batches: Iterable, loss_of: Callable[[object], Tensor], steps: int = 4) -> int:
    """Prune every not-yet-pruned sparse adapter of ``model`` by SNIP saliency summed over ``steps`` batches;
    returns how many adapters were pruned."""
    waiting = [m for m in model.modules() if isinstance(m, SparseBottleneck) and not bool(m.pruned)]
    if not waiting:
        return 0
    weights = [w for m in waiting for w in (m.down.weight, m.up.weight)]
    scores = [torch.zeros_like(w) for w in weights]
    seen = 0
    for module in waiting:
        module.scoring = True
    try:
        for batch in batches:
            if batch is None:
                continue
            grads = torch.autograd.grad(loss_of(batch), weights, allow_unused=True)
            for i, (w, g) in enumerate(zip(weights, grads)):
                if g is not None:
                    scores[i] += (g * w).abs() if i % 2 == 0 else g.abs()  # up projections start at zero
            seen += 1
            if seen >= steps:
                break
    finally:
        for module in waiting:
            module.scoring = False
    if not seen:
        raise UserError("SNIP pruning needs at least one training batch")
    for k, module in enumerate(waiting):
        module.prune(scores[2 * k], scores[2 * k + 1])
    return len(waiting)


def _build(config: SparseAdapterConfig, target: Target, base: nn.Module, model: nn.Module) -> SparseBottleneck:
    return SparseBottleneck(input_dim(model, target, base), output_dim(base), config)


register_method("sparse", SparseAdapterConfig, _build)
