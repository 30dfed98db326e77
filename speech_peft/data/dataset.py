"""Datasets and batching over manifest entries: padded waveforms with lengths, length buckets."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Sampler

from .audio import MAX_SECONDS, AudioError, load_audio
from .manifest import Entry
from .rejects import Rejects


@dataclass
class Batch:
    ids: list[str]
    waveforms: torch.Tensor   # (B, samples), zero-padded
    lengths: torch.Tensor     # (B,) valid samples
    texts: list[str | None]
    labels: list[str | None]
    tasks: list[str | None] | None = None  # the manifest's task field (multi-task training, oracle routing)

    def __len__(self) -> int:
        return len(self.ids)


class AudioDataset(Dataset):
    """Reads each entry's audio on access. ``require_text`` makes a missing transcript a bad input.

    Bad inputs raise ``AudioError``; with ``skip_bad`` they come back as None, are logged and written
    to the rejects file, and ``collate`` leaves them out.
    """

    def __init__(self, entries: list[Entry], sample_rate: int = 16000, require_text: bool = False,
                 skip_bad: bool = False, rejects_path=None, max_seconds: float = MAX_SECONDS,
                 transform=None, cache: bool = False):
        self.entries = entries
        self.sample_rate = sample_rate
        self.require_text = require_text
        self.skip_bad = skip_bad
        self.rejects = Rejects(rejects_path)
        self.max_seconds = max_seconds
        self.transform = transform  # e.g. an on-the-fly degradation: (wave, index) -> wave
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None  # small corpora: decode once

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, draw: int):
        """Item ``draw % len``; the transform gets ``draw`` itself, which a training sampler makes differ
        per epoch (``LengthBucketSampler``: ``epoch * len + index``), so augmentations vary by epoch alone."""
        index = draw % len(self.entries)
        entry = self.entries[index]
        try:
            if self.require_text and not (entry.text or "").strip():
                raise AudioError(entry.audio, f"utterance {entry.id!r} has no transcript")
            if self.cache is not None and index in self.cache:
                wave = self.cache[index]
            else:
                wave = load_audio(entry.audio, self.sample_rate, self.max_seconds)
                if self.cache is not None:
                    self.cache[index] = wave
        except AudioError as err:
            self.rejects.skip_or_raise(err, self.skip_bad)
            return None
        if self.transform is not None:
            wave = self.transform(wave, draw)
        return entry, wave


def collate(items: list) -> Batch | None:
    items = [i for i in items if i is not None]
    if not items:
        return None
    lengths = torch.tensor([w.shape[-1] for _, w in items])
    waves = torch.zeros(len(items), int(lengths.max()))
    for row, (_, w) in enumerate(items):
        waves[row, : w.shape[-1]] = w
    entries = [e for e, _ in items]
    return Batch([e.id for e in entries], waves, lengths, [e.text for e in entries], [e.label for e in entries],
                 [e.task for e in entries])


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar duration (less padding), in a seeded random order of batches. Under data-parallel
    training (``replicas`` > 1) every process draws the same order and takes every ``replicas``-th batch from
    its ``rank``; the last round is filled up from the start, so all processes run the same number of steps."""

    def __init__(self, durations: list[float], batch_size: int, shuffle: bool = True, seed: int = 0,
                 bucket_batches: int = 50, replicas: int = 1, rank: int = 0):
        if not 0 <= rank < replicas:
            raise ValueError(f"rank {rank} must lie in 0..{replicas - 1}")
        self.durations, self.batch_size, self.shuffle, self.seed = durations, batch_size, shuffle, seed
        self.bucket = batch_size * bucket_batches
        self.replicas, self.rank = replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        order = list(range(len(self.durations)))
        rng = random.Random(self.seed + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
        batches = []
        for start in range(0, len(order), self.bucket):
            chunk = sorted(order[start:start + self.bucket], key=lambda i: self.durations[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        if self.replicas > 1:
            rounds = -(-len(batches) // self.replicas)
            batches = (batches * self.replicas)[: rounds * self.replicas][self.rank::self.replicas]
        return batches

    def __iter__(self):
        # Order and draw numbers depend on seed + epoch (Lightning calls set_epoch): training items are
        # drawn as epoch * len + index, which the dataset maps back to index.
        offset = self.epoch * len(self.durations) if self.shuffle else 0
        return iter([[offset + i for i in batch] for batch in self._batches()])

    def __len__(self) -> int:
        return len(self._batches())
