"""Polytropon (Ponti et al., 2023) and multi-head routing, MHR (Caccia et al., 2023): each adapted linear layer
holds an inventory of ``skills`` LoRA modules, and a learned routing matrix (per task) mixes them into the
LoRA the task uses. MHR splits the LoRA's parameters into ``heads`` blocks (A along its input, B along
its output) and routes each block separately; ``heads=1`` is Poly.

    A_task[h] = sum_k w[task, h, k] A_k[h],   w[task, h] = normalised sigmoid(Z[task, h])

Variants for a new task, after multi-task training (the MHR paper's):
- ``adapt_routing`` (MHR-z): the new task gets its own routing row (started at the trained tasks' mean)
  and only routing logits train; the inventory stays frozen: the cheapest adaptation there is.
- ``average_routing`` (MHR-mu): routing is dropped for the uniform average of the inventory, one LoRA
  that then fine-tunes as plain LoRA.
``finalize_adapter`` resolves the routing of the current task into the one LoRA it gives (exact).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
import torch
from torch import Tensor, nn

from ..errors import UserError
from .config import AdapterConfig, choose_task
from .injection import adapter_modules, records, replace_adapter_modules, set_trainable_adapters
from .lora import LoRAConfig, LoRALinear
from .registry import register_method
from .targeting import Target


@dataclass
class PolyConfig(AdapterConfig):
    method = "poly"
    default_roles = ("attn.q", "attn.v")

    r: int = 4
    alpha: float = 8.0
    skills: int = 4                 # LoRA modules in each layer's inventory
    heads: int = 4                  # MHR's blocks (1: Poly)
    tasks: list[str] = field(default_factory=lambda: ["default"])
    task: str | None = None         # the task whose routing runs (default: the first)
    routing_only: bool = False      # MHR-z: the inventory is frozen (set by adapt_routing)

    def __post_init__(self) -> None:
        self.tasks, self.task = choose_task(self.tasks, self.task, self.method)


class PolyLoRA(nn.Module):
    def __init__(self, base: nn.Linear, config: PolyConfig):
        super().__init__()
        d_in, d_out, r, k, heads = base.in_features, base.out_features, config.r, config.skills, config.heads
        if d_in % heads or d_out % heads:
            raise UserError(f"poly: {heads} heads must divide the layer's widths {d_in} and {d_out}")
        self.heads, self.scale, self.tasks, self.task = heads, config.alpha / r, list(config.tasks), config.task
        # inventory: (skills, heads, block of the input, r) and (skills, heads, r, block of the output)
        self.skills_A = nn.Parameter(torch.empty(k, heads, d_in // heads, r))
        self.skills_B = nn.Parameter(torch.zeros(k, heads, r, d_out // heads))
        bound = 1.0 / math.sqrt(d_in)  # LoRA's kaiming-uniform bound for A
        nn.init.uniform_(self.skills_A, -bound, bound)
        self.routing_logits = nn.Parameter(torch.empty(len(self.tasks), heads, k).uniform_(-1e-3, 1e-3))
        self.routing_only = config.routing_only

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.routing_logits] if self.routing_only else list(self.parameters())

    def routing_weights(self, task: str | None = None) -> Tensor:
        """(heads, skills) mixing weights of ``task``: each head's weights sum to one."""
        probs = torch.sigmoid(self.routing_logits[self.tasks.index(task or self.task)])
        return probs / probs.sum(-1, keepdim=True)

    def task_lora(self, task: str | None = None, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The task's LoRA factors, A (r, d_in) and B (d_out, r), as nn.Linear weights hold them."""
        w = self.routing_weights(task) if weights is None else weights
        a = torch.einsum("hk,khir->hir", w, self.skills_A)       # (heads, d_in/heads, r)
        b = torch.einsum("hk,khro->hro", w, self.skills_B)       # (heads, r, d_out/heads)
        return a.reshape(-1, a.shape[-1]).T, b.permute(1, 0, 2).reshape(b.shape[1], -1).T

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        a, b = self.task_lora()
        return (x @ a.T) @ b.T * self.scale



def adapt_routing(model: nn.Module, name: str, task: str) -> None:
    """MHR-z: route Poly/MHR adapter ``name`` for ``task`` (a new one gets a routing row started at the mean of
    the trained tasks' logits) and train only routing from now on."""
    config = records(model)[name].config
    for module in adapter_modules(model, name).values():
        if task not in module.tasks:
            with torch.no_grad():
                row = module.routing_logits.mean(0, keepdim=True)
                module.routing_logits = nn.Parameter(torch.cat([module.routing_logits, row]))
            module.tasks.append(task)
        module.task, module.routing_only = task, True
    config.tasks = list(next(iter(adapter_modules(model, name).values())).tasks)
    config.task, config.routing_only = task, True
    set_trainable_adapters(model, [name])


def _lora_config(config: PolyConfig, rank: int) -> LoRAConfig:
    return LoRAConfig(target_modules=config.target_modules, target_roles=config.target_roles,
                      layers=config.layers, stack=config.stack, r=rank, alpha=config.alpha * rank / config.r)


def resolve_routing(model: nn.Module, name: str, task: str | None = None) -> None:
    """Replace Poly/MHR adapter ``name`` by the plain LoRA its routing gives ``task`` (default: its current
    one): the same outputs, saved and loaded as ``lora`` from then on."""
    _to_lora(model, name, lambda module: module.task_lora(task))


def average_routing(model: nn.Module, name: str) -> None:
    """MHR-mu: replace Poly/MHR adapter ``name`` by the plain LoRA that averages its inventory uniformly,
    to be fine-tuned as LoRA."""
    _to_lora(model, name, lambda module: module.task_lora(weights=torch.full_like(module.routing_logits[0],
                                                                                  1.0 / module.routing_logits.shape[2])))


def _to_lora(model: nn.Module, name: str, factors) -> None:
    record = records(model)[name]
    if not isinstance(record.config, PolyConfig):
        raise UserError(f"adapter {name!r} is {record.config.method}, not poly")
    config = _lora_config(record.config, record.config.r)
    plain = {}
    with torch.no_grad():
        for path, module in adapter_modules(model, name).items():
            a, b = factors(module)
            lora = LoRALinear(nn.Linear(a.shape[1], b.shape[0]), a.shape[0], config.scale, 0.0, "kaiming")
            lora.lora_A.weight.copy_(a)
            lora.lora_B.weight.copy_(b)
            plain[path] = lora
    replace_adapter_modules(model, name, plain, config)


def _build(config: PolyConfig, target: Target, base: nn.Module, model: nn.Module) -> PolyLoRA:
    return PolyLoRA(base, config)


register_method("poly", PolyConfig, _build, accepts=lambda m: isinstance(m, nn.Linear), finalize=resolve_routing)
