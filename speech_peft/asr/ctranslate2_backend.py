"""Whisper served by CTranslate2 (the engine faster-whisper runs on): a base model or one exported with its
adapters merged (``speech-peft export --format ctranslate2``), int8 on a CPU.

Nothing here imports torch: with numpy features and the ``ctranslate2`` engine a short file is transcribed
in about the time faster-whisper takes, where importing torch alone costs about two seconds.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..features import log_mel_30s
from .hypothesis import Hypothesis, Thresholds, fall_back


class CTranslate2Whisper:
    """Greedy transcription of windows of at most 30 s, scored and with Whisper's temperature fallback,
    like ``whisper_ar.WhisperTranscriber`` (same prompt, suppression and rules)."""

    def __init__(self, directory: str | os.PathLike, compute_type: str = "int8", threads: int = 0,
                 thresholds: Thresholds = Thresholds(), fallback: bool = True, max_new_tokens: int = 224):
        try:
            import ctranslate2
        except ImportError:
            raise FileNotFoundError("--backend ctranslate2 needs the ctranslate2 package (pip install ctranslate2)") from None
        from tokenizers import Tokenizer

        directory = Path(directory)
        for name in ("model.bin", "tokenizer.json"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a CTranslate2 Whisper model: {name} is missing")
        self.model = ctranslate2.models.Whisper(str(directory), device="cpu", compute_type=compute_type,
                                                intra_threads=threads or min(4, os.cpu_count() or 1))
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        config = json.loads((directory / "config.json").read_text()) if (directory / "config.json").is_file() else {}
        self.n_mels = config.get("num_mel_bins", 80)
        english_only = not self.model.is_multilingual
        self.prompt = [50257, 50362] if english_only else [50258, 50259, 50359, 50363]
        self.end = 50256 if english_only else 50257
        self.thresholds, self.fallback, self.max_new_tokens = thresholds, fallback, max_new_tokens

    def _generate(self, features, temperature: float) -> list[Hypothesis]:
        options = dict(beam_size=1, return_scores=True, return_no_speech_prob=True,
                       max_length=len(self.prompt) + self.max_new_tokens)
        if temperature > 0:
            options.update(sampling_topk=0, sampling_temperature=temperature)
        results = self.model.generate(features, [self.prompt] * features.shape[0], **options)
        hyps = []
        for result in results:
            tokens = [t for t in result.sequences_ids[0] if t < self.end]
            # The score is the summed log-probability over the length (end of text included) with length penalty 1.
            hyps.append(Hypothesis(self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                                   result.no_speech_prob, result.scores[0], temperature))
        return hyps

    def decode(self, waves: np.ndarray, seed: int = 0) -> list[Hypothesis]:
        import ctranslate2

        features = self.model.encode(ctranslate2.StorageView.from_array(log_mel_30s(waves, self.n_mels)))
        hyps = self._generate(features, 0.0)
        if not self.fallback:
            return hyps
        ctranslate2.set_random_seed(seed)
        encoded = np.asarray(features)  # the encoder states, computed once

        def redecode(rows: list[int], temperature: float) -> list[Hypothesis]:
            return self._generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded[rows])), temperature)

        return fall_back(hyps, self.thresholds, redecode)
