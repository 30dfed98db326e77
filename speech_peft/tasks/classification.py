"""Training audio classification (PETL-AST style; the model is ``models/classifier.py``): cross-entropy on
the labels, warm-up and cosine learning rate, accuracy per split; its export is the model's."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..adapters.coda import conditional_adapters, every_token
from ..data.datamodule import ManifestDataModule
from ..data.dataset import Batch
from ..errors import UserError
from ..models.classifier import EXPORT_KIND, AudioClassifierModel, pool  # noqa: F401  (the export kind, pooling)
from .base import AdapterTask
from .common import keep_frozen_parts_in_eval
from .schedules import warmup_cosine


class AudioClassifier(AudioClassifierModel, AdapterTask):
    """Checkpoints hold only what was trained (adapter, head) and a fingerprint of the frozen encoder."""

    datamodule: ClassVar[type] = ManifestDataModule  # the batches it trains on

    def __init__(
        self,
        labels: list[str],
        encoder_kind: Literal["whisper", "ast", "conformer"] = "whisper",
        encoder_name: str = "whisper-tiny.en",
        adapter: dict[str, Any] | None = None,
        pooling: Literal["mean", "cls"] = "mean",
        pad_to_30s: bool = False,
        max_length: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        adapter_dir: str | None = None,
        dense_teacher: float = 0.0,
    ) -> None:
        """``adapter_dir``: a saved adapter (of the ``adapter`` config) to place instead of a new one.
        ``dense_teacher`` (CoDA only): each training step also runs the adapter's dense path (every token
        through every block), trains it on the labels too, and pulls the routed path's predictions toward
        it with this weight (a KL divergence), so that routing loses less of what the dense path knows."""
        super().__init__(labels, encoder_kind, encoder_name, adapter, pooling, pad_to_30s, max_length, adapter_dir)
        self.save_hyperparameters()
        if dense_teacher and not conditional_adapters(self.encoder):
            raise UserError("dense_teacher distils a CoDA adapter's routed path from its dense path: "
                             f"the {self.adapter_config.get('method')} adapter routes nothing")

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.full_finetune:
            keep_frozen_parts_in_eval(self.encoder, mode)
        return self

    def _targets(self, batch: Batch) -> Tensor:
        index = {label: i for i, label in enumerate(self.labels)}
        unknown = {l for l in batch.labels if l not in index}
        if unknown:
            raise UserError(f"labels {sorted(map(str, unknown))} are not among the model's {self.labels}")
        return torch.tensor([index[l] for l in batch.labels], device=self.device)

    def _step(self, batch: Batch, stage: str) -> Tensor:
        logits = self(batch.waveforms, batch.lengths)
        targets = self._targets(batch)
        loss = nn.functional.cross_entropy(logits, targets)
        if stage == "train" and self.hparams.dense_teacher:
            with every_token(self.encoder):
                dense = self(batch.waveforms, batch.lengths)
            pull = nn.functional.kl_div(logits.log_softmax(-1), dense.detach().log_softmax(-1), log_target=True,
                                        reduction="batchmean")
            loss = (loss + nn.functional.cross_entropy(dense, targets)) / 2 + self.hparams.dense_teacher * pull
        acc = (logits.argmax(-1) == targets).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(batch), on_step=on_step, on_epoch=True)
        self.log(f"{stage}/acc", acc, prog_bar=True, batch_size=len(batch), on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: Batch | None, batch_idx: int) -> Tensor | None:
        if batch is None:  # every input of the batch was bad and skipped (listed in the rejects file)
            return None
        loss = self._step(batch, "train")
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Batch | None, batch_idx: int) -> None:
        if batch is not None:
            self._step(batch, "val")

    def test_step(self, batch: Batch | None, batch_idx: int) -> None:
        if batch is not None:
            self._step(batch, "test")

    def predict_step(self, batch: Batch | None, batch_idx: int) -> list[dict]:
        if batch is None:
            return []
        probs = self(batch.waveforms, batch.lengths).softmax(-1)
        best = probs.argmax(-1)
        return [{"id": uid, "label": self.labels[int(b)], "score": round(float(p[b]), 6)}
                for uid, b, p in zip(batch.ids, best, probs)]

    def training_loss(self, batch: Batch) -> Tensor:
        return nn.functional.cross_entropy(self(batch.waveforms, batch.lengths), self._targets(batch))

    def on_fit_start(self) -> None:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        if self.logger is not None:
            self.logger.log_hyperparams({"trainable_params": trainable, "total_params": total})
        self.print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.adapter_optimizer_groups(self.hparams.lr, self.hparams.weight_decay))
        schedule = warmup_cosine(opt, self.hparams.warmup_steps, self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def export(self, directory: str | Path) -> Path:
        return self.save(directory)

    @classmethod
    def from_export(cls, directory: str | Path) -> "AudioClassifier":
        return cls.load(directory)
