"""Trained models by export kind: ``load_model(EXPORT_DIR)`` reads ``export.json`` and hands the folder to
the loader registered for its kind, with no training framework involved. A model module registers its
loader (``register_model``); inference (``jobs/``, ``reports/``) finds models only through here."""
from __future__ import annotations

import importlib
import os
from typing import Any, Callable

from ..errors import UserError
from ..exports import read_export_info

# The package's own kinds and the module that registers each: imported when an export of that kind is
# loaded, so that loading one model does not import the others (the vocoders, torchaudio, the diffusion
# decoder: a fifth of a second before the first file).
BUILT_IN = {"whisper_ar": "speech_peft.models.whisper_ar", "whisper_adapter_fusion": "speech_peft.models.adapter_fusion",
            "diffusion_asr": "speech_peft.models.diffusion_asr", "classifier": "speech_peft.models.classifier",
            "restorer": "speech_peft.models.restorer"}
_LOADERS: dict[str, Callable[..., Any]] = {}


def register_model(kind: str, loader: Callable[..., Any]) -> None:
    """``loader(directory, **options)`` rebuilds a model from an export of ``kind``."""
    if kind in _LOADERS and _LOADERS[kind] is not loader:
        raise UserError(f"export kind {kind!r} is already registered")
    _LOADERS[kind] = loader


def model_kinds() -> tuple[str, ...]:
    return tuple(sorted(set(BUILT_IN) | set(_LOADERS)))


def load_model(directory: str | os.PathLike, kinds: str | tuple[str, ...] | None = None, **options: Any) -> Any:
    """The model exported in ``directory`` (of one of ``kinds`` when given), in eval mode."""
    kind = read_export_info(directory, kinds or model_kinds())["kind"]
    if kind not in _LOADERS:
        importlib.import_module(BUILT_IN[kind])
    return _LOADERS[kind](directory, **options)
