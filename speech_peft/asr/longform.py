"""Recordings of any length: where the decoder looks (windows of at most 30 s), whether there is speech at
all, and how window hypotheses join into one transcript with segment times.

A recording of up to 30 s is one window, as Whisper was trained. A longer one is cut where the voice
activity detector hears pauses (``vad.plan_windows``); without the detector, at fixed 30 s steps. A
recording is silent when the detector hears no speech and Whisper agrees (its no-speech probability above
the threshold), or when every window is silent by Whisper's own rule (no-speech probability high and text
unlikely). The detector alone never silences a recording: it hears no speech in about 6% of FSDD's quiet
isolated digits, so decoders without a no-speech probability (diffusion exports, beam search) keep their text.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .vad import SAMPLE_RATE, VADConfig, plan_windows, regions_from_probabilities, speech_probabilities
from .hypothesis import Hypothesis, Thresholds

WINDOW_SECONDS = 30.0


@dataclass
class Segment:
    start: float   # seconds from the start of the recording
    end: float
    text: str
    no_speech_prob: float | None = None
    avg_logprob: float | None = None
    temperature: float = 0.0
    language: str | None = None


@dataclass
class Transcript:
    id: str
    audio: str
    duration: float
    text: str = ""
    segments: list[Segment] = field(default_factory=list)
    speech: bool = True
    reason: str | None = None   # why a silent recording's transcript is empty

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    """What the decoder is asked about one recording."""
    windows: list[tuple[int, int]]      # sample ranges to decode
    heard_speech: bool | None           # the detector's verdict (None: no detector)


def plan_recording(wave: np.ndarray, vad: VADConfig | None = VADConfig(), window_s: float = WINDOW_SECONDS) -> Plan:
    samples, limit = len(wave), int(window_s * SAMPLE_RATE)
    if vad is None:
        return Plan([(start, min(start + limit, samples)) for start in range(0, samples, limit)], None)
    regions = regions_from_probabilities(speech_probabilities(wave), samples, vad, window_s)
    if samples <= limit:
        return Plan([(0, samples)], bool(regions))  # one window as Whisper was trained; the detector only judges
    if not regions:  # the detector alone never silences a recording: Whisper hears all of it, window by window
        return Plan([(start, min(start + limit, samples)) for start in range(0, samples, limit)], False)
    return Plan(plan_windows(regions, window_s), True)


def assemble(uid: str, audio: str, samples: int, plan: Plan, hypotheses: list[Hypothesis],
             thresholds: Thresholds = Thresholds()) -> Transcript:
    """One transcript from its windows' hypotheses (in window order)."""
    transcript = Transcript(uid, audio, round(samples / SAMPLE_RATE, 3))
    probs = [h.no_speech_prob for h in hypotheses]
    if plan.heard_speech is False and probs and all(p is not None and p > thresholds.no_speech for p in probs):
        transcript.speech = False
        transcript.reason = f"no voice activity; Whisper's no-speech probability {max(probs):.2f}"
        return transcript
    for (start, end), h in zip(plan.windows, hypotheses):
        if thresholds.silent(h):
            continue
        transcript.segments.append(Segment(round(start / SAMPLE_RATE, 3), round(end / SAMPLE_RATE, 3), h.text,
                                           h.no_speech_prob, h.avg_logprob, h.temperature, h.language))
    transcript.text = " ".join(s.text for s in transcript.segments if s.text)
    if plan.windows and not transcript.segments:
        transcript.speech = False
        transcript.reason = "Whisper's no-speech probability is high and the text unlikely in every window"
    return transcript
