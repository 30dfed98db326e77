"""Load audio through soundfile: mono, resampled, checked. Every problem names the file."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from ..errors import UserError
from ..fileio import atomic_write

if TYPE_CHECKING:
    import torch

MAX_SECONDS = 600.0  # longer files are almost always a mistake (a whole session, a wrong file)
MIN_SECONDS = 0.1    # shorter holds no word (the shortest spoken digit is 0.14 s): a truncated or wrong file


class AudioError(UserError):
    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def probe(path: str | Path, max_seconds: float = MAX_SECONDS, min_seconds: float = MIN_SECONDS) -> tuple[int, int, int]:
    """(frames, sample rate, channels) from the header, or AudioError."""
    path = Path(path)
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            raise AudioError(path, f"a symbolic link that leads nowhere (dangling or a loop: {os.readlink(path)})")
        raise AudioError(path, "file not found" if not path.exists() else "not a regular file")
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises several types for unreadable data
        raise AudioError(path, f"unreadable or corrupt audio ({err})") from None
    if info.frames <= 0:
        raise AudioError(path, "empty audio (0 samples)")
    missing = _missing_wav_bytes(path)
    if missing:  # libsndfile reads what is there without a word: a cut-off copy would pass for the whole
        raise AudioError(path, f"truncated: the WAV header promises {missing} more bytes of audio than the file "
                               "holds (a copy or download cut off)")
    if info.frames / info.samplerate < min_seconds:
        raise AudioError(path, f"too short: {info.frames} samples ({info.frames / info.samplerate:.3f} s, "
                               f"minimum {min_seconds} s)")
    if info.frames / info.samplerate > max_seconds:
        raise AudioError(path, f"absurd length {info.frames / info.samplerate:.0f} s (limit {max_seconds:.0f} s)")
    return info.frames, info.samplerate, info.channels


def _missing_wav_bytes(path: Path) -> int:
    """For a RIFF/WAVE file, how many bytes of its ``data`` chunk the header promises beyond the end of the
    file (0 when whole, or when the size is left open as streaming writers do, or not a RIFF WAV)."""
    with open(path, "rb") as handle:
        if handle.read(12)[8:12] != b"WAVE":
            return 0
        size = path.stat().st_size
        while True:
            header = handle.read(8)
            if len(header) < 8:
                return 0
            declared = int.from_bytes(header[4:], "little")
            if header[:4] == b"data":
                if declared in (0, 0xFFFFFFFF):
                    return 0
                return max(0, declared - (size - handle.tell()))
            handle.seek(declared + declared % 2, 1)  # chunks are padded to an even length


def read_audio(path: str | Path, sample_rate: int | None = 16000, max_seconds: float = MAX_SECONDS,
               mono: bool = True) -> np.ndarray:
    """Float32 samples, (samples,) mono or (channels, samples), at ``sample_rate`` (None: the file's own
    rate). Needs no torch unless the file must be resampled."""
    probe(path, max_seconds)
    return decode_audio(str(path), path, sample_rate, mono)


def decode_audio(source, where: str | Path, sample_rate: int | None = 16000, mono: bool = True) -> np.ndarray:
    """``read_audio`` of a path or file-like ``source`` (audio bytes in a shard); problems name ``where``."""
    try:
        data, file_rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for unreadable data
        raise AudioError(where, f"unreadable or corrupt audio ({err})") from None
    if not np.isfinite(data).all():
        raise AudioError(where, "contains NaN or infinite samples")
    wave = np.ascontiguousarray(data.T)
    if mono:
        wave = wave.mean(0)
    if sample_rate is not None and file_rate != sample_rate:
        import torch
        import torchaudio.functional as AF

        wave = AF.resample(torch.from_numpy(wave), file_rate, sample_rate).numpy()
    return wave


def load_audio(path: str | Path, sample_rate: int | None = 16000, max_seconds: float = MAX_SECONDS,
               mono: bool = True) -> "torch.Tensor":
    """``read_audio`` as a torch tensor."""
    import torch

    return torch.from_numpy(read_audio(path, sample_rate, max_seconds, mono))


def save_audio(path: str | Path, wave: "torch.Tensor | np.ndarray", sample_rate: int) -> Path:
    """Write atomically: 16-bit PCM when the samples fit [-1, 1], float otherwise."""
    data = np.asarray(wave.detach().cpu().float().numpy() if hasattr(wave, "detach") else wave, dtype=np.float32)
    subtype = "PCM_16" if np.abs(data).max(initial=0) <= 1.0 else "FLOAT"

    def write(tmp: str) -> None:
        try:
            sf.write(tmp, data.T if data.ndim == 2 else data, sample_rate, subtype=subtype)
        except sf.SoundFileError as err:  # libsndfile reports a full disk as "System error."
            needed = data.size * (2 if subtype == "PCM_16" else 4) + 4096
            if shutil.disk_usage(Path(tmp).parent).free < needed:
                raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
            raise OSError(errno.EIO, f"cannot write audio ({err})", str(path)) from None

    return atomic_write(path, write)
