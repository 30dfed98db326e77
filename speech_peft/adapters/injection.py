"""The one injection mechanism: every adapter method adds a delta to the output of a wrapped module.

``add_adapter`` resolves a config to targets, wraps each target module in an ``AdapterSite`` and
puts the method's module inside it. A site computes ``y = base(x)`` and, for every active adapter,
adds ``adapter(x_read, y)``, where ``x_read`` is the site's own input or the output of a named
module earlier in the block (captured by a forward hook). With no adapter active a site returns the
base module's output untouched, so the model is bit-for-bit the base model.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UnknownNameError, UserError
from .config import AdapterConfig
from .registry import FULL_FINETUNE, config_from_dict, get_method
from .site import AdapterSite, sites, unwrap
from .targeting import Target, resolve_targets

_RECORDS_ATTR = "_speech_peft_adapters"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class AdapterBudgetError(UserError):
    """The adapter would make more of the model trainable than the configured budget allows."""


class AdapterMergeError(UserError):
    """The adapter cannot be folded into the base weights."""


@dataclass
class AdapterRecord:
    config: AdapterConfig
    targets: list[Target]


@dataclass
class AdapterReport:
    name: str
    method: str
    targets: list[Target]
    trainable_params: int
    total_params: int
    adapter_params: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / max(self.total_params, 1)

    def __str__(self) -> str:
        lines = [f"adapter {self.name!r} ({self.method}): {len(self.targets)} target(s)"]
        for t in self.targets:
            where = f" reading {t.read}" if t.read else ""
            role = f" [{t.role}]" if t.role else ""
            lines.append(f"  {t.write or '<model>'}{role}{where}")
        lines.append(f"trainable {self.trainable_params:,} of {self.total_params:,} "
                     f"({100 * self.trainable_fraction:.3f}%)")
        return "\n".join(lines)


def records(model: nn.Module) -> dict[str, AdapterRecord]:
    if _RECORDS_ATTR not in model.__dict__:
        model.__dict__[_RECORDS_ATTR] = {}
    return model.__dict__[_RECORDS_ATTR]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor counted once."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, total


def _site_at(model: nn.Module, path: str) -> AdapterSite:
    module = model.get_submodule(path) if path else model
    if isinstance(module, AdapterSite):
        return module
    if not path:
        raise UserError("the model itself cannot be an adapter target; target one of its modules")
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    site = AdapterSite(module)
    setattr(parent, child, site)
    return site


def add_adapter(model: nn.Module, config: AdapterConfig, name: str = "default",
                targets: list[Target] | None = None) -> AdapterReport:
    """Inject ``config``'s method as adapter ``name``, freeze everything else, activate it alone.

    ``targets`` skips resolution (used when reloading a saved adapter onto the exact same places).
    """
    if not _NAME.match(name):
        raise UserError(f"adapter name {name!r} must be an identifier (letters, digits, _ and -)")
    if name in records(model):
        raise UserError(f"the model already has an adapter named {name!r}")
    method = get_method(config.method)
    if targets is None:
        targets = resolve_targets(model, config, method.accepts) if method.build else []

    for p in model.parameters():
        p.requires_grad_(False)
    built: list[nn.Module] = []
    build_config = copy.copy(config)  # modules shared across sites (registry.shared_module) live on this copy
    for target in targets:
        base = unwrap(model.get_submodule(target.write) if target.write else model)
        adapter = method.build(build_config, target, base, model)
        reference = next(base.parameters(), None)
        reference = reference if reference is not None else next(model.parameters(), None)
        if reference is not None:  # adapters live where the frozen weights live, in their precision
            adapter.to(device=reference.device, dtype=reference.dtype)
        site = _site_at(model, target.write)
        site.adapters[name] = adapter
        site.reads[name] = target.read
        site.time_first[name] = target.time_first
        if target.read is not None and target.read not in site._hooks:
            reader = model.get_submodule(target.read)
            site._hooks[target.read] = reader.register_forward_hook(
                lambda _m, _i, out, site=site, read=target.read: site.capture(read, out))
        built.append(adapter)
    for adapter in built:
        for p in trainable_parameters(adapter):
            p.requires_grad_(True)
    records(model)[name] = AdapterRecord(config, list(targets))
    set_active_adapters(model, [name])

    trainable, total = count_parameters(model)
    report = AdapterReport(name, config.method, list(targets), trainable, total,
                           adapter_params=sum(p.numel() for a in built for p in a.parameters()))
    budget = config.max_trainable_fraction
    if budget is not None and report.trainable_fraction > budget:
        remove_adapter(model, name)
        raise AdapterBudgetError(f"adapter {name!r} ({config.method}) would train "
                                 f"{100 * report.trainable_fraction:.3f}% of the parameters, over the "
                                 f"budget of {100 * budget:.3f}%")
    return report



def attach_adapter(model: nn.Module, adapter: dict, name: str = "default") -> AdapterReport | None:
    """Place the method a plain config dict names (``{"method": "lora", ...}``, as configs and exports hold
    it); ``full`` is no adapter: every weight of ``model`` trains (and None is returned)."""
    adapter = copy.deepcopy(dict(adapter))
    if adapter.get("method") == FULL_FINETUNE:
        model.requires_grad_(True)
        return None
    return add_adapter(model, config_from_dict(adapter), name)

def set_active_adapters(model: nn.Module, names: list[str] | str | None) -> None:
    """Activate these adapters (their deltas are summed); ``None`` or ``[]`` gives the base model."""
    names = [names] if isinstance(names, str) else list(names or [])
    unknown = [n for n in names if n not in records(model)]
    if unknown:
        raise UnknownNameError(f"no adapter named {unknown}; the model has {sorted(records(model))}")
    for site in sites(model).values():
        site.active = tuple(n for n in names if n in site.adapters)
    model.__dict__["_speech_peft_active"] = tuple(names)


def active_adapters(model: nn.Module) -> tuple[str, ...]:
    return model.__dict__.get("_speech_peft_active", ())


def set_trainable_adapters(model: nn.Module, names: list[str]) -> None:
    """Make exactly these adapters' parameters trainable and freeze everything else."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        for module in adapter_modules(model, name).values():
            for p in trainable_parameters(module):
                p.requires_grad_(True)


def trainable_parameters(adapter: nn.Module) -> list[nn.Parameter]:
    """What of an adapter module trains: all its parameters, unless it says otherwise (MHR-z: routing only)."""
    own = getattr(adapter, "trainable_parameters", None)
    return list(own()) if own is not None else list(adapter.parameters())


def adapter_modules(model: nn.Module, name: str) -> dict[str, nn.Module]:
    """``{site path: adapter module}`` for adapter ``name``."""
    if name not in records(model):
        raise UnknownNameError(f"no adapter named {name!r}; the model has {sorted(records(model))}")
    return {path: site.adapters[name] for path, site in sites(model).items() if name in site.adapters}


def adapter_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    return [p for module in adapter_modules(model, name).values() for p in module.parameters()]


def replace_adapter_modules(model: nn.Module, name: str, modules: dict[str, nn.Module],
                            config: AdapterConfig) -> None:
    """Put ``modules`` (site path -> module) in place of adapter ``name``'s modules and record ``config`` as its
    method: how a trained adapter becomes the ordinary adapter it equals (``finalize_adapter``)."""
    site_map = sites(model)
    for path, module in modules.items():
        old = site_map[path].adapters[name]
        reference = next(old.parameters(), None)
        if reference is not None:
            module.to(device=reference.device, dtype=reference.dtype)
        site_map[path].adapters[name] = module.train(old.training)
    records(model)[name].config = config


def finalize_adapter(model: nn.Module, name: str) -> str:
    """After training: adapter ``name`` in its ordinary form where its method has one (MoSA merged, a
    hypernetwork's adapters generated, routing resolved); returns the method it now is."""
    record = records(model)[name]
    finalize = get_method(record.config.method).finalize
    if finalize is not None:
        finalize(model, name)
    return records(model)[name].config.method


def remove_adapter(model: nn.Module, name: str) -> None:
    """Take adapter ``name`` out; sites left empty give their base module back to its parent."""
    if name in merged_adapters(model):
        unmerge_adapter(model, name)
    for path, site in sites(model).items():
        if name not in site.adapters:
            continue
        del site.adapters[name]
        read = site.reads.pop(name)
        site.time_first.pop(name, None)
        if read is not None and read not in site.reads.values():
            site._hooks.pop(read).remove()
        site.active = tuple(n for n in site.active if n != name)
        if len(site.adapters) == 0:
            parent_path, _, child = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            setattr(parent, child, site.base)
    records(model).pop(name)
    model.__dict__["_speech_peft_active"] = tuple(n for n in active_adapters(model) if n != name)


def merged_adapters(model: nn.Module) -> set[str]:
    return {n for site in sites(model).values() for n in site.merged}


def merge_adapter(model: nn.Module, name: str) -> None:
    """Fold adapter ``name`` into the base weights (inference without the adapter's extra cost)."""
    placed = adapter_modules(model, name)
    site_map = sites(model)
    method = records(model)[name].config.method
    for path, adapter in placed.items():
        site = site_map[path]
        if name in site.merged:
            raise AdapterMergeError(f"adapter {name!r} is already merged")
        if not getattr(adapter, "can_fold", lambda base, read: False)(site.base, site.reads[name]):
            raise AdapterMergeError(
                f"adapter {name!r} ({method}) at {path} cannot be folded into the base weights exactly "
                "(series/parallel bottlenecks and other non-linear adapters must stay unmerged)")
    with torch.no_grad():
        for path, adapter in placed.items():
            adapter.fold(site_map[path].base, +1.0)
            site_map[path].merged.add(name)


def unmerge_adapter(model: nn.Module, name: str) -> None:
    """Subtract a merged adapter from the base weights again."""
    site_map = sites(model)
    with torch.no_grad():
        for path, adapter in adapter_modules(model, name).items():
            site = site_map[path]
            if name not in site.merged:
                raise AdapterMergeError(f"adapter {name!r} is not merged at {path}")
            adapter.fold(site.base, -1.0)
            site.merged.discard(name)
