"""Whisper's log-mel features without torch: the filter bank both the torch encoder and the CTranslate2
backend use (kept in the cache), and the numpy features the CTranslate2 backend feeds its engine."""
from __future__ import annotations

import functools

import numpy as np
from .errors import UserError

SAMPLE_RATE, N_FFT, HOP, WINDOW_SAMPLES = 16000, 400, 160, 30 * 16000


@functools.lru_cache(maxsize=2)
def whisper_mel_filters(n_mels: int) -> np.ndarray:
    """librosa's Slaney mel filters (Whisper's), kept in the cache: importing librosa's filters pulls in
    scipy.signal and numba, most of a second of a short job."""
    from .fileio import atomic_write
    from .weights import cache_dir

    path = cache_dir() / f"whisper_mel_filters_{n_mels}.npy"
    if path.is_file():
        filters = np.load(path, allow_pickle=False)
        if filters.shape == (n_mels, N_FFT // 2 + 1):
            return filters
    import librosa

    filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels).astype(np.float32)
    atomic_write(path, lambda tmp: np.save(tmp, filters))
    return filters


def log_mel_30s(waves: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Whisper's log-mel features of (B, samples <= 30 s) audio padded to 30 s: (B, n_mels, 3000), the same
    numbers as ``encoders.whisper.log_mel`` (which runs on torch tensors, on any device)."""
    waves = np.asarray(waves, dtype=np.float32)
    if waves.shape[-1] > WINDOW_SAMPLES:
        raise UserError(f"input of {waves.shape[-1] / SAMPLE_RATE:.1f} s exceeds Whisper's 30 s window")
    padded = np.zeros((waves.shape[0], WINDOW_SAMPLES), dtype=np.float32)
    padded[:, : waves.shape[-1]] = waves
    padded = np.pad(padded, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[:, ::HOP][:, :-1]
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    mel = np.einsum("mf,btf->bmt", whisper_mel_filters(n_mels), power.astype(np.float32))
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max(axis=(-2, -1), keepdims=True) - 8.0)
    return ((logs + 4.0) / 4.0).astype(np.float32)
