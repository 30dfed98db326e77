"""A disk cache of frozen-encoder states, keyed so it can never serve another encoder or other audio.

The key hashes the encoder's weight fingerprint together with the exact samples of the clip, so a
changed file, a different crop, an augmentation or another checkpoint all miss the cache.

States are kept in tar shards in the WebDataset layout of ``speech-peft shard`` (one member
``<sample digest>.safetensors`` per clip) under ``DIR/<encoder key>/``, so a corpus of millions of clips
makes thousands of files, not millions. New states collect in memory and go to disk as one shard, written
atomically under a name no other writer uses, when ``items_per_shard`` have collected and at ``flush()``
(the tasks flush at the end of every epoch). Several processes can share a folder: each reads every shard
on disk and writes its own. A process killed before it flushes loses only states it can compute again.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from ..adapters.io import frozen_fingerprint
from ..errors import UserError
from ..fileio import atomic_write

SUFFIX = ".safetensors"


def encoder_key(encoder: nn.Module) -> str:
    """A short hash of the encoder's frozen weights (shapes and a sample of values per module)."""
    return hashlib.sha256(json.dumps(frozen_fingerprint(encoder), sort_keys=True).encode()).hexdigest()[:16]


class EncoderCache:
    def __init__(self, directory: str | os.PathLike, encoder: nn.Module, items_per_shard: int = 1000):
        if items_per_shard < 1:
            raise UserError(f"items_per_shard must be at least 1, got {items_per_shard}")
        self.root = Path(directory) / encoder_key(encoder)
        self.root.mkdir(parents=True, exist_ok=True)
        self.encoder, self.items_per_shard = encoder, items_per_shard
        self.hits = self.misses = 0
        self._where: dict[str, tuple[Path, int, int]] = {}  # digest -> (shard, data offset, size)
        self._scanned: set[str] = set()
        self._pending: dict[str, Tensor] = {}
        self.refresh()

    def refresh(self) -> None:
        """Index the shards written since the last look (by this process or another)."""
        for shard in sorted(self.root.glob("shard-*.tar")):
            if shard.name in self._scanned:
                continue
            try:
                with tarfile.open(shard, "r:") as tar:
                    for member in tar:
                        if member.isfile() and member.name.endswith(SUFFIX):
                            self._where[member.name[: -len(SUFFIX)]] = (shard, member.offset_data, member.size)
            except (tarfile.TarError, OSError) as error:
                raise UserError(f"{shard}: not a readable encoder-state shard ({error}); delete it and the "
                                 f"states it held are computed again") from None
            self._scanned.add(shard.name)

    def __len__(self) -> int:
        return len(self._where.keys() | self._pending.keys())

    @staticmethod
    def digest(wave: Tensor) -> str:
        return hashlib.sha256(wave.detach().to(torch.float32).cpu().contiguous().numpy().tobytes()).hexdigest()

    def _stored(self, digest: str) -> Tensor | None:
        if digest in self._pending:
            return self._pending[digest]
        if digest not in self._where:
            return None
        shard, offset, size = self._where[digest]
        with open(shard, "rb") as handle:
            handle.seek(offset)
            return load_bytes(handle.read(size))["hidden"]

    def flush(self) -> None:
        """Write the states collected so far as one shard."""
        if not self._pending:
            return
        shard = self.root / f"shard-{uuid.uuid4().hex}.tar"
        items = dict(self._pending)

        def write(tmp: str) -> None:
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for digest, hidden in items.items():
                    data = save_bytes({"hidden": hidden.contiguous().cpu()})
                    info = tarfile.TarInfo(digest + SUFFIX)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))

        atomic_write(shard, write)
        self._pending.clear()
        self.refresh()

    @torch.no_grad()
    def __call__(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder states (B, T, D) and their validity mask (B, T) for a padded batch."""
        digests = [self.digest(w[: int(n)]) for w, n in zip(waves, lengths)]
        states = [self._stored(d) for d in digests]
        todo = [i for i, s in enumerate(states) if s is None]
        self.hits += len(digests) - len(todo)
        self.misses += len(todo)
        for i in todo:  # one clip at a time, so the stored states do not depend on the batch's padding
            n = int(lengths[i])
            states[i] = self.encoder(waves[i:i + 1, :n], lengths[i:i + 1]).hidden[0].contiguous()
            self._pending[digests[i]] = states[i].cpu()
        if len(self._pending) >= self.items_per_shard:
            self.flush()
        longest = max(s.shape[0] for s in states)
        hidden = torch.zeros(len(states), longest, states[0].shape[-1], device=waves.device)
        mask = torch.zeros(len(states), longest, dtype=torch.bool, device=waves.device)
        for i, s in enumerate(states):
            hidden[i, : s.shape[0]], mask[i, : s.shape[0]] = s.to(waves.device), True
        return hidden, mask
