"""The placement fields every adapter config shares; each method subclasses it with its own knobs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar
from ..errors import UserError, dataclass_options


@dataclass
class AdapterConfig:
    """Where an adapter goes.

    target_modules: globs (``*.fc2``) or regexes (``re:.*layers\\.[0-3]\\.fc2``) over module names.
    target_roles: roles from the block layout (``attn.q``, ``attn.v``, ``attn``, ``ffn``, ``block``...).
    layers: layer indices within each layer stack: ``"0-5"``, ``"0,2,4"``, ``[0, 1]``, or None for all.
    stack: glob over layer-stack paths, e.g. ``"*encoder*"`` when a model has an encoder and a decoder.
    max_trainable_fraction: refuse an injection that would make more than this fraction trainable.
    """

    method: ClassVar[str] = ""
    default_roles: ClassVar[tuple[str, ...]] = ()

    target_modules: list[str] | None = None
    target_roles: list[str] | None = None
    layers: str | list[int] | None = None
    stack: str | None = None
    max_trainable_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AdapterConfig":
        values = {k: v for k, v in data.items() if k != "method"}
        for f in dataclasses.fields(cls):
            if f.name in values and str(f.type) in ("bool", "<class 'bool'>"):
                values[f.name] = parse_bool(values[f.name], f.name)
        return dataclass_options(cls, values, f"adapter ({cls.__name__})")


def parse_bool(value: Any, name: str = "flag") -> bool:
    """A real boolean from a config value: the string "False" must not become True."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise UserError(f"{name} must be true or false, got {value!r}")


def choose_task(tasks: list, task: str | None, method: str) -> tuple[list[str], str]:
    """(tasks, task) of a per-task method: names as strings, the first task when none is chosen."""
    tasks = [str(t) for t in tasks]
    task = tasks[0] if task is None else str(task)
    if task not in tasks:
        raise UserError(f"{method}: task {task!r} is not among its tasks {tasks}")
    return tasks, task
