"""RNNoise (Xiph; trained on many hours of speech and noise) as a restorer that ``speech-peft restore --baseline
rnnoise`` runs: a pretrained noise suppressor people reach for, and one that has heard noises no recording
here holds. With an attenuation limit the input is only lowered toward what RNNoise hands back, by at most
that many dB per band (the input-gain synthesis of ``input_gain.py``), which keeps the words a full
suppression cuts into.

The suppressor is the C library inside the ``pyrnnoise`` wheel, called through ctypes: its own Python layer
is not imported, so its audio-file dependencies are never loaded.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor, nn

from ..weights import package_file
from .input_gain import check_attenuation_limit, lower_toward

NAME = "rnnoise"
RATE = 48000    # RNNoise runs on 10 ms frames at 48 kHz, 16-bit scale
DELAY_S = 0.02  # and hands each frame back two frames late


@functools.cache
def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(package_file("pyrnnoise", "librnnoise.so", "RNNoise library files (Linux builds)")))
    lib.rnnoise_create.restype, lib.rnnoise_create.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    floats = ctypes.POINTER(ctypes.c_float)
    lib.rnnoise_process_frame.restype = ctypes.c_float
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
    return lib


def suppress(wave: Tensor, sample_rate: int = 16000) -> Tensor:
    """One (samples,) waveform through RNNoise, aligned back to the input, same length and rate."""
    lib = _library()
    frame = lib.rnnoise_get_frame_size()
    delay = round(DELAY_S * RATE)
    high = AF.resample(wave.detach().cpu().float(), sample_rate, RATE).numpy() * 32768.0
    padded = np.zeros(-(-(high.shape[-1] + delay) // frame) * frame, dtype=np.float32)
    padded[: high.shape[-1]] = high
    out = np.zeros_like(padded)
    floats = ctypes.POINTER(ctypes.c_float)
    state = lib.rnnoise_create(None)
    try:
        for start in range(0, padded.shape[-1], frame):
            chunk = np.ascontiguousarray(padded[start:start + frame])
            target = np.zeros(frame, dtype=np.float32)
            lib.rnnoise_process_frame(state, target.ctypes.data_as(floats), chunk.ctypes.data_as(floats))
            out[start:start + frame] = target
    finally:
        lib.rnnoise_destroy(state)
    aligned = torch.from_numpy(out[delay:delay + high.shape[-1]] / 32768.0)
    low = AF.resample(aligned, RATE, sample_rate)
    return torch.nn.functional.pad(low, (0, max(0, wave.shape[-1] - low.shape[-1])))[: wave.shape[-1]].to(wave)


def suppress_batch(waves: Tensor, sample_rate: int = 16000) -> Tensor:
    """(B, samples) waveforms each through RNNoise (its state starts afresh for each)."""
    return torch.stack([suppress(wave, sample_rate) for wave in waves])


class RNNoise(nn.Module):
    """Each file through RNNoise; with ``attenuation_limit_db``, the input lowered toward RNNoise's output
    by at most that much per band."""

    backend = NAME
    package = "pyrnnoise"  # its version names the outputs' restorer

    def __init__(self, sample_rate: int = 16000, attenuation_limit_db: float | None = None):
        super().__init__()
        _library()  # a clear error at load, not at the first file
        if attenuation_limit_db is not None:
            check_attenuation_limit(attenuation_limit_db, "--attenuation-limit-db")
        self.sample_rate, self.attenuation_limit_db = sample_rate, attenuation_limit_db

    @torch.inference_mode()
    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        suppressed = suppress_batch(waves, self.sample_rate)
        if self.attenuation_limit_db is None:
            return suppressed
        return lower_toward(waves, suppressed, self.sample_rate, self.attenuation_limit_db)
