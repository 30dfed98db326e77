"""A LightningDataModule over manifests: one per split, length-bucketed batches; ``train`` may also be a shard
folder (``speech-peft shard``), streamed."""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from ..errors import UserError, dataclass_options
from .dataset import AudioDataset, LengthBucketSampler, collate
from .manifest import read_manifest
from .shards import ShardedAudioDataset, is_shard_folder


class ManifestDataModule(L.LightningDataModule):
    """``name``: the dataset's name (experiment folders, results tables); ``labels``: when given, every
    labelled entry of every split must carry one of them (checked when the split is first read)."""

    def __init__(self, train: str | None = None, val: str | None = None, test: str | None = None,
                 predict: str | None = None, batch_size: int = 32, num_workers: int = 0,
                 sample_rate: int = 16000, seed: int = 0, skip_bad: bool = False,
                 rejects_path: str | None = None, cache_audio: bool = False, require_text: bool = False,
                 augment: dict | None = None, labels: list[str] | None = None, name: str = "manifests",
                 shuffle_buffer: int = 1000):
        super().__init__()
        self.name, self.labels = name, [str(label) for label in labels] if labels is not None else None
        self.paths = {"train": train, "val": val, "test": test, "predict": predict}
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.options = dict(sample_rate=sample_rate, skip_bad=skip_bad, rejects_path=rejects_path,
                            cache=cache_audio, require_text=require_text)
        self.augment = augment  # AugmentConfig fields, applied to the training split only
        self.shuffle_buffer = shuffle_buffer  # items held for shuffling when data.train is a shard folder
        self.datasets: dict[str, AudioDataset] = {}

    def _dataset(self, split: str) -> AudioDataset:
        if split not in self.datasets:
            path = self.paths[split]
            if not path:
                raise UserError(f"no {split} manifest configured (data.{split})")
            transform = None
            if split == "train" and self.augment:
                from .degrade import AugmentConfig, Augmenter

                config = dataclass_options(AugmentConfig, {k: tuple(v) if isinstance(v, list) and k != "noise_files"
                                                           else v for k, v in self.augment.items()}, "data.augment")
                transform = Augmenter(config, self.options["sample_rate"], self.seed)
            entries = read_manifest(path)
            if self.labels is not None:
                unknown = [e for e in entries if e.label is not None and str(e.label) not in self.labels]
                if unknown:
                    raise UserError(f"{path}: {len(unknown)} entries carry labels outside the configured "
                                     f"{len(self.labels)} (e.g. {unknown[0].id!r}: {unknown[0].label!r})")
            self.datasets[split] = AudioDataset(entries, transform=transform, **self.options)
        return self.datasets[split]

    def _loader(self, split: str) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer and split == "train" else (1, 0)
        if split == "train" and is_shard_folder(self.paths["train"]):
            return self._shard_loader(trainer, replicas, rank)
        data = self._dataset(split)
        # Training batches are split across data-parallel processes; each process scores all of val and test.
        accumulate = trainer.accumulate_grad_batches if trainer and split == "train" else 1
        sampler = LengthBucketSampler([e.duration for e in data.entries], self.batch_size,
                                      shuffle=split == "train", seed=self.seed, replicas=replicas, rank=rank,
                                      accumulate=accumulate)
        if trainer is not None and split == "train":
            sampler.follow(trainer)
        # Its own generator: a loader drawing its worker seed from the global one would shift every later
        # random draw of an epoch, differently in a resumed fit (see EpochSeed).
        return DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, generator=torch.Generator().manual_seed(self.seed))

    def _shard_loader(self, trainer, replicas: int, rank: int) -> DataLoader:
        """Training from a shard folder (``speech-peft shard``): streamed, shuffled in a buffer, split by process."""
        if self.augment:
            raise UserError("data.augment applies to manifests; shard folders are read as written")
        data = ShardedAudioDataset(self.paths["train"], self.options["sample_rate"], shuffle=True, seed=self.seed,
                                   replicas=replicas, rank=rank, require_text=self.options["require_text"],
                                   buffer=self.shuffle_buffer)
        if trainer is not None:
            data.follow(trainer)
        return DataLoader(data, batch_size=self.batch_size, collate_fn=collate, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
