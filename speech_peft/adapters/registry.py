"""Adapter methods by name: each method module registers its config class and a builder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

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


METHODS: dict[str, Method] = {}


def register_method(name: str, config_class: type[AdapterConfig], build: Builder | None,
                    accepts: Callable[[nn.Module], bool] = lambda module: True) -> None:
    if config_class.method != name:
        raise ValueError(f"{config_class.__name__}.method is {config_class.method!r}, expected {name!r}")
    METHODS[name] = Method(name, config_class, build, accepts)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown adapter method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def config_from_dict(data: dict) -> AdapterConfig:
    """Rebuild a method's config from its ``to_dict()`` form (as saved beside adapter weights)."""
    return get_method(data["method"]).config_class.from_dict(data)
