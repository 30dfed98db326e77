"""Datasets and batching over manifest entries: padded waveforms with lengths, length buckets."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Sampler

from ..errors import UserError
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
    languages: list[str | None] | None = None  # the manifest's language field

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
                 [e.task for e in entries], [e.language for e in entries])


def training_epoch(trainer) -> int:
    """The epoch whose batches are being drawn: the fit loop's count of epochs whose training finished (what
    Lightning hands ``set_epoch``; ``current_epoch`` lags behind it while a resumed fit finishes the epoch
    its checkpoint was saved in)."""
    return trainer.fit_loop.epoch_progress.current.processed


def process_share(batch: list[int], order: list[int], replicas: int, rank: int, accumulate: int = 1) -> list[list[int]]:
    """Process ``rank``'s ``accumulate`` micro-batches of one global ``batch``. A short batch is first filled
    from the start of the epoch's ``order`` (cycling) to a multiple of the parts, then split evenly; micro-batch
    ``step`` of ``rank`` is part ``step * replicas + rank``."""
    shares = replicas * accumulate
    batch = batch + [order[i % len(order)] for i in range(-(-len(batch) // shares) * shares - len(batch))]
    part = len(batch) // shares
    return [batch[(step * replicas + rank) * part:(step * replicas + rank + 1) * part] for step in range(accumulate)]


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar duration (less padding), in a seeded random order of batches.

    Under data-parallel training (``replicas`` > 1) the sampler forms the same global batches of
    ``batch_size * replicas`` items a single process would form at that batch size, and each process takes
    its ``rank``-th slice of ``batch_size`` items: the gradient DDP averages is the single process's, step
    for step. A short last global batch is filled up from the epoch's first items to a multiple of the
    processes and split evenly, so every process runs the same steps. With gradient accumulation over
    ``accumulate`` batches the global batch is ``batch_size * replicas * accumulate`` items, and each
    process takes its ``accumulate`` micro-batches of it: one optimiser step sees the single process's
    batch of that size."""

    def __init__(self, durations: list[float], batch_size: int, shuffle: bool = True, seed: int = 0,
                 bucket_batches: int = 50, replicas: int = 1, rank: int = 0, accumulate: int = 1):
        if not 0 <= rank < replicas:
            raise UserError(f"rank {rank} must lie in 0..{replicas - 1}")
        if accumulate < 1:
            raise UserError(f"accumulate must be at least 1, got {accumulate}")
        self.durations, self.batch_size, self.shuffle, self.seed = durations, batch_size, shuffle, seed
        self.replicas, self.rank, self.accumulate = replicas, rank, accumulate
        self.bucket = batch_size * replicas * accumulate * bucket_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def follow(self, trainer) -> None:
        """Take the epoch from ``trainer`` whenever batches are drawn. Lightning sets the epoch of samplers it
        knows (not of a batch sampler) and, in a resumed fit, only after the first iterator was made, so the
        resumed epoch would replay epoch 0's order; the fit loop's own count is right at every moment."""
        self._trainer = trainer

    def _batches(self) -> list[list[int]]:
        if getattr(self, "_trainer", None) is not None:
            self.epoch = training_epoch(self._trainer)
        order = list(range(len(self.durations)))
        rng = random.Random(self.seed + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
        shares = self.replicas * self.accumulate  # parts of a global batch: micro-batches of every process
        size = self.batch_size * shares
        batches = []
        for start in range(0, len(order), self.bucket):
            chunk = sorted(order[start:start + self.bucket], key=lambda i: self.durations[i])
            batches += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        if self.shuffle:
            rng.shuffle(batches)
        if shares == 1:
            return batches
        return [part for batch in batches for part in process_share(batch, order, self.replicas, self.rank,
                                                                    self.accumulate)]

    def __iter__(self):
        # A generator: the order is drawn when the first batch is asked for, not when the loader makes its
        # iterator (which a resumed fit does before it has restored its epoch). Order and draw numbers depend
        # on seed + epoch: training items are drawn as epoch * len + index, which the dataset maps back.
        batches = self._batches()
        offset = self.epoch * len(self.durations) if self.shuffle else 0
        for batch in batches:
            yield [offset + i for i in batch]

    def __len__(self) -> int:
        return len(self._batches())
