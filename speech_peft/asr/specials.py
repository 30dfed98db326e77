"""Whisper's special tokens, read from the model's own tokenizer: English-only models (51864 ids) and
multilingual ones (51865) number them differently, and only multilingual ones have language and task
tokens. Needs neither torch nor the model."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from ..errors import UserError

MULTILINGUAL_VOCAB = 51865
_LANGUAGE = re.compile(r"<\|([a-z]{2,3})\|>")


@dataclass(frozen=True)
class WhisperSpecials:
    sot: int                      # <|startoftranscript|>
    eot: int                      # <|endoftext|>; every id after it is a special or a timestamp
    no_timestamps: int
    no_speech: int | None         # <|nocaptions|> (or <|nospeech|>)
    transcribe: int | None = None
    languages: dict[str, int] = field(default_factory=dict)  # code -> token id; empty when English-only

    @property
    def multilingual(self) -> bool:
        return bool(self.languages)

    def prompt(self, language: str | None = "en") -> list[int]:
        """The transcription prompt without timestamps: English-only models take none of language and task
        tokens; multilingual ones take ``language``'s token (English when None) and <|transcribe|>."""
        if not self.multilingual:
            if language not in (None, "en"):
                raise UserError(f"this Whisper model is English-only: it cannot transcribe {language!r}")
            return [self.sot, self.no_timestamps]
        return [self.sot, self.language_id(language or "en"), self.transcribe, self.no_timestamps]

    def language_id(self, code: str) -> int:
        if code not in self.languages:
            raise UserError(f"Whisper has no language {code!r}; it knows {', '.join(sorted(self.languages))}")
        return self.languages[code]

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab_size: int) -> "WhisperSpecials":
        """From a ``tokenizers.Tokenizer`` holding Whisper's vocabulary and added tokens, for a model with
        ``vocab_size`` output ids (English-only tokenizers list the language tokens too; English-only models,
        51864 ids, were never trained on them)."""
        def find(*names: str) -> int | None:
            return next((i for i in (tokenizer.token_to_id(n) for n in names) if i is not None), None)

        sot, eot, no_timestamps = find("<|startoftranscript|>"), find("<|endoftext|>"), find("<|notimestamps|>")
        if None in (sot, eot, no_timestamps):
            raise UserError("the tokenizer lacks Whisper's special tokens (<|startoftranscript|>, <|endoftext|>, "
                             "<|notimestamps|>): it is not a Whisper tokenizer")
        translate = find("<|translate|>")
        languages = {}
        if translate is not None and vocab_size >= MULTILINGUAL_VOCAB:  # multilingual: the language tokens sit between <|startoftranscript|> and <|translate|>
            for token_id in range(sot + 1, translate):
                match = _LANGUAGE.fullmatch(tokenizer.id_to_token(token_id) or "")
                if match:
                    languages[match.group(1)] = token_id
        return cls(sot, eot, no_timestamps, find("<|nocaptions|>", "<|nospeech|>"), find("<|transcribe|>"), languages)
