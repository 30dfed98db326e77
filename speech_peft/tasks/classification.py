"""Audio classification: frozen encoder + adapter method + pooling + linear head (PETL-AST style)."""
from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from ..adapters import save_adapter
from ..data.dataset import Batch
from ..encoders import build_encoder
from ..encoders.base import EncoderOutput
from .common import (FULL_FINETUNE, attach_adapter, encoder_fingerprint, keep_frozen_parts_in_eval,
                     trainable_state)


def pool(out: EncoderOutput, how: str) -> Tensor:
    if how == "cls":
        return out.hidden[:, 0]
    mask = out.mask.unsqueeze(-1).to(out.hidden.dtype)
    return (out.hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


class AudioClassifier(L.LightningModule):
    """Checkpoints hold only what was trained (adapter, head) and a fingerprint of the frozen encoder."""

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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.labels = list(labels)
        self.encoder = build_encoder(encoder_kind, encoder_name, pad_to_30s=pad_to_30s, max_length=max_length)
        self.adapter_config = dict(adapter or {"method": "linear_probe"})
        self.report = attach_adapter(self.encoder, self.adapter_config)
        self.head = nn.Linear(self.encoder.dim, len(self.labels))
        self.fingerprint = encoder_fingerprint(self.encoder)
        self.strict_loading = False  # checkpoints hold only the trained part

    @property
    def full_finetune(self) -> bool:
        return self.adapter_config.get("method") == FULL_FINETUNE

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.full_finetune:
            keep_frozen_parts_in_eval(self.encoder, mode)
        return self

    def forward(self, waveforms: Tensor, lengths: Tensor) -> Tensor:
        return self.head(pool(self.encoder(waveforms, lengths), self.hparams.pooling))

    def _targets(self, batch: Batch) -> Tensor:
        index = {label: i for i, label in enumerate(self.labels)}
        unknown = {l for l in batch.labels if l not in index}
        if unknown:
            raise ValueError(f"labels {sorted(map(str, unknown))} are not among the model's {self.labels}")
        return torch.tensor([index[l] for l in batch.labels], device=self.device)

    def _step(self, batch: Batch, stage: str) -> Tensor:
        logits = self(batch.waveforms, batch.lengths)
        targets = self._targets(batch)
        loss = nn.functional.cross_entropy(logits, targets)
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
        return [{"id": uid, "label": self.labels[int(b)], "score": float(p[b])}
                for uid, b, p in zip(batch.ids, best, probs)]

    def on_fit_start(self) -> None:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        if self.logger is not None:
            self.logger.log_hyperparams({"trainable_params": trainable, "total_params": total})
        self.print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)")

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = self.trainer.estimated_stepping_batches
        warmup = self.hparams.warmup_steps

        def schedule(step: int) -> float:  # linear warm-up, then cosine decay to zero
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + torch.cos(torch.tensor(torch.pi * min(progress, 1.0))).item())

        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, schedule),
                                                    "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {f"{k}": v for k, v in trainable_state(self).items()}
        checkpoint["encoder_fingerprint"] = self.fingerprint

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("encoder_fingerprint")
        if saved is not None and saved != self.fingerprint:
            differing = sorted(k for k in saved if saved.get(k) != self.fingerprint.get(k))
            raise ValueError(f"checkpoint was trained on another {self.hparams.encoder_name} encoder: weights of "
                             f"{differing[:3]} differ")
        missing = set(trainable_state(self)) - set(checkpoint["state_dict"])
        if missing:
            raise ValueError(f"checkpoint lacks trained tensors {sorted(missing)[:5]}")

    def export(self, directory) -> None:
        """The adapter in the adapter core's format, plus the head, beside it; full fine-tuning
        exports the whole encoder (``encoder.safetensors``), which is what it trained."""
        from pathlib import Path

        from safetensors.torch import save_file

        directory = Path(directory)
        if self.report is not None and self.report.targets:
            save_adapter(self.encoder, directory / "adapter", base_model_name=self.hparams.encoder_name)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, directory / "head.safetensors")
        if self.full_finetune:
            save_file({k: v.contiguous() for k, v in self.encoder.state_dict().items()}, directory / "encoder.safetensors")
