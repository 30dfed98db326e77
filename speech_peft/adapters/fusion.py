"""Task-ID-free combination of single-task adapters (Audio-AdapterFusion, AdapterHub's AdapterFusion).

``add_fusion(model, ["read", "far", "phone", "digits"], FusionConfig(kind=...))`` puts one combiner at
every site the fused adapters share; the site hands it the stacked deltas of those adapters
``(..., N, D)`` and adds what it returns. The adapters themselves are frozen and never changed.

Combiners, per site (per layer), each weighting adapters per utterance (or per frame) in a batch:

- ``attention``: AdapterFusion. Query from the sublayer's output, keys and values from each adapter's
  delta, softmax over adapters; the value projection starts at the identity (regularise towards it
  with ``value_regulariser``) and the temperature can be annealed (``set_temperature``).
- ``router``: the masked mean of the layer's state (what the adapters read) -> softmax over adapters, zero-initialised, so
  training starts from the plain average; ``hard`` uses the top-1 adapter at inference.
- ``task``: predicted-task routing. A small task classifier on the state the first fused site's
  adapters read (early encoder states) gives one distribution over adapters for the whole utterance, shared by every site;
  it trains on the task labels that exist at training time (``task_logits`` for the loss).
- ``oracle``: the caller names each utterance's adapter (``set_routing``): routing by task ID, the upper
  reference the task-ID-free combiners are measured against.
- ``average``: fixed equal weights (output averaging, no parameters).

``base_expert`` (attention and router) adds the frozen model itself as one more expert: a delta of zero,
the last of the weights, so an utterance no adapter helps can be left as the base model hears it.

The per-utterance weights each site used in the last forward are kept (``fusion_weights``), for
plots per layer and per task.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import UnknownNameError, UserError
from .site import sites

KINDS = ("attention", "router", "task", "oracle", "average")
BASE_EXPERT_KINDS = ("attention", "router")
BASE = "base"  # the frozen model as an expert: the name of its column in the weights
_CONTEXT = "_speech_peft_fusion"


@dataclass
class FusionConfig:
    kind: Literal["attention", "router", "task", "oracle", "average"] = "attention"
    temperature: float = 1.0   # attention: softmax temperature (anneal with set_temperature)
    hard: bool = False         # router / task: top-1 adapter at inference (eval mode)
    classifier_hidden: int = 64  # task: hidden width of the task classifier
    base_expert: bool = False  # attention / router: "no adapter" (the frozen model) is one more expert, the last

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"unknown fusion kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.base_expert and self.kind not in BASE_EXPERT_KINDS:
            raise UserError(f"base_expert is for the {' and '.join(BASE_EXPERT_KINDS)} fusions, which learn when to "
                            f"leave an utterance alone; a {self.kind} fusion's weights are over its adapters only")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FusionContext:
    """What a forward pass shares between the sites of one fusion."""

    names: tuple[str, ...]
    base_expert: bool = False
    mask: Tensor | None = None        # (B, T) True on real frames: set by the caller before a forward
    routing: Tensor | None = None     # (B, N) caller-given weights (oracle)
    predicted: Tensor | None = None   # (B, N) the task classifier's weights for this forward
    task_logits: Tensor | None = None
    weights: dict[str, Tensor] = field(default_factory=dict)  # site -> (B, N) weights used last


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """(B, T, D) -> (B, D), over the frames ``mask`` marks real (all of them without a mask)."""
    if mask is None or mask.shape[1] != x.shape[1]:
        return x.mean(dim=1)
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def _top1(weights: Tensor) -> Tensor:
    return torch.nn.functional.one_hot(weights.argmax(-1), weights.shape[-1]).to(weights.dtype)


class Combiner(nn.Module):
    """``weights(state, y)``: per-utterance weights (B, N) over the adapters, which the site mixes
    (running each adapter only where it has weight); or None, and ``forward(state, y, deltas)`` combines
    the stacked deltas (B, T, N, D) itself."""

    def __init__(self, context: FusionContext, path: str):
        super().__init__()
        self.__dict__["context"] = context  # shared, not a submodule
        self.path = path

    def record(self, weights: Tensor) -> Tensor:
        self.context.weights[self.path] = weights.detach()
        return weights


class AttentionFusion(Combiner):
    def __init__(self, context: FusionContext, path: str, dim: int, config: FusionConfig):
        super().__init__(context, path)
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
        for projection in (self.query, self.key):
            nn.init.normal_(projection.weight, std=0.01)
            nn.init.zeros_(projection.bias)
        nn.init.eye_(self.value.weight)
        self.temperature = config.temperature

    def weights(self, x: Tensor, y: Tensor) -> None:
        return None  # per frame, from the deltas themselves

    def forward(self, x: Tensor, y: Tensor, deltas: Tensor) -> Tensor:
        if self.context.base_expert:  # the frozen model's own delta: none
            deltas = torch.cat([deltas, deltas.new_zeros(deltas[..., :1, :].shape)], dim=-2)
        scores = torch.einsum("btd,btnd->btn", self.query(y), self.key(deltas)) / math.sqrt(y.shape[-1])
        weights = torch.softmax(scores / self.temperature, dim=-1)  # per frame
        self.context.weights[self.path] = masked_mean(weights.detach(), self.context.mask)
        return torch.einsum("btn,btnd->btd", weights, self.value(deltas))

    def value_regulariser(self) -> Tensor:
        """||V - I||^2: keeps the value projection near the identity, as AdapterFusion does."""
        eye = torch.eye(self.value.weight.shape[0], device=self.value.weight.device, dtype=self.value.weight.dtype)
        return (self.value.weight - eye).square().sum()


class UtteranceRouter(Combiner):
    def __init__(self, context: FusionContext, path: str, dim: int, config: FusionConfig):
        super().__init__(context, path)
        self.gate = nn.Linear(dim, len(context.names) + context.base_expert)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.hard = config.hard

    def weights(self, x: Tensor, y: Tensor) -> Tensor:
        weights = torch.softmax(self.gate(masked_mean(x, self.context.mask)), dim=-1)
        return self.record(_top1(weights) if self.hard and not self.training else weights)


class TaskClassifier(nn.Module):
    def __init__(self, dim: int, tasks: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, tasks))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.net(masked_mean(x, mask))


class TaskRouting(Combiner):
    """Every site mixes with the utterance's predicted task; the first site (``classifier``) predicts it."""

    def __init__(self, context: FusionContext, path: str, dim: int, config: FusionConfig, first: bool):
        super().__init__(context, path)
        self.classifier = TaskClassifier(dim, len(context.names), config.classifier_hidden) if first else None
        self.hard = config.hard

    def weights(self, x: Tensor, y: Tensor) -> Tensor:
        if self.classifier is not None:
            self.context.task_logits = self.classifier(x, self.context.mask)
            weights = torch.softmax(self.context.task_logits, dim=-1)
            self.context.predicted = _top1(weights) if self.hard and not self.training else weights
        if self.context.predicted is None or self.context.predicted.shape[0] != x.shape[0]:
            raise RuntimeError(f"{self.path}: task routing runs before its classifier's site did")
        return self.record(self.context.predicted)


class OracleRouting(Combiner):
    def weights(self, x: Tensor, y: Tensor) -> Tensor:
        routing, count = self.context.routing, len(self.context.names)
        if routing is None or routing.shape != (x.shape[0], count):
            raise UserError(f"oracle routing needs set_routing(model, ...) with one row of {count} "
                             f"weights per utterance (batch of {x.shape[0]})")
        return self.record(routing.to(x.device))


class AverageFusion(Combiner):
    def weights(self, x: Tensor, y: Tensor) -> Tensor:
        count = len(self.context.names)
        return self.record(torch.full((x.shape[0], count), 1.0 / count, device=x.device))


def _fusion_sites(model: nn.Module, names: tuple[str, ...]) -> dict[str, object]:
    shared = {path: site for path, site in sites(model).items() if all(n in site.adapters for n in names)}
    if not shared:
        raise UserError(f"adapters {list(names)} share no site: fuse adapters placed at the same modules")
    if any(site.time_first.get(n) for site in shared.values() for n in names):
        raise UserError("fusion reads (batch, time, ...) states; these adapters sit in a time-first model")
    return shared


def average_adapters(model: nn.Module, names: list[str], new_name: str) -> None:
    """A new adapter whose weights are the mean of ``names``' (same method and places): the weight-space
    average, a baseline that needs no training and no routing. Of one adapter, it is a copy."""
    from .injection import adapter_modules, add_adapter, records

    kinds = {(repr(records(model)[n].config.to_dict()), repr(records(model)[n].targets)) for n in names}
    if len(kinds) != 1:
        raise UserError(f"adapters {names} differ in method or placement; only like adapters average")
    first = records(model)[names[0]]
    add_adapter(model, first.config, new_name, targets=list(first.targets))
    placed = {n: adapter_modules(model, n) for n in names}
    with torch.no_grad():
        for path, module in adapter_modules(model, new_name).items():
            for key, value in module.state_dict().items():
                value.copy_(torch.stack([placed[n][path].state_dict()[key].float() for n in names]).mean(0))


def _widths(adapter: nn.Module) -> tuple[int, int]:
    """(what the adapter reads, what it writes): its first and last projections' widths."""
    linears = [m for m in adapter.modules() if isinstance(m, (nn.Linear, nn.Conv1d))]
    if not linears:
        raise UserError(f"cannot tell the widths of a {type(adapter).__name__} adapter for fusion")
    first, last = linears[0], linears[-1]
    width_in = first.in_features if isinstance(first, nn.Linear) else first.in_channels
    width_out = last.out_features if isinstance(last, nn.Linear) else last.out_channels
    return width_in, width_out


def add_fusion(model: nn.Module, names: list[str], config: FusionConfig = FusionConfig(),
               name: str = "fusion") -> int:
    """Place a combiner of adapters ``names`` at every site they share, freeze everything but the
    combiners, and activate the fusion alone; returns the combiners' parameter count."""
    names = tuple(names)
    if len(names) < 2:
        raise UserError("a fusion combines at least two adapters")
    if name in fusions(model):
        raise UserError(f"the model already has a fusion named {name!r}")
    context = FusionContext(names, base_expert=config.base_expert)
    built = []
    for index, (path, site) in enumerate(_fusion_sites(model, names).items()):
        width_in, width_out = _widths(site.adapters[names[0]])
        combiner = {"attention": lambda: AttentionFusion(context, path, width_out, config),
                    "router": lambda: UtteranceRouter(context, path, width_in, config),
                    "task": lambda: TaskRouting(context, path, width_in, config, first=index == 0),
                    "oracle": lambda: OracleRouting(context, path),
                    "average": lambda: AverageFusion(context, path)}[config.kind]()
        reference = next(site.base.parameters(), None)
        if reference is not None:
            combiner.to(device=reference.device, dtype=reference.dtype)
        site.combiners[name] = combiner
        site.fused[name] = names
        built.append(combiner)
    fusions(model)[name] = (config, context)
    for p in model.parameters():
        p.requires_grad_(False)
    for combiner in built:
        for p in combiner.parameters():
            p.requires_grad_(True)
    set_active_fusion(model, name)
    return sum(p.numel() for c in built for p in c.parameters())


def fusions(model: nn.Module) -> dict[str, tuple[FusionConfig, FusionContext]]:
    if _CONTEXT not in model.__dict__:
        model.__dict__[_CONTEXT] = {}
    return model.__dict__[_CONTEXT]


def set_active_fusion(model: nn.Module, name: str | None) -> None:
    """Route through fusion ``name`` (its adapters are then used only through it); None turns it off."""
    if name is not None and name not in fusions(model):
        raise UnknownNameError(f"no fusion named {name!r}; the model has {sorted(fusions(model))}")
    for site in sites(model).values():
        site.active_fusion = name if name in site.combiners else None
    model.__dict__["_speech_peft_active_fusion"] = name


def active_fusion(model: nn.Module) -> FusionContext | None:
    name = model.__dict__.get("_speech_peft_active_fusion")
    return fusions(model)[name][1] if name else None


def fusion_parameters(model: nn.Module, name: str = "fusion") -> list[nn.Parameter]:
    return [p for site in sites(model).values() if name in site.combiners for p in site.combiners[name].parameters()]


def combiners(model: nn.Module, name: str = "fusion") -> dict[str, Combiner]:
    return {path: site.combiners[name] for path, site in sites(model).items() if name in site.combiners}


def set_mask(model: nn.Module, mask: Tensor | None) -> None:
    """Which frames are real, for the utterance means of routers and weight records: (B, T) or None."""
    for _, context in fusions(model).values():
        context.mask = mask


def set_routing(model: nn.Module, routing: Tensor | None) -> None:
    """Oracle routing: (B, N) weights per utterance (one-hot rows route by task ID)."""
    for _, context in fusions(model).values():
        context.routing = routing


def fusion_weights(model: nn.Module) -> dict[str, Tensor]:
    """``{site path: (B, N)}``: the per-utterance weights over adapters each site used in the last forward (with a
    base expert, N + 1: its weight last)."""
    context = active_fusion(model)
    return dict(context.weights) if context else {}


def task_logits(model: nn.Module) -> Tensor | None:
    context = active_fusion(model)
    return context.task_logits if context else None


def set_temperature(model: nn.Module, temperature: float, name: str = "fusion") -> None:
    for combiner in combiners(model, name).values():
        if isinstance(combiner, AttentionFusion):
            combiner.temperature = temperature


def value_regulariser(model: nn.Module, name: str = "fusion") -> Tensor:
    terms = [c.value_regulariser() for c in combiners(model, name).values() if isinstance(c, AttentionFusion)]
    return torch.stack(terms).sum() if terms else torch.zeros(())
