"""What a decoder says about one window, and Whisper's rules for judging it: silence, loops, fallback.
Shared by every Whisper backend (torch, CTranslate2); needs neither."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)


def compression_ratio(text: str) -> float:
    """Bytes over zlib-compressed bytes: a decoder caught in a loop writes text that compresses well."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


@dataclass
class Hypothesis:
    """One decoded window, with the scores Whisper judges its own output by (None where not computed)."""
    text: str
    no_speech_prob: float | None = None   # P(<|nocaptions|>) after <|startoftranscript|>
    avg_logprob: float | None = None      # per token, end of text included
    temperature: float = 0.0              # 0: greedy; higher: the fallback that was kept
    language: str | None = None           # the language it was transcribed in

    @property
    def compression(self) -> float:
        return compression_ratio(self.text)


@dataclass(frozen=True)
class Thresholds:
    """Whisper's decoding rules: a window is silent when its no-speech probability is above ``no_speech``
    and its text is unlikely (average log-probability under ``logprob``); a window is re-decoded at rising
    temperatures when its text compresses too well (a loop) or is unlikely."""
    no_speech: float = 0.6
    logprob: float = -1.0
    compression: float = 2.4

    def silent(self, h: Hypothesis) -> bool:
        return h.no_speech_prob is not None and h.no_speech_prob > self.no_speech and \
            h.avg_logprob is not None and h.avg_logprob < self.logprob

    def failed(self, h: Hypothesis) -> bool:
        return h.compression > self.compression or (h.avg_logprob is not None and h.avg_logprob < self.logprob)


def better(candidate: Hypothesis, current: Hypothesis, thresholds: Thresholds) -> bool:
    """A re-decoding replaces the current text when it passes where the current fails; when both fail, when
    it does not loop where the current does (as faster-whisper prefers the results under the compression
    threshold: a loop is often the likelier text, and its insertions cost more than any misrecognition);
    otherwise when it is more likely."""
    def rank(h: Hypothesis) -> tuple:
        return not thresholds.failed(h), h.compression <= thresholds.compression, h.avg_logprob or float("-inf")

    return rank(candidate) > rank(current)


def fall_back(hyps: list[Hypothesis], thresholds: Thresholds,
              redecode: Callable[[list[int], float], list[Hypothesis]]) -> list[Hypothesis]:
    """Whisper's temperature fallback over a batch: rows whose text loops or is unlikely (and are not silence)
    are decoded again by ``redecode(rows, temperature)`` at each rising temperature, keeping the better text."""
    for temperature in FALLBACK_TEMPERATURES:
        redo = [i for i, h in enumerate(hyps) if thresholds.failed(h) and not thresholds.silent(h)]
        if not redo:
            break
        for i, again in zip(redo, redecode(redo, temperature)):
            if better(again, hyps[i], thresholds):
                hyps[i] = again
    return hyps
