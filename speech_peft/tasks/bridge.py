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
``objective="compressed_gain"`` (input gains only) trains on what the export delivers after all, scored on
power-law compressed mel magnitudes, where cutting into loud speech costs more than leaving a quiet band,
with a tenth of the log-mel loss on the prediction itself, which keeps a gradient above the input.
``objective="ceiling_gain"`` (input gains only) scores the gains themselves against the ceiling's (the
input lowered toward the clean audio's own mel), where a band cut deeper than the ceiling cuts it (into the
words) costs ``OVERCUT_COST`` times a band left too loud (noise left in), with the same tenth on the prediction;
``overcut_loudness`` makes an over-cut of the talker's loud bands cost more than one of quiet bands.
The frozen HiFi-GAN generator is never run in training; the export is a restorer with the ``hifigan``
backend (``Restorer.from_export``), which ``speech-peft restore`` reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ..data.pairs import RestorationData
from ..errors import UserError
from ..tensor_files import load_tensors
from ..vocoders.bridge import ZERO_STARTED, BridgeConfig, BridgedHiFiGAN, FeatureToMel, check_synthesis, mel_loss
from ..vocoders.hifigan import fit_frames, target_mel
from ..vocoders.input_gain import DEFAULT_LIMIT_DB, band_log_gains, check_attenuation_limit
from .base import AdapterTask
from .restoration import FeatureCleaner

OBJECTIVES = ("log_mel", "compressed_gain", "ceiling_gain")
PREDICTION_SHARE = 0.1
COMPRESSION = 0.3
OVERCUT_COST = 4.0


def compressed_loss(realised: Tensor, target: Tensor) -> Tensor:
    """L1 between power-law compressed mel magnitudes (``mel ** 0.3``), per utterance relative to the
    target's: loud bands, where the speech is, weigh more than in L1 on log-mel, so a gain is not paid
    for cutting into speech to win back a quiet band."""
    got, want = (COMPRESSION * realised).exp(), (COMPRESSION * target).exp()
    return ((got - want).abs().flatten(1).sum(1) / want.flatten(1).sum(1)).mean()


def ceiling_gain_loss(gains: Tensor, ceiling: Tensor, clean_mel: Tensor | None = None,
                      overcut_loudness: float = 0.0) -> Tensor:
    """L1 between realised and ceiling log-gains (natural log, per mel band and frame), where a band cut
    deeper than the ceiling's costs ``OVERCUT_COST`` times as much: speech taken out is what costs words.
    With ``overcut_loudness`` an over-cut costs ``1 + overcut_loudness * loudness`` times more again, where
    ``loudness`` (0 to 1) is the clean band's compressed level against the utterance's loudest: cutting a
    formant of the talker costs more than cutting a quiet band, where another talker (babble) may sit."""
    error = gains - ceiling
    overcut = OVERCUT_COST * torch.ones_like(error)
    if overcut_loudness:
        peak = clean_mel.flatten(1).amax(1).view(-1, *[1] * (clean_mel.dim() - 1))
        overcut = overcut * (1 + overcut_loudness * (COMPRESSION * (clean_mel - peak)).exp())
    return torch.where(error < 0, -overcut * error, error).mean()


class BridgeTraining(AdapterTask):
    """``cleaner_dir``: the cleaner's export (needed by stage "cleaned"; stored in the restorer either way).
    ``init_bridge``: a restorer export's ``vocoder.safetensors`` to start from (stage "cleaned").
    ``synthesis``: how the export turns the prediction into audio (``vocoders/bridge.py``);
    ``attenuation_limit_db``: with input gains, the most a band is lowered, in training and in the export."""

    predict_instead: ClassVar[str] = "speech-peft restore IN OUT --checkpoint RESTORER_EXPORT"
    datamodule: ClassVar[type] = RestorationData  # the batches it trains on

    def __init__(self, bridge: dict[str, Any] | None = None, stage: Literal["clean", "cleaned"] = "clean",
                 cleaner_dir: str | None = None, init_bridge: str | None = None,
                 encoder_name: str = "whisper-tiny.en", tap_layer: int = 2, bottleneck_dim: int = 128,
                 hifigan_weights: str = "universal", lr: float = 1e-3, weight_decay: float = 0.0,
                 synthesis: Literal["vocoder", "input_gain"] = "vocoder",
                 objective: Literal["log_mel", "compressed_gain"] = "log_mel",
                 attenuation_limit_db: float = DEFAULT_LIMIT_DB, overcut_loudness: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_synthesis(synthesis, "task.synthesis")  # before training, not at the export
        check_attenuation_limit(attenuation_limit_db, "task.attenuation_limit_db")
        given = BridgeConfig(**(bridge or {}))
        if objective not in OBJECTIVES:
            raise UserError(f"task.objective={objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if overcut_loudness < 0 or (overcut_loudness and objective != "ceiling_gain"):
            raise UserError(f"task.overcut_loudness={overcut_loudness}: a weight of 0 or more, used by "
                            "task.objective=ceiling_gain only")
        if objective != "log_mel" and not (synthesis == "input_gain" and given.reads_mel):
            raise UserError(f"task.objective={objective} scores the input lowered toward the prediction: it "
                            "needs task.synthesis=input_gain and a bridge that reads the input's mel")
        reads_features = given.reads_features
        # A bridge that reads only the input's mel needs no cleaner: the restorer keeps a fresh one, unused.
        self.cleaner = FeatureCleaner.frozen_for(stage if reads_features else "clean", cleaner_dir, encoder_name,
                                                 tap_layer, bottleneck_dim)
        config = BridgeConfig(**{"feature_dim": self.cleaner.encoder.dim, **(bridge or {})})
        self.bridge = FeatureToMel(config)
        if init_bridge is not None:
            self._start_from(init_bridge)

    def _start_from(self, path: str) -> None:
        """Load a trained bridge; one trained without the noise floor or a guide starts a noise-aware or
        guided bridge exactly where it was (those inputs begin at zero)."""
        refusal = f"task.init_bridge={path}: not a bridge of this shape ({{}}); give a restorer export's " \
                  "vocoder.safetensors trained with the same task.bridge settings"
        try:
            missing, unexpected = self.bridge.load_state_dict(load_tensors(path), strict=False)
        except RuntimeError as error:  # a tensor of another size
            raise UserError(refusal.format(str(error).splitlines()[-1].strip())) from None
        if unexpected or any(not key.startswith(ZERO_STARTED) for key in missing):
            raise UserError(refusal.format(f"missing {missing[:3]}, unexpected {unexpected[:3]}"))

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
            guide_mel = self.bridge.guide_mel(heard, target.shape[-1])
        return self.bridge(feats, target.shape[-1], input_mel, guide_mel), input_mel, target

    def _delivered(self, predicted: Tensor, input_mel: Tensor | None) -> Tensor:
        """The log-mel the export hands on: with input gains, the input lowered toward the prediction."""
        if self.hparams.synthesis == "input_gain" and input_mel is not None:
            return input_mel + band_log_gains(input_mel, predicted, self.hparams.attenuation_limit_db)
        return predicted

    def _score(self, delivered: Tensor, input_mel: Tensor | None, target: Tensor) -> Tensor:
        if self.hparams.objective == "compressed_gain":
            return compressed_loss(delivered, target)
        if self.hparams.objective == "ceiling_gain":
            ceiling = band_log_gains(input_mel, target, self.hparams.attenuation_limit_db)
            return ceiling_gain_loss(delivered - input_mel, ceiling, target, self.hparams.overcut_loudness)
        return mel_loss(delivered, target)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        predicted, input_mel, target = self._predict(batch)
        if self.hparams.objective == "log_mel":
            loss = mel_loss(predicted, target)
        else:  # the prediction's own share keeps a gradient where it lies above the input (gains of 0 dB)
            loss = self._score(self._delivered(predicted, input_mel), input_mel, target) + \
                PREDICTION_SHARE * mel_loss(predicted, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(target))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        """``val/loss`` (what the best checkpoint is chosen on) scores what the export delivers: with input
        gains, the input lowered toward the prediction, so a better guess of bands it can never raise (a
        telephone band's missing highs) does not pick the checkpoint."""
        predicted, input_mel, target = self._predict(batch)
        self.log("val/prediction_loss", mel_loss(predicted, target), batch_size=len(target))
        self.log("val/loss", self._score(self._delivered(predicted, input_mel), input_mel, target), prog_bar=True,
                 batch_size=len(target))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.bridge.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def export(self, directory: str | Path) -> Path:
        """A restorer: the cleaner it was trained beside, this bridge and the frozen generator."""
        vocoder = BridgedHiFiGAN(self.bridge, weights=self.hparams.hifigan_weights,
                                 synthesis=self.hparams.synthesis,
                                 attenuation_limit_db=self.hparams.attenuation_limit_db)
        return self.cleaner.restorer_with(vocoder).export(directory)
