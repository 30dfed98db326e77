"""Training task-ID-free multi-task ASR (Audio-AdapterFusion, the model in ``models/adapter_fusion.py``) on a
task-balanced mixture.

Algorithms: ``two_stage`` trains the combiners alone, the single-task adapters frozen; ``joint`` trains
the combiners together with trainable copies of the adapters. Manifest entries carry their ``task``: the
predicted-task router learns from it and oracle routing reads it; the other combiners never see it.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch.nn import functional as F

from ..adapters.fusion import set_temperature, task_logits, value_regulariser
from ..data.datamodule import ManifestDataModule
from ..data.dataset import Batch
from ..models.adapter_fusion import ALGORITHMS, EXPORT_KIND, AdapterFusionASR  # noqa: F401  (the export kind)
from .asr import ASRTask, teacher_forced_loss
from .common import keep_frozen_parts_in_eval


class WhisperAdapterFusion(AdapterFusionASR, ASRTask):
    datamodule: ClassVar[type] = ManifestDataModule

    def __init__(self, adapters: dict[str, str], model_name: str = "whisper-tiny.en", fusion: dict | None = None,
                 algorithm: str = "two_stage", lr: float = 1e-3, weight_decay: float = 0.0,
                 value_regulariser: float = 1e-3, task_loss_weight: float = 1.0,
                 temperature_start: float | None = None) -> None:
        """``temperature_start``: attention fusion anneals its softmax temperature linearly from this to
        ``fusion.temperature`` over training (None: constant)."""
        super().__init__(adapters, model_name, fusion, algorithm)
        self.save_hyperparameters()

    def train(self, mode: bool = True):
        super().train(mode)
        keep_frozen_parts_in_eval(self.model, mode)
        return self

    def training_loss(self, batch: Batch) -> torch.Tensor:
        self.route(batch.lengths, batch.tasks, len(batch))
        loss = teacher_forced_loss(self.model, self.transcriber, batch)
        if self.fusion_config.kind == "attention" and self.hparams.value_regulariser:
            loss = loss + self.hparams.value_regulariser * value_regulariser(self.model)
        if self.fusion_config.kind == "task" and self.training:
            target = self.one_hot(batch.tasks, len(batch)).argmax(-1).to(loss.device)
            loss = loss + self.hparams.task_loss_weight * F.cross_entropy(task_logits(self.model), target)
        return loss

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        start = self.hparams.temperature_start
        if start is not None and self.fusion_config.kind == "attention":
            progress = self.global_step / max(1, self.trainer.estimated_stepping_batches)
            set_temperature(self.model, start + (self.fusion_config.temperature - start) * min(1.0, progress))

    def test_transcripts(self, batch: Batch) -> list[str]:
        return self.transcribe(batch.waveforms, batch.lengths, batch.tasks)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.adapter_optimizer_groups(self.hparams.lr, self.hparams.weight_decay))

    def export(self, directory: str | Path) -> Path:
        return self.save(directory)

    @classmethod
    def from_export(cls, directory: str | Path, hard: bool | None = None) -> "WhisperAdapterFusion":
        return cls.load(directory, hard)
