"""Trained models by export kind: ``load_model(EXPORT_DIR)`` reads ``export.json`` and hands the folder to
the loader registered for its kind, with no training framework involved. A model module registers its
loader (``register_model``); inference (``jobs/``, ``reports/``) finds models only through here."""
from __future__ import annotations

import os
from typing import Any, Callable

from ..errors import UserError
from ..exports import read_export_info

_LOADERS: dict[str, Callable[..., Any]] = {}


def register_model(kind: str, loader: Callable[..., Any]) -> None:
    """``loader(directory, **options)`` rebuilds a model from an export of ``kind``."""
    if kind in _LOADERS and _LOADERS[kind] is not loader:
        raise UserError(f"export kind {kind!r} is already registered")
    _LOADERS[kind] = loader


def model_kinds() -> tuple[str, ...]:
    return tuple(sorted(_LOADERS))


def load_model(directory: str | os.PathLike, kinds: str | tuple[str, ...] | None = None, **options: Any) -> Any:
    """The model exported in ``directory`` (of one of ``kinds`` when given), in eval mode."""
    kind = read_export_info(directory, kinds or model_kinds())["kind"]
    return _LOADERS[kind](directory, **options)
