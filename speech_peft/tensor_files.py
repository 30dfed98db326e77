"""Every safetensors file the package writes or reads: written atomically with a hash of its tensors in the
metadata, and read back only when whole, unchanged and finite.

safetensors checks its header and the data's extent, not the values: a flipped byte in the data loads as
a wrong weight (NaN encoder output, garbage transcripts) without a word. The hash (SHA-256 over each
tensor's name, dtype, shape and bytes) turns that into a one-line error naming the file. Files written
before the hash existed, or by other tools, have none; they are still refused when a value is not finite.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import UserError
from .fileio import atomic_write

HASH_KEY = "speech_peft_sha256"


class WeightsFileError(UserError):
    """A weights file that cannot be trusted: unreadable, damaged after it was written, or not finite."""


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{value.dtype}\0{list(value.shape)}\0".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (and string ``metadata``) to ``path`` atomically, with their hash."""
    stored = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    full = {"format": "pt", **(metadata or {}), HASH_KEY: tensors_hash(stored)}
    return atomic_write(path, lambda tmp: save_file(stored, tmp, metadata=full))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of ``path``, checked against their saved hash (when there is one) and for non-finite
    values; any problem is a ``WeightsFileError`` naming the file."""
    return load_tensors_and_metadata(path)[0]


def load_tensors_and_metadata(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for a damaged header or extent
        raise WeightsFileError(f"{path}: not a readable safetensors file, truncated or damaged ({err})") from None
    saved = metadata.get(HASH_KEY)
    if saved is not None and saved != tensors_hash(tensors):
        raise WeightsFileError(f"{path}: its tensors do not match the hash saved with them: the file was changed "
                               "or damaged after it was written; save or copy it again")
    for name, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise WeightsFileError(f"{path}: tensor {name!r} holds NaN or infinite values; these weights would "
                                   "give NaN outputs")
    return tensors, metadata
