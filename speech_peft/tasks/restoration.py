"""Speech restoration in the manner of Miipher-2: a feature cleaner and a WaveFit vocoder.

FeatureCleaner: the frozen Whisper encoder is tapped after layer k (default 2 of 4); each kept
layer carries one parallel adapter on its feed-forward sublayer. The adapter reads the layer's
``final_layer_norm`` output (what the feed-forward reads) and its output is added to ``fc2``'s
output, i.e. summed into the layer output before the residual addition, which feeds the next
layer. The target is the same encoder's features of the clean audio with the adapters switched
off; the loss is mean L1 + mean squared error + spectral convergence ||S - S'||^2 / ||S||^2.

VocoderTraining: stage "clean" trains WaveFit on the clean audio's features; stage "cleaned"
fine-tunes it on the cleaner's output for degraded audio, so it learns the cleaner's residual errors.

Both train through ``speech-peft fit task=restore_cleaner|restore_vocoder data=restore``. The
cleaner exports ``cleaner/`` (its adapters, adapter core format) and ``export.json``
(``FeatureCleaner.from_export``); the vocoder exports a whole restorer (``Restorer.from_export``),
which ``speech-peft restore`` reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ..adapters import ParallelAdapterConfig, add_adapter, load_adapter, save_adapter, set_active_adapters
from ..data.pairs import RestorationData
from ..encoders.whisper import load_whisper_encoder
from ..errors import UserError
from ..exports import read_export_info, write_export_info
from ..tensor_files import load_tensors
from ..vocoders.restorer import Restorer
from ..vocoders.wavefit import Discriminators, WaveFit, WaveFitConfig, adversarial_losses, wavefit_loss
from .base import AdapterTask
from .common import keep_frozen_parts_in_eval

CLEANER_KIND = "cleaner"


def feature_loss(cleaned: Tensor, clean: Tensor) -> Tensor:
    """Mean L1 + mean squared error + spectral convergence (||S - S'||^2 / ||S||^2, per utterance)."""
    l1 = (cleaned - clean).abs().mean()
    mse = (cleaned - clean).pow(2).mean()
    sc = ((clean - cleaned).pow(2).sum(dim=(1, 2)) / clean.pow(2).sum(dim=(1, 2)).clamp(min=1e-8)).mean()
    return l1 + mse + sc


def build_cleaner_encoder(encoder_name: str, tap_layer: int, bottleneck_dim: int, scale: float):
    encoder = load_whisper_encoder(encoder_name, tap_layer=tap_layer)
    report = add_adapter(encoder, ParallelAdapterConfig(target_roles=["ffn"], bottleneck_dim=bottleneck_dim,
                                                        scale=scale), name="cleaner")
    return encoder, report


class FeatureCleaner(AdapterTask):
    """``adapter_dir``: start from trained adapters saved by an earlier fit (checked against the base)."""

    predict_instead: ClassVar[str] = "speech-peft restore IN OUT --checkpoint RESTORER_EXPORT"
    datamodule: ClassVar[type] = RestorationData  # the batches it trains on

    def __init__(self, encoder_name: str = "whisper-tiny.en", tap_layer: int = 2, bottleneck_dim: int = 128,
                 scale: float = 1.0, lr: float = 1e-3, adapter_dir: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        if adapter_dir is None:
            self.encoder, self.report = build_cleaner_encoder(encoder_name, tap_layer, bottleneck_dim, scale)
        else:
            self.encoder = load_whisper_encoder(encoder_name, tap_layer=tap_layer)
            self.report = load_adapter(self.encoder, adapter_dir, name="cleaner")

    def train(self, mode: bool = True):
        super().train(mode)
        keep_frozen_parts_in_eval(self.encoder, mode)
        return self

    def features(self, waves: Tensor, lengths: Tensor | None = None, clean: bool = False) -> Tensor:
        """Encoder features; ``clean=True`` switches the adapters off (the target's encoder)."""
        set_active_adapters(self.encoder, [] if clean else ["cleaner"])
        try:
            return self.encoder(waves, lengths).hidden
        finally:
            set_active_adapters(self.encoder, ["cleaner"])

    def _loss(self, batch, stage: str) -> Tensor:
        _, degraded, clean, lengths = batch
        with torch.no_grad():
            target = self.features(clean, lengths, clean=True)
        cleaned = self.features(degraded, lengths)
        loss = feature_loss(cleaned, target)
        with torch.no_grad():
            before = (self.features(degraded, lengths, clean=True) - target).abs().mean()
            after = (cleaned - target).abs().mean()
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(lengths))
        self.log(f"{stage}/l1_reduction", 1 - after / before.clamp(min=1e-8), prog_bar=True, batch_size=len(lengths))
        return loss

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._loss(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._loss(batch, "val")

    def configure_optimizers(self):
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr)

    def export(self, directory: str | Path) -> Path:
        """``cleaner/`` (the adapters) and ``export.json``."""
        directory = Path(directory)
        save_adapter(self.encoder, directory / "cleaner", name="cleaner", base_model_name=self.hparams.encoder_name)
        hp = self.hparams
        write_export_info(directory, CLEANER_KIND, {"encoder_name": hp.encoder_name, "tap_layer": hp.tap_layer,
                                                   "bottleneck_dim": hp.bottleneck_dim, "scale": hp.scale})
        return directory

    @classmethod
    def from_export(cls, directory: str | Path) -> "FeatureCleaner":
        config = read_export_info(directory, CLEANER_KIND)["config"]
        return cls(**config, adapter_dir=str(Path(directory) / "cleaner"))

    @classmethod
    def frozen_for(cls, stage: str, cleaner_dir: str | None, encoder_name: str, tap_layer: int,
                   bottleneck_dim: int) -> "FeatureCleaner":
        """The cleaner a vocoder stage trains beside, never trained itself: the export in ``cleaner_dir``
        (needed by stage "cleaned"), or a fresh one whose adapters stage "clean" switches off anyway."""
        if stage not in ("clean", "cleaned"):
            raise UserError(f"stage must be 'clean' or 'cleaned', not {stage!r}")
        if stage == "cleaned" and cleaner_dir is None:
            raise UserError("stage 'cleaned' needs cleaner_dir (the export of the cleaner's training)")
        cleaner = cls.from_export(cleaner_dir) if cleaner_dir else cls(encoder_name, tap_layer, bottleneck_dim)
        cleaner.requires_grad_(False)
        return cleaner.eval()

    def restorer_with(self, vocoder: torch.nn.Module) -> Restorer:
        """This cleaner's encoder and adapters in front of ``vocoder``: what a vocoder stage exports."""
        return Restorer(self.encoder, vocoder, self.hparams.encoder_name, self.hparams.tap_layer)

    @torch.no_grad()
    def stage_features(self, batch, stage: str) -> Tensor:
        """What a vocoder stage learns from: the clean audio's own features ("clean") or the cleaner's
        output for the degraded audio ("cleaned")."""
        _, degraded, clean, lengths = batch
        return self.features(degraded, lengths) if stage == "cleaned" else self.features(clean, lengths, clean=True)


class VocoderTraining(AdapterTask):
    """``cleaner_dir``: the cleaner's export (needed by stage "cleaned"; stored in the restorer either way).
    ``init_vocoder``: a ``vocoder.safetensors`` to start from (stage "cleaned" fine-tunes stage "clean").
    Its export is a restorer (``Restorer.from_export``)."""

    predict_instead: ClassVar[str] = "speech-peft restore IN OUT --checkpoint RESTORER_EXPORT"
    datamodule: ClassVar[type] = RestorationData  # the batches it trains on

    def __init__(self, vocoder: dict[str, Any] | None = None, stage: Literal["clean", "cleaned"] = "clean",
                 cleaner_dir: str | None = None, init_vocoder: str | None = None,
                 encoder_name: str = "whisper-tiny.en", tap_layer: int = 2, bottleneck_dim: int = 128,
                 lr: float = 2e-4, adversarial: bool = False, feature_matching_weight: float = 2.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vocoder = WaveFit(WaveFitConfig(**(vocoder or {})))
        if init_vocoder is not None:
            self.vocoder.load_state_dict(load_tensors(init_vocoder), strict=True)
        self.cleaner = FeatureCleaner.frozen_for(stage, cleaner_dir, encoder_name, tap_layer, bottleneck_dim)
        self.discriminators = Discriminators() if adversarial else None
        self.automatic_optimization = not adversarial

    def train(self, mode: bool = True):
        super().train(mode)
        self.cleaner.eval()
        return self

    def _inputs(self, batch) -> tuple[Tensor, Tensor]:
        clean = batch[2]
        feats = self.cleaner.stage_features(batch, self.hparams.stage)
        target = clean[:, : feats.shape[1] * self.vocoder.config.hop]
        target = torch.nn.functional.pad(target, (0, feats.shape[1] * self.vocoder.config.hop - target.shape[-1]))
        return feats, target

    def training_step(self, batch, batch_idx: int):
        feats, target = self._inputs(batch)
        outputs = self.vocoder(feats)
        loss = wavefit_loss(outputs, target) + torch.nn.functional.mse_loss(
            self.vocoder.target_power(feats).log(), target.pow(2).mean(-1, keepdim=True).clamp(min=1e-10).log())
        self.log("train/stft_loss", loss, prog_bar=True, batch_size=len(target))
        if self.discriminators is None:
            return loss
        opt_g, opt_d = self.optimizers()
        d_loss, g_loss, fm = adversarial_losses(self.discriminators, outputs[-1], target)
        opt_d.zero_grad()
        self.manual_backward(d_loss, retain_graph=True)
        opt_d.step()
        opt_g.zero_grad()
        self.manual_backward(loss + g_loss + self.hparams.feature_matching_weight * fm)
        opt_g.step()
        self.log_dict({"train/d_loss": d_loss, "train/g_loss": g_loss, "train/fm": fm}, batch_size=len(target))

    def validation_step(self, batch, batch_idx: int) -> None:
        feats, target = self._inputs(batch)
        # The same starting noise every epoch, so validation losses compare across epochs.
        noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(batch_idx)).to(target)
        loss = wavefit_loss(self.vocoder(feats, noise, return_all=False), target)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(target))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.vocoder.parameters(), lr=self.hparams.lr, betas=(0.8, 0.99))
        if self.discriminators is None:
            return opt
        return [opt, torch.optim.AdamW(self.discriminators.parameters(), lr=self.hparams.lr, betas=(0.8, 0.99))]

    def export(self, directory: str | Path) -> Path:
        """A restorer: this vocoder with the cleaner it was trained beside."""
        return self.cleaner.restorer_with(self.vocoder).export(directory)
