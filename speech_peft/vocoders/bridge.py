"""A trained bridge in front of the frozen pretrained HiFi-GAN: encoder features -> HiFi-GAN's log-mel.

The frozen Whisper encoder gives 50 frames/s of ``feature_dim`` features; HiFi-GAN reads 80-band
log-mel at 86.13 frames/s (22,050 Hz, hop 256). The bridge maps one onto the other (a convolution in,
linear interpolation to the mel frame rate, residual convolution blocks, a convolution out); the
generator stays frozen. ``BridgedHiFiGAN`` is the restorer's ``hifigan`` vocoder backend.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torchaudio.functional as AF
from torch import Tensor, nn
from torch.nn import functional as F

from . import hifigan


@dataclass(frozen=True)
class BridgeConfig:
    feature_dim: int = 384
    channels: int = 256
    blocks: int = 4
    kernel_size: int = 5
    n_mels: int = hifigan.N_MELS

    def to_dict(self) -> dict:
        return asdict(self)


class ResidualConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mix(F.gelu(self.conv(x)))


class FeatureToMel(nn.Module):
    """(B, T, feature_dim) features -> (B, n_mels, frames) log-mel."""

    def __init__(self, config: BridgeConfig = BridgeConfig()):
        super().__init__()
        self.config = config
        self.conv_in = nn.Conv1d(config.feature_dim, config.channels, 3, padding=1)
        self.blocks = nn.Sequential(*(ResidualConv(config.channels, config.kernel_size) for _ in range(config.blocks)))
        self.conv_out = nn.Conv1d(config.channels, config.n_mels, 3, padding=1)

    def forward(self, feats: Tensor, frames: int) -> Tensor:
        x = self.conv_in(feats.transpose(1, 2))
        x = F.interpolate(x, size=frames, mode="linear", align_corners=False)
        return self.conv_out(self.blocks(x))


def mel_frames(samples: int, sample_rate: int = 16000) -> int:
    """HiFi-GAN mel frames covering ``samples`` of audio at ``sample_rate``."""
    return max(1, round(samples * hifigan.SAMPLE_RATE / sample_rate) // hifigan.HOP)


def target_mel(waves: Tensor, sample_rate: int = 16000) -> Tensor:
    """The log-mel HiFi-GAN would be given for these waveforms: (B, 80, mel_frames(samples))."""
    mel = hifigan.log_mel(AF.resample(waves, sample_rate, hifigan.SAMPLE_RATE))
    return mel[..., : mel_frames(waves.shape[-1], sample_rate)]


class BridgedHiFiGAN(nn.Module):
    """The ``hifigan`` vocoder backend: the trained bridge, then the frozen pretrained generator."""

    def __init__(self, bridge: FeatureToMel, generator: nn.Module | None = None, weights: str = "universal"):
        super().__init__()
        self.bridge, self.weights = bridge, weights
        self.generator = generator if generator is not None else hifigan.load_hifigan(weights)

    def synthesise(self, feats: Tensor, samples: int, sample_rate: int = 16000) -> Tensor:
        """(B, T, D) features of ``samples`` of audio -> (B, samples) waveform at ``sample_rate``."""
        mel = self.bridge(feats, mel_frames(samples, sample_rate))
        wave = AF.resample(self.generator(mel), hifigan.SAMPLE_RATE, sample_rate)
        return F.pad(wave, (0, max(0, samples - wave.shape[-1])))[..., :samples]


def mel_loss(predicted: Tensor, target: Tensor) -> Tensor:
    """L1 on log-mel plus spectral convergence of the magnitude mel (||S - S'|| / ||S||, per utterance)."""
    l1 = (predicted - target).abs().mean()
    magnitude, reference = predicted.exp(), target.exp()
    sc = ((reference - magnitude).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1).clamp(min=1e-8)).mean()
    return l1 + sc

