"""Training pairs for restoration: clean recordings degraded on the fly into (degraded, clean) crops."""
from __future__ import annotations

import random
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import UserError
from .audio import load_audio
from .dataset import process_share, training_epoch
from .degrade import DegradeConfig, Degrader
from .manifest import Entry, read_manifest


class DegradedPairs(Dataset):
    """(entry, degraded, clean) crops: clean audio degraded on the fly by a seeded ``Degrader``.

    Item ``draw`` is crop ``draw % len(self)`` of the list (``repeats`` crops per recording), cut and
    degraded by a generator seeded with ``draw`` itself: indices 0 .. len-1 give the same pairs on every
    visit (validation, so its losses compare), and ``EpochDraws`` hands training the indices of epoch e as
    ``e * len + i``, new pairs each epoch that depend on nothing but the seed and the epoch (not on worker
    processes, nor on whether the run was resumed).
    """

    def __init__(self, entries: list[Entry], degrade: DegradeConfig | None, seconds: float | None = 2.0,
                 seed: int = 0, sample_rate: int = 16000, repeats: int = 1):
        if not entries:
            raise UserError("no clean recordings to build degraded pairs from")
        self.entries, self.seconds, self.seed, self.sample_rate = entries, seconds, seed, sample_rate
        self.repeats = repeats  # crops per recording per epoch
        self.degrader = Degrader(degrade, sample_rate, seed) if degrade is not None else None
        self.waves: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.entries) * self.repeats

    def __getitem__(self, draw: int):
        index = draw % len(self) % len(self.entries)
        if index not in self.waves:
            self.waves[index] = load_audio(self.entries[index].audio, self.sample_rate)
        clean = self.waves[index]
        rng = random.Random(self.seed * 7919 + draw)
        if self.seconds is not None:
            n = int(self.seconds * self.sample_rate)
            if clean.shape[-1] > n:
                start = rng.randrange(0, clean.shape[-1] - n)
                clean = clean[start:start + n]
        degraded = self.degrader(clean, self.seed + draw) if self.degrader else clean
        return self.entries[index], degraded, clean


class EpochDraws(Sampler[int]):
    """Every item once per epoch in an order seeded by (seed, epoch), as draw numbers ``epoch * size + item``;
    Lightning calls ``set_epoch`` before each training epoch, a resumed fit included. Under data-parallel
    training each of the ``replicas`` processes yields its ``rank``-th slice of every global batch of
    ``batch_size * replicas`` draws (as ``LengthBucketSampler`` does)."""

    def __init__(self, size: int, seed: int = 0, batch_size: int = 1, replicas: int = 1, rank: int = 0):
        if not 0 <= rank < replicas:
            raise UserError(f"rank {rank} must lie in 0..{replicas - 1}")
        self.size, self.seed, self.epoch = size, seed, 0
        self.batch_size, self.replicas, self.rank = batch_size, replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def follow(self, trainer) -> None:
        """Take the epoch from ``trainer`` when iterated (see ``LengthBucketSampler.follow``)."""
        self._trainer = trainer

    def _draws(self) -> list[int]:
        if getattr(self, "_trainer", None) is not None:
            self.epoch = training_epoch(self._trainer)
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 1009 + self.epoch))
        draws = (self.epoch * self.size + order).tolist()
        if self.replicas == 1:
            return draws
        step = self.batch_size * self.replicas
        return [i for start in range(0, len(draws), step)
                for i in process_share(draws[start:start + step], draws, self.replicas, self.rank)[0]]

    def __len__(self) -> int:
        return len(self._draws())

    def __iter__(self):
        yield from self._draws()  # drawn at the first item, once the fit has restored its epoch


def collate_pairs(items):
    lengths = torch.tensor([c.shape[-1] for _, _, c in items])
    deg = torch.zeros(len(items), int(lengths.max()))
    clean = torch.zeros_like(deg)
    for i, (_, d, c) in enumerate(items):
        deg[i, : d.shape[-1]], clean[i, : c.shape[-1]] = d, c
    return [e.id for e, _, _ in items], deg, clean, lengths


class RestorationData(L.LightningDataModule):
    """Clean-recording manifests in, (degraded, clean) pairs out; degradations drawn on the fly."""

    def __init__(self, train: str, val: str | None = None, degrade: dict[str, Any] | None = None,
                 seconds: float = 2.0, batch_size: int = 8, seed: int = 0, repeats: int = 1, name: str = "restore"):
        """``name``: the dataset's name (experiment folders and results tables)."""
        super().__init__()
        self.name = name
        fields = {k: tuple(v) if isinstance(v, list) and not k.endswith("_files") else v
                  for k, v in (degrade or {}).items()}
        self.config = DegradeConfig(**fields)
        self.paths, self.seconds, self.batch_size, self.seed = {"train": train, "val": val}, seconds, batch_size, seed
        self.repeats = repeats  # crops of each recording per epoch (training and validation alike)

    def _loader(self, split: str) -> DataLoader:
        pairs = DegradedPairs(read_manifest(self.paths[split]), self.config, self.seconds,
                              seed=self.seed + (0 if split == "train" else 10_000), repeats=self.repeats)
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = EpochDraws(len(pairs), self.seed, self.batch_size, replicas, rank) if split == "train" else None
        if sampler is not None and trainer is not None:
            sampler.follow(trainer)
        return DataLoader(pairs, batch_size=self.batch_size, sampler=sampler, collate_fn=collate_pairs,
                          generator=torch.Generator().manual_seed(self.seed))  # never the global one: EpochSeed

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        if not self.paths["val"]:
            raise UserError("no validation manifest configured (data.val)")
        return self._loader("val")
