"""A disk cache of frozen-encoder states, keyed so it can never serve another encoder or other audio.

The key hashes the encoder's weight fingerprint together with the exact samples of the clip, so a
changed file, a different crop, an augmentation or another checkpoint all miss the cache. Entries
are safetensors files written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..adapters.io import frozen_fingerprint
from ..fileio import atomic_write


def encoder_key(encoder: nn.Module) -> str:
    """A short hash of the encoder's frozen weights (shapes and a sample of values per module)."""
    return hashlib.sha256(json.dumps(frozen_fingerprint(encoder), sort_keys=True).encode()).hexdigest()[:16]


class EncoderCache:
    def __init__(self, directory: str | os.PathLike, encoder: nn.Module):
        self.root = Path(directory) / encoder_key(encoder)
        self.root.mkdir(parents=True, exist_ok=True)
        self.encoder = encoder
        self.hits = self.misses = 0

    def _path(self, wave: Tensor) -> Path:
        digest = hashlib.sha256(wave.detach().to(torch.float32).cpu().contiguous().numpy().tobytes()).hexdigest()
        return self.root / digest[:2] / f"{digest}.safetensors"

    @torch.no_grad()
    def __call__(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder states (B, T, D) and their validity mask (B, T) for a padded batch."""
        states: list[Tensor | None] = []
        paths = [self._path(w[: int(n)]) for w, n in zip(waves, lengths)]
        for path in paths:
            states.append(load_file(path)["hidden"] if path.exists() else None)
        todo = [i for i, s in enumerate(states) if s is None]
        self.hits += len(paths) - len(todo)
        self.misses += len(todo)
        for i in todo:  # one clip at a time, so the stored states do not depend on the batch's padding
            n = int(lengths[i])
            hidden = self.encoder(waves[i:i + 1, :n], lengths[i:i + 1]).hidden[0].contiguous()
            atomic_write(paths[i], lambda tmp, hidden=hidden: save_file({"hidden": hidden.cpu()}, tmp))
            states[i] = hidden
        longest = max(s.shape[0] for s in states)
        hidden = torch.zeros(len(states), longest, states[0].shape[-1], device=waves.device)
        mask = torch.zeros(len(states), longest, dtype=torch.bool, device=waves.device)
        for i, s in enumerate(states):
            hidden[i, : s.shape[0]], mask[i, : s.shape[0]] = s.to(waves.device), True
        return hidden, mask
