"""Hyper-adapters (Baziotis et al., 2022) and Hyperformer (Karimi Mahabadi et al., 2021): one hypernetwork,
shared by every layer, generates each layer's parallel bottleneck adapter from learned embeddings of the
task (or language), the layer and the adapter's role in the block.

    I = LayerNorm(projector([task; layer; role]))          (hyper_dim values)
    down = G_down I / sqrt(d_in),   up = G_up I / sqrt(hidden)

The division is the hyper-adapters' rescaling: without it the generated weights have the scale of the
hypernetwork's outputs (about 1) rather than of an initialised layer (1 / sqrt(fan-in)), and training
diverges. The generator of the up projection starts at zero, so every generated adapter starts as the
identity. ``materialise_hyper`` writes the generated adapters of one task out as ordinary parallel
adapters (what ``finalize_adapter`` does after training): the same outputs, no hypernetwork to ship.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UserError
from .bottleneck import _ACTIVATIONS, BottleneckAdapter, BottleneckFields, ParallelAdapterConfig
from .config import choose_task
from .dims import input_dim, output_dim
from .injection import adapter_modules, records, replace_adapter_modules
from .registry import register_method, shared_module
from .targeting import Target, find_blocks


@dataclass
class HyperAdapterConfig(BottleneckFields):
    method = "hyper"
    default_roles = ("ffn",)
    scale: float = 4.0
    tasks: list[str] = field(default_factory=lambda: ["default"])  # tasks or languages it generates for
    task: str | None = None        # the one whose adapters run (default: the first)
    embedding_dim: int = 16        # task, layer and role embeddings
    projector_dim: int = 32
    hyper_dim: int = 4             # the generators' input: adapters live in a hyper_dim-dimensional family

    def __post_init__(self) -> None:
        self.tasks, self.task = choose_task(self.tasks, self.task, self.method)


class HyperNetwork(nn.Module):
    """Generates (down weight, down bias, up weight, up bias) for one adapter shape."""

    def __init__(self, d_in: int, d_out: int, hidden: int, layers: int, roles: list[str],
                 config: HyperAdapterConfig):
        super().__init__()
        self.shape, self.roles, self.tasks = (d_in, d_out, hidden), list(roles), list(config.tasks)
        e = config.embedding_dim
        self.task_embedding = nn.Embedding(len(self.tasks), e)
        self.layer_embedding = nn.Embedding(layers, e)
        self.role_embedding = nn.Embedding(len(self.roles), e)
        self.projector = nn.Sequential(nn.Linear(3 * e, config.projector_dim), nn.ReLU(),
                                       nn.Linear(config.projector_dim, config.hyper_dim),
                                       nn.LayerNorm(config.hyper_dim))
        self.down_weight = nn.Linear(config.hyper_dim, hidden * d_in)
        self.down_bias = nn.Linear(config.hyper_dim, hidden)
        self.up_weight = nn.Linear(config.hyper_dim, d_out * hidden)
        self.up_bias = nn.Linear(config.hyper_dim, d_out)
        for generator in (self.up_weight, self.up_bias):
            nn.init.zeros_(generator.weight)
            nn.init.zeros_(generator.bias)

    def forward(self, task: str, layer: int, role: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        d_in, d_out, hidden = self.shape
        device = self.task_embedding.weight.device
        index = lambda value: torch.tensor(value, device=device)  # noqa: E731
        key = torch.cat([self.task_embedding(index(self.tasks.index(task))),
                         self.layer_embedding(index(layer)), self.role_embedding(index(self.roles.index(role)))])
        code = self.projector(key)
        return (self.down_weight(code).view(hidden, d_in) / math.sqrt(d_in), self.down_bias(code),
                self.up_weight(code).view(d_out, hidden) / math.sqrt(hidden), self.up_bias(code))


class HyperAdapter(nn.Module):
    """A parallel bottleneck whose weights the shared hypernetwork generates for (task, layer, role)."""

    def __init__(self, hyper: HyperNetwork, owner: bool, layer: int, role: str, config: HyperAdapterConfig):
        super().__init__()
        if owner:  # registered (trained, saved) once, at the first site
            self.hyper = hyper
        else:
            object.__setattr__(self, "_shared_hyper", hyper)
        self.layer, self.role, self.task, self.scale = layer, role, config.task, config.scale
        self.act = _ACTIVATIONS[config.activation]()

    @property
    def hypernetwork(self) -> HyperNetwork:
        return self._modules["hyper"] if "hyper" in self._modules else self.__dict__["_shared_hyper"]

    def generate(self, task: str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.hypernetwork(task or self.task, self.layer, self.role)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        down, down_bias, up, up_bias = self.generate()
        return self.scale * F.linear(self.act(F.linear(x, down, down_bias)), up, up_bias)


def set_hyper_task(model: nn.Module, name: str, task: str) -> None:
    """Generate adapter ``name``'s weights for ``task`` from now on (one of the tasks it was built for)."""
    for module in adapter_modules(model, name).values():
        if task not in module.hypernetwork.tasks:
            raise UserError(f"adapter {name!r} generates for {module.hypernetwork.tasks}, not {task!r}")
        module.task = task
    records(model)[name].config.task = task


def materialise_hyper(model: nn.Module, name: str, task: str | None = None) -> None:
    """Replace hyper adapter ``name`` by the ordinary parallel adapters it generates for ``task`` (default:
    its current one); saved and loaded as ``parallel`` from then on."""
    record = records(model)[name]
    if not isinstance(record.config, HyperAdapterConfig):
        raise UserError(f"adapter {name!r} is {record.config.method}, not a hyper adapter")
    placed = adapter_modules(model, name)
    fields = {k: v for k, v in record.config.to_dict().items()
              if k in ParallelAdapterConfig.__dataclass_fields__ and k != "method"}
    config = ParallelAdapterConfig(**{**fields, "layer_norm": False,
                                      "bottleneck_dim": next(iter(placed.values())).hypernetwork.shape[2]})
    plain = {}
    with torch.no_grad():
        for path, module in placed.items():
            down, down_bias, up, up_bias = module.generate(task)
            plain[path] = BottleneckAdapter(down.shape[1], up.shape[0], config, reads_output=False)
            inner = plain[path].inner
            for param, value in ((inner.down.weight, down), (inner.down.bias, down_bias),
                                 (inner.up.weight, up), (inner.up.bias, up_bias)):
                param.copy_(value)
    replace_adapter_modules(model, name, plain, config)


def _build(config: HyperAdapterConfig, target: Target, base: nn.Module, model: nn.Module) -> HyperAdapter:
    if config.kind != "linear" or config.layer_norm:
        raise UserError("hyper adapters generate linear bottlenecks without a layer norm (kind=linear, "
                         "layer_norm=false)")
    d_in, d_out = input_dim(model, target, base), output_dim(base)
    hidden = config.hidden(d_in)
    layers = max((b.index for b in find_blocks(model)), default=0) + 1
    roles = list(config.target_roles or config.default_roles) + ["other"]
    hyper, owner = shared_module(config, (d_in, d_out, hidden),
                                 lambda: HyperNetwork(d_in, d_out, hidden, layers, roles, config))
    role = target.role if target.role in hyper.roles else "other"
    return HyperAdapter(hyper, owner, target.layer or 0, role, config)


register_method("hyper", HyperAdapterConfig, _build, finalize=materialise_hyper)
