"""The bridge's predicted clean log-mel applied to the input itself instead of spoken by a vocoder.

Where the prediction lies below the input's own log-mel, the difference is a gain on those mel bands of
the input's spectrum (its phase kept), between 1 and the attenuation limit (at most ``limit_db`` lower: a
smaller limit trades noise left in for less speech taken out, as a denoiser's attenuation limit does).
Nothing is resynthesised, so what a vocoder loses on real voices (HiFi-GAN V1's copy synthesis of held-out
real speakers costs several WER points on clean input) is never lost, and a prediction equal to the input
returns the input unchanged. It cannot add what the input lacks (a telephone band's missing highs); only
the vocoder can.

The gains live on HiFi-GAN's mel frames (22,050 Hz, hop 256, frame ``i`` centred at sample
``256 i + 128``); they are carried to a 16 kHz STFT (hop 10 ms) by linear interpolation in time and by
the same mel filter bank, normalised per bin, in frequency.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ..errors import UserError
from . import hifigan
from .hifigan import fit_frames, target_mel

N_FFT, HOP = 512, 160
DEFAULT_LIMIT_DB = 20.0


@functools.lru_cache(maxsize=4)
def _band_weights(sample_rate: int, device: str) -> Tensor:
    """(n_fft // 2 + 1, n_mels): each STFT bin as a mixture of the mel bands that cover it. Built outside
    inference mode: the cached tensor is reused by training, which records it for backward."""
    with torch.inference_mode(False):
        return _build_band_weights(sample_rate, device)


def _build_band_weights(sample_rate: int, device: str) -> Tensor:
    import librosa

    basis = torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=N_FFT, n_mels=hifigan.N_MELS, fmin=0.0,
                                                 fmax=min(hifigan.FMAX, sample_rate / 2))).float()
    uncovered = basis.sum(0) == 0  # the DC bin and any bin above the top band: follow the nearest band
    basis[0, uncovered & (torch.arange(basis.shape[1]) < basis.shape[1] // 2)] = 1.0
    basis[-1, uncovered & (torch.arange(basis.shape[1]) >= basis.shape[1] // 2)] = 1.0
    return (basis / basis.sum(0, keepdim=True)).T.contiguous().to(device)


def _to_stft_frames(gains: Tensor, frames: int, sample_rate: int) -> Tensor:
    """(B, n_mels, mel frames) -> (B, n_mels, frames) at the STFT's frame centres."""
    centres = torch.arange(frames, device=gains.device, dtype=torch.float32) * HOP / sample_rate
    position = (centres * hifigan.SAMPLE_RATE - hifigan.HOP / 2) / hifigan.HOP
    position = position.clamp(0, gains.shape[-1] - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=gains.shape[-1] - 1)
    weight = position - low
    return gains[..., low] * (1 - weight) + gains[..., high] * weight


def _log_floor(limit_db: float) -> float:
    return math.log(10.0 ** (-limit_db / 20.0))


def band_log_gains(input_mel: Tensor, predicted_mel: Tensor, limit_db: float = DEFAULT_LIMIT_DB) -> Tensor:
    """Per mel band and frame, the natural-log gain that lowers the input to the prediction: never above 0
    (nothing raised), never more than ``limit_db`` down."""
    return (predicted_mel - input_mel).clamp(min=_log_floor(limit_db), max=0.0)


def apply_mel_gain(waves: Tensor, input_mel: Tensor, predicted_mel: Tensor, sample_rate: int = 16000,
                   limit_db: float = DEFAULT_LIMIT_DB) -> Tensor:
    """(B, samples) input audio, its (B, n_mels, F) log-mel and the predicted clean log-mel -> (B, samples)
    audio: the input with each band lowered to the prediction (never raised, never more than ``limit_db``)."""
    log_gain = band_log_gains(input_mel, predicted_mel, limit_db)
    window = torch.hann_window(N_FFT, device=waves.device)
    spec = torch.stft(waves, N_FFT, HOP, window=window, return_complex=True)
    band_gain = _to_stft_frames(log_gain.exp(), spec.shape[-1], sample_rate)
    gain = _band_weights(sample_rate, str(waves.device)) @ band_gain
    return torch.istft(spec * gain, N_FFT, HOP, window=window, length=waves.shape[-1])


def check_attenuation_limit(limit_db: float, option: str = "attenuation limit") -> float:
    """``limit_db`` itself (the most input_gain synthesis lowers a band, in dB), or a one-line error."""
    if not (isinstance(limit_db, (int, float)) and 0 < limit_db < float("inf")):
        raise UserError(f"{option} {limit_db!r}: give a positive number of dB (the most a band is lowered)")
    return float(limit_db)


def lower_toward(waves: Tensor, guide: Tensor, sample_rate: int = 16000, limit_db: float = DEFAULT_LIMIT_DB) -> Tensor:
    """(B, samples) audio with each mel band lowered toward that of ``guide`` (audio of the same length: a
    denoiser's output, or the clean recording for a ceiling), never raised and by at most ``limit_db``."""
    input_mel = target_mel(waves, sample_rate)
    guide_mel = fit_frames(target_mel(guide, sample_rate), input_mel.shape[-1])
    return apply_mel_gain(waves, input_mel, guide_mel, sample_rate, limit_db)
