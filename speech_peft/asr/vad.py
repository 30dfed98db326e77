"""Voice activity: where a recording holds speech, and how long-form audio is cut into decoder windows.

The detector is Silero VAD v6 (MIT), whose ONNX model ships inside the ``silero-vad`` wheel; it runs
here with onnxruntime on numpy arrays. The package itself is not imported: importing it loads torch and
sets torch's thread count to one for the whole process.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..weights import package_file

SAMPLE_RATE = 16000
CHUNK, CONTEXT = 512, 64  # the model scores 32 ms chunks, each seen with the 4 ms before it


@dataclass(frozen=True)
class VADConfig:
    threshold: float = 0.5        # speech starts where the probability reaches this
    release: float = 0.35         # and ends once it stays below this for min_silence_s
    min_speech_s: float = 0.1     # shorter bursts are clicks, not words (a spoken digit lasts 0.14 s or more)
    min_silence_s: float = 0.3    # pauses shorter than this stay inside one region
    pad_s: float = 0.2            # kept around each region, so no word loses its edges


def model_path() -> Path:
    return package_file("silero-vad", "data/silero_vad.onnx", "Silero VAD ONNX model files")


@functools.lru_cache(maxsize=1)
def _session():
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # tiny model: threads cost more than they give
    return onnxruntime.InferenceSession(str(model_path()), sess_options=options, providers=["CPUExecutionProvider"])


def speech_probabilities(wave: np.ndarray) -> np.ndarray:
    """Probability of speech in each 32 ms chunk of 16 kHz mono audio."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    chunks = -(-len(wave) // CHUNK)
    padded = np.zeros(CONTEXT + chunks * CHUNK, dtype=np.float32)
    padded[CONTEXT:CONTEXT + len(wave)] = wave
    session, state, rate = _session(), np.zeros((2, 1, 128), dtype=np.float32), np.array(SAMPLE_RATE, dtype=np.int64)
    probs = np.empty(chunks, dtype=np.float32)
    for i in range(chunks):
        frame = padded[i * CHUNK: i * CHUNK + CONTEXT + CHUNK][None]
        out, state = session.run(None, {"input": frame, "state": state, "sr": rate})
        probs[i] = out.reshape(-1)[0]
    return probs


def regions_from_probabilities(probs: np.ndarray, samples: int, config: VADConfig = VADConfig(),
                               max_seconds: float = 30.0) -> list[tuple[int, int]]:
    """Speech regions (start, end) in samples: hysteresis on the chunk probabilities, short pauses
    bridged, short bursts dropped, each padded; a region longer than ``max_seconds`` is cut at its
    least speech-like chunk in the second half of the allowed span."""
    silence_chunks = max(1, round(config.min_silence_s * SAMPLE_RATE / CHUNK))
    raw, start, quiet = [], None, 0
    for i, p in enumerate(probs):
        if start is None:
            if p >= config.threshold:
                start, quiet = i, 0
        elif p < config.release:
            quiet += 1
            if quiet >= silence_chunks:
                raw.append((start, i - quiet + 1))
                start = None
        else:
            quiet = 0
    if start is not None:
        raw.append((start, len(probs) - quiet))
    limit = int(max_seconds * SAMPLE_RATE / CHUNK) - 2 * round(config.pad_s * SAMPLE_RATE / CHUNK)
    pieces = []
    for first, last in raw:
        while last - first > limit:
            cut = first + limit // 2 + int(np.argmin(probs[first + limit // 2: first + limit]))
            pieces.append((first, cut))
            first = cut
        pieces.append((first, last))
    pad, regions = int(config.pad_s * SAMPLE_RATE), []
    for first, last in pieces:
        if (last - first) * CHUNK < config.min_speech_s * SAMPLE_RATE:
            continue
        begin, end = max(0, first * CHUNK - pad), min(samples, last * CHUNK + pad)
        if regions and begin < regions[-1][1]:  # padding overlaps the previous region: meet halfway
            middle = (begin + regions[-1][1]) // 2 if regions[-1][1] <= end else regions[-1][1]
            regions[-1] = (regions[-1][0], middle)
            begin = middle
        regions.append((begin, end))
    return regions


def speech_regions(wave: np.ndarray, config: VADConfig = VADConfig(), max_seconds: float = 30.0) -> list[tuple[int, int]]:
    return regions_from_probabilities(speech_probabilities(wave), len(wave), config, max_seconds)


def plan_windows(regions: list[tuple[int, int]], max_seconds: float = 30.0) -> list[tuple[int, int]]:
    """Consecutive regions joined into windows of at most ``max_seconds`` each (the decoder's input)."""
    limit, windows = int(max_seconds * SAMPLE_RATE), []
    for begin, end in regions:
        if windows and end - windows[-1][0] <= limit:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((begin, min(end, begin + limit)))
    return windows
