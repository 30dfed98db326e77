"""Restoration with the pretrained vocoder: train the bridge to HiFi-GAN's log-mel from the encoder features,
the input's own log-mel, or both (``bridge.inputs``; ``vocoders/bridge.py``).

Stage "clean": the frozen encoder's features of clean audio (cleaner adapters off) -> the clean audio's
log-mel; its copy-synthesis through the frozen generator is the restorer's ceiling. Stage "cleaned":
fine-tuned on the cleaner's output for degraded audio against the clean audio's log-mel, so it learns
the cleaner's residual errors. Loss: L1 on log-mel plus spectral convergence of the magnitude mel, on the
prediction itself whatever the export's ``synthesis``: scored on what an input gain realises (the input
lowered toward the prediction, never raised), the bridge learned to predict above the input everywhere,
where no gradient reaches it, and restored nothing (held-out noise: every score equal to the input's).
Validation scores what the export delivers (``validation_step``), so the best checkpoint is the best restorer.
The frozen HiFi-GAN generator is never run in training; the export is a restorer with the ``hifigan``
backend (``Restorer.from_export``), which ``speech-peft restore`` reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ..data.pairs import RestorationData
from ..tensor_files import load_tensors
from ..vocoders.bridge import (
    BridgeConfig,
    BridgedHiFiGAN,
    FeatureToMel,
    check_synthesis,
    fit_frames,
    mel_loss,
    target_mel,
)
from ..vocoders.input_gain import band_log_gains
from .base import AdapterTask
from .restoration import FeatureCleaner


class BridgeTraining(AdapterTask):
    """``cleaner_dir``: the cleaner's export (needed by stage "cleaned"; stored in the restorer either way).
    ``init_bridge``: a restorer export's ``vocoder.safetensors`` to start from (stage "cleaned").
    ``synthesis``: how the export turns the prediction into audio (``vocoders/bridge.py``)."""

    predict_instead: ClassVar[str] = "speech-peft restore IN OUT --checkpoint RESTORER_EXPORT"
    datamodule: ClassVar[type] = RestorationData  # the batches it trains on

    def __init__(self, bridge: dict[str, Any] | None = None, stage: Literal["clean", "cleaned"] = "clean",
                 cleaner_dir: str | None = None, init_bridge: str | None = None,
                 encoder_name: str = "whisper-tiny.en", tap_layer: int = 2, bottleneck_dim: int = 128,
                 hifigan_weights: str = "universal", lr: float = 1e-3, weight_decay: float = 0.0,
                 synthesis: Literal["vocoder", "input_gain"] = "vocoder") -> None:
        super().__init__()
        self.save_hyperparameters()
        check_synthesis(synthesis, "task.synthesis")  # before training, not at the export
        reads_features = BridgeConfig(**(bridge or {})).reads_features
        # A bridge that reads only the input's mel needs no cleaner: the restorer keeps a fresh one, unused.
        self.cleaner = FeatureCleaner.frozen_for(stage if reads_features else "clean", cleaner_dir, encoder_name,
                                                 tap_layer, bottleneck_dim)
        config = BridgeConfig(**{"feature_dim": self.cleaner.encoder.dim, **(bridge or {})})
        self.bridge = FeatureToMel(config)
        if init_bridge is not None:
            self.bridge.load_state_dict(load_tensors(init_bridge), strict=True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.cleaner.eval()
        return self

    def _predict(self, batch) -> tuple[Tensor, Tensor | None, Tensor]:
        """The bridge's log-mel, the input's (when it reads it) and the clean target."""
        _, degraded, clean, _ = batch
        config = self.bridge.config
        feats = self.cleaner.stage_features(batch, self.hparams.stage) if config.reads_features else None
        with torch.no_grad():
            target = target_mel(clean)  # the clean audio's log-mel
            heard = clean if self.hparams.stage == "clean" else degraded  # the audio whose mel the bridge reads
            input_mel = fit_frames(target_mel(heard), target.shape[-1]) if config.reads_mel else None
        return self.bridge(feats, target.shape[-1], input_mel), input_mel, target

    def training_step(self, batch, batch_idx: int) -> Tensor:
        predicted, _, target = self._predict(batch)
        loss = mel_loss(predicted, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(target))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        """``val/loss`` (what the best checkpoint is chosen on) scores what the export delivers: with input
        gains, the input lowered toward the prediction, so a better guess of bands it can never raise (a
        telephone band's missing highs) does not pick the checkpoint."""
        predicted, input_mel, target = self._predict(batch)
        self.log("val/prediction_loss", mel_loss(predicted, target), batch_size=len(target))
        if self.hparams.synthesis == "input_gain" and input_mel is not None:
            predicted = input_mel + band_log_gains(input_mel, predicted)
        self.log("val/loss", mel_loss(predicted, target), prog_bar=True, batch_size=len(target))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.bridge.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def export(self, directory: str | Path) -> Path:
        """A restorer: the cleaner it was trained beside, this bridge and the frozen generator."""
        vocoder = BridgedHiFiGAN(self.bridge, weights=self.hparams.hifigan_weights,
                                 synthesis=self.hparams.synthesis)
        return self.cleaner.restorer_with(vocoder).export(directory)
