"""Adapter methods by name: each method module registers its config class and a builder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import UnknownNameError, UserError
from .config import AdapterConfig
from .targeting import Target

# build(config, target, base_module, model) -> adapter module with forward(x, y) -> delta
Builder = Callable[[AdapterConfig, Target, nn.Module, nn.Module], nn.Module]


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type[AdapterConfig]
    build: Builder | None               # None: the method places no module (linear probe)
    accepts: Callable[[nn.Module], bool] = lambda module: True
    # After training: turn adapter ``name`` of the model into the ordinary adapter it equals (merge_mosa).
    finalize: Callable[[nn.Module, str], None] | None = None


METHODS: dict[str, Method] = {}


def register_method(name: str, config_class: type[AdapterConfig], build: Builder | None,
                    accepts: Callable[[nn.Module], bool] = lambda module: True,
                    finalize: Callable[[nn.Module, str], None] | None = None) -> None:
    if config_class.method != name:
        raise UserError(f"{config_class.__name__}.method is {config_class.method!r}, expected {name!r}")
    METHODS[name] = Method(name, config_class, build, accepts, finalize)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UnknownNameError(f"unknown adapter method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def shared_module(config: AdapterConfig, key: object, make: Callable[[], nn.Module]) -> tuple[nn.Module, bool]:
    """One module every site of an adapter uses (a hypernetwork), made on first request: ``(module, first)``.
    ``add_adapter`` hands builders a fresh copy of the config per call, so two adapters never share one;
    the site that asked first owns it (registers and saves it), the others only refer to it."""
    made = config.__dict__.setdefault("_shared_modules", {})
    first = key not in made
    if first:
        made[key] = make()
    return made[key], first


FULL_FINETUNE = "full"  # not a method: every weight of the model trains (the reference point adapters are held to)


def config_from_dict(data: dict) -> AdapterConfig:
    """Rebuild a method's config from its ``to_dict()`` form (as saved beside adapter weights)."""
    return get_method(data["method"]).config_class.from_dict(data)
