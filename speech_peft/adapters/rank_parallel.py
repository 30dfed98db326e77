"""LoRA that data-parallel ranks train apart and merge into the weight: HD-PiSSA and LTE.

- HD-PiSSA (Wang et al., 2025): each of the D ranks holds a different slice of the frozen weight's principal
  components (rank d: singular triplets d*r ... (d+1)*r - 1, PiSSA-initialised), so the slices are
  orthogonal; after every optimiser step the ranks' weight updates are summed into the weight, which thus
  moves in D*r directions per step where data-parallel LoRA moves in r.
- LTE, LoRA-the-Explorer (Huh et al., 2024): each rank trains its own randomly initialised LoRA head on its
  shard of the data; every ``merge_every`` steps the heads' updates are averaged into the weight.

Each rank's adapter keeps its own factors (A, B), the factors at the last merge (A0, B0) and the merged
update M: the layer computes ``W x + M x + s (B A - B0 A0) x``. A merge all-reduces every rank's
``s (B A - B0 A0)``, adds the sum (or mean) to M and sets A0, B0 to A, B; between merges each rank's
model differs only by its own unmerged steps. These factors are rank-local: they are kept out of DDP's
gradient averaging and buffer broadcast (``RankParallelSync`` in ``tasks/callbacks.py`` does it, and
runs the merges). M is a full-rank matrix: the saved adapter holds it (d_out x d_in per layer).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import UserError
from .config import AdapterConfig
from .registry import register_method
from .site import sites
from .targeting import Target


@dataclass
class HDPiSSAConfig(AdapterConfig):
    method = "hd_pissa"
    default_roles = ("attn.q", "attn.v")
    r: int = 8
    alpha: float = 8.0
    merge_every: int = 1           # steps between merges (the method merges every step)
    lr_scale: float = 0.1          # principal-component factors are large: Adam's step is relative to them
    reduce = "sum"


@dataclass
class LTEConfig(AdapterConfig):
    method = "lte"
    default_roles = ("attn.q", "attn.v")
    r: int = 8
    alpha: float = 16.0
    merge_every: int = 10
    seed: int = 0
    lr_scale: float = 1.0
    reduce = "mean"


class RankLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, config: HDPiSSAConfig | LTEConfig):
        super().__init__()
        if config.r < 1 or config.r > min(base.in_features, base.out_features):
            raise UserError(f"{config.method}: rank {config.r} must lie in 1..{min(base.in_features, base.out_features)}")
        self.kind, self.scale, self.reduce = config.method, config.alpha / config.r, config.reduce
        self.merge_every, self.seed = config.merge_every, getattr(config, "seed", 0)
        self.lr_scale = config.lr_scale
        self.decay = config.method != "hd_pissa"  # decaying principal factors would shrink the weight itself
        self.lora_A = nn.Linear(base.in_features, config.r, bias=False)
        self.lora_B = nn.Linear(config.r, base.out_features, bias=False)
        self.register_buffer("ref_A", torch.zeros_like(self.lora_A.weight))
        self.register_buffer("ref_B", torch.zeros_like(self.lora_B.weight))
        self.register_buffer("merged", torch.zeros(base.out_features, base.in_features))
        self.assign(base.weight, rank=0, world=1)

    def assign(self, weight: Tensor, rank: int, world: int) -> None:
        """This rank's starting factors for the current weight (``weight`` + merged); the layer's function
        does not change (A0, B0 start equal to A, B)."""
        r = self.lora_A.out_features
        with torch.no_grad():
            if self.kind == "hd_pissa":
                if world * r > min(weight.shape):
                    raise UserError(f"hd_pissa: {world} ranks x rank {r} exceed the {min(weight.shape)} "
                                     "principal components of the layer")
                u, s, vh = torch.linalg.svd((weight.float() + self.merged.float()), full_matrices=False)
                part = slice(rank * r, (rank + 1) * r)
                root = (s[part] / self.scale).sqrt()
                self.lora_A.weight.copy_(root[:, None] * vh[part])
                self.lora_B.weight.copy_(u[:, part] * root[None, :])
            else:
                generator = torch.Generator().manual_seed(self.seed * 1000 + rank)
                bound = 1.0 / math.sqrt(self.lora_A.in_features)
                self.lora_A.weight.copy_(torch.rand(self.lora_A.weight.shape, generator=generator) * 2 * bound - bound)
                self.lora_B.weight.zero_()
            self.ref_A.copy_(self.lora_A.weight)
            self.ref_B.copy_(self.lora_B.weight)

    def local_update(self) -> Tensor:
        """This rank's weight update since the last merge."""
        return self.scale * (self.lora_B.weight @ self.lora_A.weight - self.ref_B @ self.ref_A)

    def absorb(self, total: Tensor) -> None:
        with torch.no_grad():
            self.merged.add_(total)
            self.ref_A.copy_(self.lora_A.weight)
            self.ref_B.copy_(self.lora_B.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        own = self.lora_B(self.lora_A(x)) - nn.functional.linear(nn.functional.linear(x, self.ref_A), self.ref_B)
        return nn.functional.linear(x, self.merged) + self.scale * own

    def delta_weight(self) -> Tensor:
        return self.merged + self.local_update()

    def can_fold(self, base: nn.Module, read: str | None) -> bool:
        return read is None and isinstance(base, nn.Linear)

    def fold(self, base: nn.Linear, sign: float) -> None:
        base.weight.add_(sign * self.delta_weight().to(base.weight.dtype))


def rank_parallel_layers(model: nn.Module) -> list[tuple[nn.Module, RankLoRALinear]]:
    """(frozen linear, adapter) for every rank-parallel adapter of ``model``."""
    return [(site.base, module) for site in sites(model).values() for module in site.adapters.values()
            if isinstance(module, RankLoRALinear)]


def clip_gradients(model: nn.Module, max_norm: float) -> None:
    """Gradient-norm clipping that keeps data-parallel replicas equal: the parameters every rank shares (their
    gradients already averaged by DDP) are clipped by their own norm, the same on every rank, and each rank's
    own factors by theirs. One norm over both would scale the shared gradients differently on each rank, and
    the replicas would drift apart step by step."""
    local = {id(p) for _, module in rank_parallel_layers(model) for p in module.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    for group in ([p for p in trainable if id(p) not in local], [p for p in trainable if id(p) in local]):
        if group:
            torch.nn.utils.clip_grad_norm_(group, max_norm)


def assign_ranks(model: nn.Module, rank: int, world: int) -> int:
    """Give this process its rank's factors (HD-PiSSA: its principal slice; LTE: its own head)."""
    layers = rank_parallel_layers(model)
    for base, module in layers:
        module.assign(base.weight, rank, world)
    return len(layers)


def merge_rank_updates(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """Merge every rank's update into every rank's weight (all-reduce when a process group runs);
    returns (this rank's update, the merged update) per layer."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    world = dist.get_world_size() if distributed else 1
    merged = []
    for _, module in rank_parallel_layers(model):
        local = module.local_update().detach()
        total = local.clone()
        if distributed:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        if module.reduce == "mean":
            total /= world
        module.absorb(total)
        merged.append((local, total))
    return merged


def _build(config, target: Target, base: nn.Module, model: nn.Module) -> RankLoRALinear:
    return RankLoRALinear(base, config)


register_method("hd_pissa", HDPiSSAConfig, _build, accepts=lambda m: isinstance(m, nn.Linear))
register_method("lte", LTEConfig, _build, accepts=lambda m: isinstance(m, nn.Linear))
