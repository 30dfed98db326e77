"""Speech restoration in the manner of Miipher-2: a feature cleaner and a WaveFit vocoder.

FeatureCleaner: the frozen Whisper encoder is tapped after layer k (default 2 of 4); each kept
layer carries one parallel adapter on its feed-forward sublayer. The adapter reads the layer's
``final_layer_norm`` output (what the feed-forward reads) and its output is added to ``fc2``'s
output, i.e. summed into the layer output before the residual addition, which feeds the next
layer. The target is the same encoder's features of the clean audio with the adapters switched
off; the loss is mean L1 + mean squared error + spectral convergence ||S - S'||^2 / ||S||^2.

VocoderTraining: stage "clean" trains WaveFit on the clean audio's features; stage "cleaned"
fine-tunes it on the cleaner's output for degraded audio, so it learns the cleaner's residual errors.

Both train through ``speech-peft fit task=restore_cleaner|restore_vocoder data=restore``; the
cleaner exports its adapters (adapter core format), the vocoder a whole restorer directory that
``speech-peft restore`` reads.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..adapters import ParallelAdapterConfig, add_adapter, load_adapter, save_adapter, set_active_adapters
from ..data.audio import load_audio
from ..data.degrade import DegradeConfig, Degrader
from ..data.manifest import Entry, read_manifest
from ..encoders.whisper import load_whisper_encoder
from ..vocoders.wavefit import Discriminators, WaveFit, WaveFitConfig, adversarial_losses, wavefit_loss
from .common import keep_frozen_parts_in_eval


def feature_loss(cleaned: Tensor, clean: Tensor) -> Tensor:
    """Mean L1 + mean squared error + spectral convergence (||S - S'||^2 / ||S||^2, per utterance)."""
    l1 = (cleaned - clean).abs().mean()
    mse = (cleaned - clean).pow(2).mean()
    sc = ((clean - cleaned).pow(2).sum(dim=(1, 2)) / clean.pow(2).sum(dim=(1, 2)).clamp(min=1e-8)).mean()
    return l1 + mse + sc


class DegradedPairs(Dataset):
    """(entry, degraded, clean) crops: clean audio degraded on the fly by a seeded ``Degrader``.

    ``vary=True`` (training) draws a new crop and degradation on every visit; ``vary=False``
    (validation) gives each item the same pair every epoch, so validation losses compare.
    """

    def __init__(self, entries: list[Entry], degrade: DegradeConfig | None, seconds: float | None = 2.0,
                 seed: int = 0, sample_rate: int = 16000, vary: bool = True, repeats: int = 1):
        if not entries:
            raise ValueError("no clean recordings to build degraded pairs from")
        self.entries, self.seconds, self.seed, self.sample_rate = entries, seconds, seed, sample_rate
        self.vary, self.repeats = vary, repeats  # repeats: crops per recording per epoch
        self.degrader = Degrader(degrade, sample_rate, seed) if degrade is not None else None
        self.waves: dict[int, Tensor] = {}
        self.calls = 0

    def __len__(self) -> int:
        return len(self.entries) * self.repeats

    def __getitem__(self, item: int):
        index = item % len(self.entries)
        if index not in self.waves:
            self.waves[index] = load_audio(self.entries[index].audio, self.sample_rate)
        clean = self.waves[index]
        self.calls += 1
        draw = self.calls if self.vary else item
        rng = random.Random(self.seed * 7919 + draw)
        if self.seconds is not None:
            n = int(self.seconds * self.sample_rate)
            if clean.shape[-1] > n:
                start = rng.randrange(0, clean.shape[-1] - n)
                clean = clean[start:start + n]
        degraded = self.degrader(clean, self.seed + draw) if self.degrader else clean
        return self.entries[index], degraded, clean


def collate_pairs(items):
    lengths = torch.tensor([c.shape[-1] for _, _, c in items])
    deg = torch.zeros(len(items), int(lengths.max()))
    clean = torch.zeros_like(deg)
    for i, (_, d, c) in enumerate(items):
        deg[i, : d.shape[-1]], clean[i, : c.shape[-1]] = d, c
    return [e.id for e, _, _ in items], deg, clean, lengths


class RestorationData(L.LightningDataModule):
    """Clean-recording manifests in, (degraded, clean) pairs out; degradations drawn on the fly."""

    def __init__(self, train: str, val: str | None = None, degrade: dict[str, Any] | None = None,
                 seconds: float = 2.0, batch_size: int = 8, seed: int = 0, repeats: int = 1):
        super().__init__()
        fields = {k: tuple(v) if isinstance(v, list) and not k.endswith("_files") else v
                  for k, v in (degrade or {}).items()}
        self.config = DegradeConfig(**fields)
        self.paths, self.seconds, self.batch_size, self.seed = {"train": train, "val": val}, seconds, batch_size, seed
        self.repeats = repeats  # crops of each recording per epoch (training and validation alike)

    def _loader(self, split: str) -> DataLoader:
        pairs = DegradedPairs(read_manifest(self.paths[split]), self.config, self.seconds,
                              seed=self.seed + (0 if split == "train" else 10_000), vary=split == "train",
                              repeats=self.repeats)
        return DataLoader(pairs, batch_size=self.batch_size, shuffle=split == "train", collate_fn=collate_pairs,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        if not self.paths["val"]:
            raise ValueError("no validation manifest configured (data.val)")
        return self._loader("val")


def build_cleaner_encoder(encoder_name: str, tap_layer: int, bottleneck_dim: int, scale: float):
    encoder = load_whisper_encoder(encoder_name, tap_layer=tap_layer)
    report = add_adapter(encoder, ParallelAdapterConfig(target_roles=["ffn"], bottleneck_dim=bottleneck_dim,
                                                        scale=scale), name="cleaner")
    return encoder, report


class FeatureCleaner(L.LightningModule):
    """``adapter_dir``: start from trained adapters exported by an earlier fit (checked against the base)."""

    def __init__(self, encoder_name: str = "whisper-tiny.en", tap_layer: int = 2, bottleneck_dim: int = 128,
                 scale: float = 1.0, lr: float = 1e-3, adapter_dir: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        if adapter_dir is None:
            self.encoder, self.report = build_cleaner_encoder(encoder_name, tap_layer, bottleneck_dim, scale)
        else:
            self.encoder = load_whisper_encoder(encoder_name, tap_layer=tap_layer)
            self.report = load_adapter(self.encoder, adapter_dir, name="cleaner")
        self.strict_loading = False

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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if ".adapters." in k}

    def export(self, directory: str | Path) -> None:
        save_adapter(self.encoder, Path(directory), name="cleaner", base_model_name=self.hparams.encoder_name)


class VocoderTraining(L.LightningModule):
    """``cleaner_dir``: the cleaner's export (needed by stage "cleaned"; stored in the restorer either way).
    ``init_vocoder``: a ``vocoder.safetensors`` to start from (stage "cleaned" fine-tunes stage "clean")."""

    def __init__(self, vocoder: dict[str, Any] | None = None, stage: Literal["clean", "cleaned"] = "clean",
                 cleaner_dir: str | None = None, init_vocoder: str | None = None,
                 encoder_name: str = "whisper-tiny.en", tap_layer: int = 2, bottleneck_dim: int = 128,
                 lr: float = 2e-4, adversarial: bool = False, feature_matching_weight: float = 2.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vocoder = WaveFit(WaveFitConfig(**(vocoder or {})))
        if init_vocoder is not None:
            from safetensors.torch import load_file

            self.vocoder.load_state_dict(load_file(init_vocoder), strict=True)
        if stage == "cleaned" and cleaner_dir is None:
            raise ValueError("stage 'cleaned' needs cleaner_dir (the export of the cleaner's training)")
        self.cleaner = FeatureCleaner(encoder_name, tap_layer, bottleneck_dim, adapter_dir=cleaner_dir)
        for p in self.cleaner.parameters():
            p.requires_grad_(False)
        self.discriminators = Discriminators() if adversarial else None
        self.automatic_optimization = not adversarial

    def train(self, mode: bool = True):
        super().train(mode)
        self.cleaner.eval()
        return self

    def _inputs(self, batch) -> tuple[Tensor, Tensor]:
        _, degraded, clean, lengths = batch
        with torch.no_grad():
            feats = self.cleaner.features(degraded, lengths) if self.hparams.stage == "cleaned" else \
                self.cleaner.features(clean, lengths, clean=True)
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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("vocoder.")}

    def export(self, directory: str | Path) -> None:
        """A restorer directory: this vocoder with the cleaner it was trained beside."""
        from ..restore import build_restorer

        hp = self.hparams
        build_restorer(hp.encoder_name, hp.tap_layer, self.vocoder, cleaner_encoder=self.cleaner.encoder).save(directory)
