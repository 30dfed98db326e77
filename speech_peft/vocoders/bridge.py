"""A trained bridge in front of the frozen pretrained HiFi-GAN: what it reads -> HiFi-GAN's log-mel.

It reads (``BridgeConfig.inputs``) the cleaned encoder features (Miipher-2's design), the input's own
log-mel (analysis-synthesis, as VoiceFixer restores), or both. The frozen Whisper encoder gives 50
frames/s of ``feature_dim`` features; HiFi-GAN reads 80-band log-mel at 86.13 frames/s (22,050 Hz, hop
256). Features pass a convolution and linear interpolation to the mel frame rate, the input's log-mel a
convolution; their sum passes residual convolution blocks and a convolution out. With the input's mel
among the inputs the bridge predicts a correction of it, zero at first: an untrained bridge hands the
vocoder the input as it is. The generator stays frozen. ``BridgedHiFiGAN`` is the restorer's ``hifigan``
vocoder backend; with ``synthesis="input_gain"`` the prediction lowers bands of the input's own spectrum
instead of being spoken by the generator (``input_gain.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torchaudio.functional as AF
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UserError
from . import hifigan
from .input_gain import DEFAULT_LIMIT_DB, apply_mel_gain

INPUTS = ("features", "mel", "features+mel")
SYNTHESES = ("vocoder", "input_gain")
LOG_MEL_CEILING = 10.0  # a full-scale sine reaches about 2


def check_synthesis(synthesis: str, option: str = "synthesis") -> str:
    """``synthesis`` itself, or a one-line error naming the ``option`` and the choices."""
    if synthesis not in SYNTHESES:
        raise UserError(f"{option} {synthesis!r}: choose one of {', '.join(SYNTHESES)}")
    return synthesis


def check_attenuation_limit(limit_db: float, option: str = "attenuation limit") -> float:
    """``limit_db`` itself (the most input_gain synthesis lowers a band, in dB), or a one-line error."""
    if not (isinstance(limit_db, (int, float)) and 0 < limit_db < float("inf")):
        raise UserError(f"{option} {limit_db!r}: give a positive number of dB (the most a band is lowered)")
    return float(limit_db)


@dataclass(frozen=True)
class BridgeConfig:
    feature_dim: int = 384
    channels: int = 256
    blocks: int = 4
    kernel_size: int = 5
    n_mels: int = hifigan.N_MELS
    inputs: Literal["features", "mel", "features+mel"] = "features"
    # block i dilates by dilation_growth ** i: with 2, four blocks of kernel 5 hear 0.7 s instead of 0.2 s,
    # enough to tell a steady noise floor from speech
    dilation_growth: int = 1
    # noise-aware: the bridge also reads each band's noise floor (a low quantile of the input's log-mel over
    # time), so a noise it never heard is still told apart from the speech above it
    noise_floor: bool = False

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise UserError(f"bridge inputs {self.inputs!r}: choose one of {', '.join(INPUTS)}")
        if self.dilation_growth < 1:
            raise UserError(f"bridge dilation_growth {self.dilation_growth}: give 1 (no dilation) or more")
        if self.noise_floor and not self.reads_mel:
            raise UserError(f"bridge noise_floor is estimated from the input's mel: inputs {self.inputs!r} "
                            "does not read it (choose mel or features+mel)")

    @property
    def reads_features(self) -> bool:
        return "features" in self.inputs

    @property
    def reads_mel(self) -> bool:
        return "mel" in self.inputs

    def to_dict(self) -> dict:
        return asdict(self)


class ResidualConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2 * dilation, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mix(F.gelu(self.conv(x)))


class FeatureToMel(nn.Module):
    """(B, T, feature_dim) features and/or the input's (B, n_mels, frames) log-mel -> (B, n_mels, frames)
    log-mel."""

    def __init__(self, config: BridgeConfig = BridgeConfig()):
        super().__init__()
        self.config = config
        if config.reads_features:
            self.conv_in = nn.Conv1d(config.feature_dim, config.channels, 3, padding=1)
        if config.reads_mel:
            self.mel_in = nn.Conv1d(config.n_mels, config.channels, 3, padding=1)
        self.blocks = nn.Sequential(*(ResidualConv(config.channels, config.kernel_size, config.dilation_growth ** i)
                                      for i in range(config.blocks)))
        if config.noise_floor:  # starts unheard: a bridge trained without it carries on unchanged
            self.floor_in = nn.Conv1d(config.n_mels, config.channels, 1)
            nn.init.zeros_(self.floor_in.weight)
            nn.init.zeros_(self.floor_in.bias)
        self.conv_out = nn.Conv1d(config.channels, config.n_mels, 3, padding=1)
        if config.reads_mel:  # a correction of the input's mel that starts at none
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, feats: Tensor | None, frames: int, input_mel: Tensor | None = None) -> Tensor:
        """``feats``: (B, T, feature_dim), needed when the bridge reads features; ``input_mel``: the input's
        log-mel (``target_mel`` of the degraded audio), needed when it reads the mel."""
        x = 0
        if self.config.reads_features:
            if feats is None:
                raise UserError(f"this bridge reads {self.config.inputs}: give the encoder features")
            x = F.interpolate(self.conv_in(feats.transpose(1, 2)), size=frames, mode="linear", align_corners=False)
        if self.config.reads_mel:
            if input_mel is None:
                raise UserError(f"this bridge reads {self.config.inputs}: give the input's log-mel")
            input_mel = fit_frames(input_mel, frames)
            x = x + self.mel_in(input_mel)
            if self.config.noise_floor:
                x = x + self.floor_in(noise_floor(input_mel))
        out = self.conv_out(self.blocks(x))
        return out + input_mel if self.config.reads_mel else out


def noise_floor(mel: Tensor, quantile: float = 0.1) -> Tensor:
    """Each band's noise floor in a (B, n_mels, F) log-mel: its ``quantile`` over time, as (B, n_mels, 1).
    Speech comes and goes; a noise that stays is what is left in a band's quietest frames."""
    return torch.quantile(mel.float(), quantile, dim=-1, keepdim=True).to(mel.dtype)


def fit_frames(mel: Tensor, frames: int) -> Tensor:
    """A (B, n_mels, F) log-mel cut or padded with silence to ``frames`` frames."""
    return F.pad(mel, (0, max(0, frames - mel.shape[-1])), value=hifigan.LOG_FLOOR)[..., :frames]


def lower_toward(waves: Tensor, guide: Tensor, sample_rate: int = 16000, limit_db: float = DEFAULT_LIMIT_DB) -> Tensor:
    """(B, samples) audio with each mel band lowered toward that of ``guide`` (audio of the same length: a
    denoiser's output, or the clean recording for a ceiling), never raised and by at most ``limit_db``."""
    input_mel = target_mel(waves, sample_rate)
    guide_mel = fit_frames(target_mel(guide, sample_rate), input_mel.shape[-1])
    return apply_mel_gain(waves, input_mel, guide_mel, sample_rate, limit_db)


def mel_frames(samples: int, sample_rate: int = 16000) -> int:
    """HiFi-GAN mel frames covering ``samples`` of audio at ``sample_rate``."""
    return max(1, round(samples * hifigan.SAMPLE_RATE / sample_rate) // hifigan.HOP)


def target_mel(waves: Tensor, sample_rate: int = 16000) -> Tensor:
    """The log-mel HiFi-GAN would be given for these waveforms: (B, 80, mel_frames(samples))."""
    mel = hifigan.log_mel(AF.resample(waves, sample_rate, hifigan.SAMPLE_RATE))
    return mel[..., : mel_frames(waves.shape[-1], sample_rate)]


class BridgedHiFiGAN(nn.Module):
    """The ``hifigan`` vocoder backend: the trained bridge, then the frozen pretrained generator speaks its
    log-mel (``synthesis="vocoder"``), or the log-mel lowers the input's own bands (``"input_gain"``), each
    by at most ``attenuation_limit_db``."""

    def __init__(self, bridge: FeatureToMel, generator: nn.Module | None = None, weights: str = "universal",
                 synthesis: str = "vocoder", attenuation_limit_db: float = DEFAULT_LIMIT_DB):
        super().__init__()
        self.bridge, self.weights, self.synthesis = bridge, weights, check_synthesis(synthesis)
        self.attenuation_limit_db = check_attenuation_limit(attenuation_limit_db)
        if generator is None and synthesis == "vocoder":
            generator = hifigan.load_hifigan(weights)
        self.generator = generator

    def mel(self, feats: Tensor | None, samples: int, sample_rate: int = 16000, waves: Tensor | None = None) -> Tensor:
        """The log-mel the generator is given (the bridge's output) for ``samples`` of audio."""
        input_mel = target_mel(waves, sample_rate) if self.bridge.config.reads_mel else None
        return self.bridge(feats, mel_frames(samples, sample_rate), input_mel)

    def synthesise(self, feats: Tensor | None, samples: int, sample_rate: int = 16000,
                   waves: Tensor | None = None) -> Tensor:
        """(B, T, D) features of ``samples`` of audio (and the audio ``waves`` itself, for a bridge that reads
        its mel or a gain on the input) -> (B, samples) waveform at ``sample_rate``."""
        if self.synthesis == "input_gain":
            if waves is None:
                raise UserError("input_gain synthesis lowers bands of the input: give the input audio")
            frames = mel_frames(samples, sample_rate)
            input_mel = fit_frames(target_mel(waves, sample_rate), frames)
            predicted = self.bridge(feats, frames, input_mel if self.bridge.config.reads_mel else None)
            return apply_mel_gain(waves, input_mel, predicted, sample_rate, self.attenuation_limit_db)
        mel = self.mel(feats, samples, sample_rate, waves)
        wave = AF.resample(self.generator(mel), hifigan.SAMPLE_RATE, sample_rate)
        return F.pad(wave, (0, max(0, samples - wave.shape[-1])))[..., :samples]


def mel_loss(predicted: Tensor, target: Tensor) -> Tensor:
    """L1 on log-mel plus spectral convergence of the magnitude mel (||S - S'|| / ||S||, per utterance)."""
    l1 = (predicted - target).abs().mean()
    # exp of an untrained prediction overflows; above any log-mel audio in [-1, 1] can have, L1 alone pulls down
    magnitude, reference = predicted.clamp(max=LOG_MEL_CEILING).exp(), target.exp()
    sc = ((reference - magnitude).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1).clamp(min=1e-8)).mean()
    return l1 + sc

