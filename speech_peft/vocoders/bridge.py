"""A trained bridge in front of the frozen pretrained HiFi-GAN: what it reads -> HiFi-GAN's log-mel.

It reads (``BridgeConfig.inputs``) the cleaned encoder features (Miipher-2's design), the input's own
log-mel (analysis-synthesis, as VoiceFixer restores), or both. The frozen Whisper encoder gives 50
frames/s of ``feature_dim`` features; HiFi-GAN reads 80-band log-mel at 86.13 frames/s (22,050 Hz, hop
256). Features pass a convolution and linear interpolation to the mel frame rate, the input's log-mel a
convolution; their sum passes residual convolution blocks and a convolution out. With the input's mel
among the inputs the bridge predicts a correction of it, zero at first: an untrained bridge hands the
vocoder the input as it is. The generator stays frozen. ``BridgedHiFiGAN`` is the restorer's ``hifigan``
vocoder backend; with ``synthesis="input_gain"`` the prediction lowers bands of the input's own spectrum
instead of being spoken by the generator (``input_gain.py``). A guided bridge (``guide="rnnoise"``) also reads
how a pretrained noise suppressor lowered each band of the input: RNNoise has heard many hours of noises no
recording here holds, and the bridge learns where to follow it and where it cuts into speech.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torchaudio.functional as AF
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UserError
from . import hifigan, rnnoise
from .hifigan import fit_frames, mel_frames, target_mel
from .input_gain import DEFAULT_LIMIT_DB, apply_mel_gain, check_attenuation_limit

INPUTS = ("features", "mel", "features+mel")
SYNTHESES = ("vocoder", "input_gain")
GUIDES = ("rnnoise",)
GUIDE_FLOOR = -4.6  # natural log of -40 dB: a band the guide silenced reads as lowered by 40 dB
ZERO_STARTED = ("floor_in.", "guide_in.")  # inputs that start unheard, so an older bridge carries on exactly
LOG_MEL_CEILING = 10.0  # a full-scale sine reaches about 2


def check_synthesis(synthesis: str, option: str = "synthesis") -> str:
    """``synthesis`` itself, or a one-line error naming the ``option`` and the choices."""
    if synthesis not in SYNTHESES:
        raise UserError(f"{option} {synthesis!r}: choose one of {', '.join(SYNTHESES)}")
    return synthesis


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
    # guided: the bridge also reads how this suppressor lowered each band of the input (see the module's doc)
    guide: str | None = None

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise UserError(f"bridge inputs {self.inputs!r}: choose one of {', '.join(INPUTS)}")
        if self.dilation_growth < 1:
            raise UserError(f"bridge dilation_growth {self.dilation_growth}: give 1 (no dilation) or more")
        if self.noise_floor and not self.reads_mel:
            raise UserError(f"bridge noise_floor is estimated from the input's mel: inputs {self.inputs!r} "
                            "does not read it (choose mel or features+mel)")
        if self.guide is not None and self.guide not in GUIDES:
            raise UserError(f"bridge guide {self.guide!r}: choose one of {', '.join(GUIDES)} (or none)")
        if self.guide is not None and not self.reads_mel:
            raise UserError(f"bridge guide is read against the input's mel: inputs {self.inputs!r} does not read "
                            "it (choose mel or features+mel)")

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
        if config.guide is not None:  # starts unheard too
            self.guide_in = nn.Conv1d(config.n_mels, config.channels, 3, padding=1)
            nn.init.zeros_(self.guide_in.weight)
            nn.init.zeros_(self.guide_in.bias)
        self.conv_out = nn.Conv1d(config.channels, config.n_mels, 3, padding=1)
        if config.reads_mel:  # a correction of the input's mel that starts at none
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, feats: Tensor | None, frames: int, input_mel: Tensor | None = None,
                guide_mel: Tensor | None = None) -> Tensor:
        """``feats``: (B, T, feature_dim), needed when the bridge reads features; ``input_mel``: the input's
        log-mel (``target_mel`` of the degraded audio), needed when it reads the mel; ``guide_mel``: the log-mel
        of the input through the guide (``guide_mel``), needed by a guided bridge."""
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
            if self.config.guide is not None:
                if guide_mel is None:
                    raise UserError(f"this bridge is guided by {self.config.guide}: give the guide's log-mel")
                lowered = (fit_frames(guide_mel, frames) - input_mel).clamp(min=GUIDE_FLOOR, max=0.0)
                x = x + self.guide_in(lowered)
        out = self.conv_out(self.blocks(x))
        return out + input_mel if self.config.reads_mel else out


    def guide_mel(self, waves: Tensor, frames: int, sample_rate: int = 16000) -> Tensor | None:
        """The (B, n_mels, frames) log-mel of (B, samples) input audio through this bridge's guide; None for
        a bridge without one."""
        if self.config.guide is None:
            return None
        with torch.no_grad():
            return fit_frames(target_mel(rnnoise.suppress_batch(waves, sample_rate), sample_rate), frames)


def noise_floor(mel: Tensor, quantile: float = 0.1) -> Tensor:
    """Each band's noise floor in a (B, n_mels, F) log-mel: its ``quantile`` over time, as (B, n_mels, 1).
    Speech comes and goes; a noise that stays is what is left in a band's quietest frames."""
    return torch.quantile(mel.float(), quantile, dim=-1, keepdim=True).to(mel.dtype)


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
        frames = mel_frames(samples, sample_rate)
        input_mel = target_mel(waves, sample_rate) if self.bridge.config.reads_mel else None
        return self.bridge(feats, frames, input_mel, self.bridge.guide_mel(waves, frames, sample_rate))

    def synthesise(self, feats: Tensor | None, samples: int, sample_rate: int = 16000,
                   waves: Tensor | None = None) -> Tensor:
        """(B, T, D) features of ``samples`` of audio (and the audio ``waves`` itself, for a bridge that reads
        its mel or a gain on the input) -> (B, samples) waveform at ``sample_rate``."""
        if self.synthesis == "input_gain":
            if waves is None:
                raise UserError("input_gain synthesis lowers bands of the input: give the input audio")
            frames = mel_frames(samples, sample_rate)
            input_mel = fit_frames(target_mel(waves, sample_rate), frames)
            predicted = self.bridge(feats, frames, input_mel if self.bridge.config.reads_mel else None,
                                    self.bridge.guide_mel(waves, frames, sample_rate))
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

