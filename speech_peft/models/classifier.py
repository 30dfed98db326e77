"""Audio classification: frozen encoder + adapter method + pooling + linear head (PETL-AST style).

Export: ``adapter/`` (the adapter core's format; absent for a linear probe), ``head.safetensors``,
``encoder.safetensors`` after full fine-tuning (what it trained), and ``export.json``;
``AudioClassifierModel.load`` reads it back, and ``speech-peft predict ckpt_path=EXPORT`` uses it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..adapters import FULL_FINETUNE, attach_adapter, finalize_adapter, load_adapter, records, save_adapter
from ..encoders import build_encoder
from ..encoders.base import EncoderOutput
from ..exports import read_export_info, write_export_info
from ..tensor_files import load_tensors, save_tensors
from .registry import register_model

EXPORT_KIND = "classifier"
MODEL_ARGUMENTS = ("labels", "encoder_kind", "encoder_name", "adapter", "pooling", "pad_to_30s", "max_length")


def pool(out: EncoderOutput, how: str) -> Tensor:
    if how == "cls":
        return out.hidden[:, 0]
    mask = out.mask.unsqueeze(-1).to(out.hidden.dtype)
    return (out.hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


class AudioClassifierModel(nn.Module):
    def __init__(self, labels: list[str], encoder_kind: Literal["whisper", "ast", "conformer"] = "whisper",
                 encoder_name: str = "whisper-tiny.en", adapter: dict[str, Any] | None = None,
                 pooling: Literal["mean", "cls"] = "mean", pad_to_30s: bool = False, max_length: int | None = None,
                 adapter_dir: str | None = None) -> None:
        """``adapter``: a method's config (``linear_probe`` by default: the head alone trains; ``full``: every
        weight); ``adapter_dir``: a saved adapter (of that config) to place instead of a new one."""
        super().__init__()
        self.labels = [str(label) for label in labels]
        self.encoder_name, self.pooling = encoder_name, pooling
        self.arguments = {"labels": self.labels, "encoder_kind": encoder_kind, "encoder_name": encoder_name,
                          "adapter": adapter, "pooling": pooling, "pad_to_30s": pad_to_30s, "max_length": max_length}
        self.encoder = build_encoder(encoder_kind, encoder_name, pad_to_30s=pad_to_30s, max_length=max_length)
        self.adapter_config = dict(adapter or {"method": "linear_probe"})
        self.report = load_adapter(self.encoder, adapter_dir) if adapter_dir else \
            attach_adapter(self.encoder, self.adapter_config)
        self.head = nn.Linear(self.encoder.dim, len(self.labels))

    @property
    def full_finetune(self) -> bool:
        return self.adapter_config.get("method") == FULL_FINETUNE

    def forward(self, waveforms: Tensor, lengths: Tensor) -> Tensor:
        return self.head(pool(self.encoder(waveforms, lengths), self.pooling))

    @torch.no_grad()
    def classify(self, waveforms: Tensor, lengths: Tensor) -> list[tuple[str, float]]:
        """Each clip's most likely label and its probability."""
        probs = self(waveforms, lengths).softmax(-1)
        best = probs.argmax(-1)
        return [(self.labels[int(b)], float(p[b])) for b, p in zip(best, probs)]

    def save(self, directory: str | Path) -> Path:
        """What was trained: the adapter (adapter core format), the head, and for full fine-tuning the
        whole encoder; ``export.json`` last."""
        directory = Path(directory)
        if self.report is not None and self.report.targets:
            if "default" in records(self.encoder):
                finalize_adapter(self.encoder, "default")  # e.g. MoSA's sub-adapters become the one they sum to
            save_adapter(self.encoder, directory / "adapter", base_model_name=self.encoder_name)
        save_tensors(directory / "head.safetensors", self.head.state_dict())
        if self.full_finetune:
            save_tensors(directory / "encoder.safetensors", self.encoder.state_dict())
        write_export_info(directory, EXPORT_KIND, self.arguments)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "AudioClassifierModel":
        """The trained classifier back from its export; the adapter is checked against its base encoder."""
        directory = Path(directory)
        config = read_export_info(directory, EXPORT_KIND)["config"]
        saved = directory / "adapter"
        module = cls(**{k: v for k, v in config.items() if k in MODEL_ARGUMENTS},
                     adapter_dir=str(saved) if saved.is_dir() else None)
        if module.full_finetune:
            module.encoder.load_state_dict(load_tensors(directory / "encoder.safetensors"), strict=True)
        module.head.load_state_dict(load_tensors(directory / "head.safetensors"), strict=True)
        return module.eval()


register_model(EXPORT_KIND, AudioClassifierModel.load)
