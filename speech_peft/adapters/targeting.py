"""Resolve an adapter config to concrete placements (which module to wrap, where to read its input)."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass
from typing import Callable

from torch import nn

from ..errors import UserError
from .config import AdapterConfig
from .layout import BlockLayout, layout_of
from .site import unwrap


class AdapterTargetError(UserError):
    """A target pattern or role selects nothing, or names something that cannot take the adapter."""


@dataclass(frozen=True)
class Target:
    write: str            # full name of the module whose output the adapter adds to
    read: str | None      # full name of the module whose output the adapter reads; None: write's input
    role: str | None = None
    block: str | None = None   # full name of the enclosing block, when there is one
    layer: int | None = None
    time_first: bool = False   # the site's tensors are (time, batch, ...): the adapter gets them transposed

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Block:
    path: str
    stack: str
    index: int
    module: nn.Module
    layout: BlockLayout


def find_blocks(model: nn.Module) -> list[Block]:
    """Every block of a known layout that sits in a ModuleList (a layer stack), in model order."""
    blocks = []
    for stack_name, stack in model.named_modules():
        if not isinstance(stack, nn.ModuleList):
            continue
        for index, block in enumerate(stack):
            block = unwrap(block)
            layout = layout_of(block)
            if layout is not None:
                path = f"{stack_name}.{index}" if stack_name else str(index)
                blocks.append(Block(path, stack_name, index, block, layout))
    return blocks


OPEN_END = 4096  # "n-" selects layers n, n+1, ... of every stack (no model here has this many)


def parse_layers(layers: str | list[int] | int | None) -> set[int] | None:
    if layers is None or layers == "all":
        return None
    if isinstance(layers, int):
        return {layers}
    if isinstance(layers, str):
        chosen: set[int] = set()
        for part in layers.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-")
                chosen.update(range(int(lo), int(hi) + 1 if hi.strip() else OPEN_END))  # "1-": layer 1 onwards
            elif part:
                chosen.add(int(part))
        return chosen
    return {int(i) for i in layers}


def _matcher(pattern: str) -> Callable[[str], bool]:
    if pattern.startswith("re:"):
        regex = re.compile(pattern[3:])
        return lambda name: regex.fullmatch(name) is not None
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def _selected_blocks(model: nn.Module, config: AdapterConfig) -> list[Block]:
    blocks = find_blocks(model)
    wanted = parse_layers(config.layers)
    if config.stack is not None:
        blocks = [b for b in blocks if fnmatch.fnmatchcase(b.stack, config.stack)]
    if wanted is not None:
        blocks = [b for b in blocks if b.index in wanted]
    return blocks


def resolve_targets(
    model: nn.Module,
    config: AdapterConfig,
    accept: Callable[[nn.Module], bool] = lambda m: True,
) -> list[Target]:
    """Placements for ``config`` on ``model``; ``accept`` filters modules the method can adapt."""
    restricted = config.layers is not None or config.stack is not None
    blocks = _selected_blocks(model, config)
    if restricted and not blocks:
        raise AdapterTargetError(
            f"layers={config.layers!r} stack={config.stack!r} select no layer; "
            f"layer stacks here: {sorted({b.stack for b in find_blocks(model)}) or 'none of a known layout'}"
        )
    targets: list[Target] = []
    fused_attention = {n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    site_internals = [f"{name}." for name, m in model.named_modules() if unwrap(m) is not m]

    for pattern in config.target_modules or []:
        match = _matcher(pattern)
        found = []
        for name, module in model.named_modules():
            if not name or not match(name) or not accept(unwrap(module)):
                continue
            owner = next((b for b in blocks if name == b.path or name.startswith(b.path + ".")), None)
            if restricted and owner is None:
                continue
            if any(name.startswith(prefix) for prefix in site_internals):
                continue  # the base module or adapters inside an existing site
            if name.rpartition(".")[0] in fused_attention:
                continue  # MultiheadAttention uses its out_proj's weight directly: a wrapper never runs
            found.append(Target(write=name, read=None, block=owner and owner.path, layer=owner and owner.index))
        if not found:
            raise AdapterTargetError(f"target pattern {pattern!r} matches no module that {config.method} can adapt"
                                     + _example_names(model))
        targets.extend(found)

    roles = config.target_roles
    if roles is None and not config.target_modules:
        roles = list(config.default_roles)
    for role in roles or []:
        if not blocks:
            raise AdapterTargetError(f"role {role!r} needs blocks of a known layout and this model has none "
                                     "(use target_modules, or register_layout for its block class)")
        for block in blocks:
            targets.append(_role_target(block, role, accept, config.method))

    unique = list(dict.fromkeys(targets))
    if not unique:
        raise AdapterTargetError(f"{config.method} config selects no target")
    return unique


def _role_target(block: Block, role: str, accept: Callable[[nn.Module], bool], method: str) -> Target:
    layout = block.layout
    kind = type(block.module).__name__

    def full(rel: str | None) -> str | None:
        if rel is None:
            return None
        return block.path if rel == "" else f"{block.path}.{rel}"

    if role in layout.linears:
        write, read = layout.linears[role], None
    elif role in layout.sublayers:
        write, read = layout.sublayers[role].write, layout.sublayers[role].read
    else:
        known = sorted([*layout.linears, *layout.sublayers])
        raise AdapterTargetError(f"role {role!r} does not exist in {kind} (roles: {', '.join(known)})")
    module = unwrap(block.module.get_submodule(write)) if write else block.module
    if not accept(module):
        raise AdapterTargetError(f"{method} cannot adapt role {role!r} of {kind} ({type(module).__name__})")
    return Target(write=full(write), read=full(read), role=role, block=block.path, layer=block.index,
                  time_first=role in layout.time_first_roles)


def _example_names(model: nn.Module, limit: int = 12) -> str:
    names = [n for n, _ in model.named_modules() if n][:limit]
    return f"; module names look like: {', '.join(names)}" if names else ""
