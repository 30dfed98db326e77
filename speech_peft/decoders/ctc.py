"""A CTC head on frozen encoder states, and the Mask-CTC starting canvas it gives the diffusion decoder.

The head reads characters (a small, open vocabulary: letters, apostrophe, space) from the encoder's
states, halved to 25 Hz by a strided convolution (still more frames than characters, even for fast
read speech, and a quarter of the attention cost), through a few bidirectional transformer layers. Its greedy hypothesis fixes the canvas
length and most of the tokens; the tokens it is unsure of (any character below a posterior
threshold) become MASK and the diffusion decoder fills only those (Mask-CTC, Higuchi et al. 2020),
which removes most of the repetitions and dropped words that a canvas guessed from duration invites.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

CHARACTERS = " abcdefghijklmnopqrstuvwxyz'"   # index i + 1; 0 is the CTC blank


@dataclass
class CTCHeadConfig:
    input_dim: int
    width: int = 192
    layers: int = 2
    heads: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


class CTCHead(nn.Module):
    def __init__(self, config: CTCHeadConfig):
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.input_dim)
        self.downsample = nn.Conv1d(config.input_dim, config.width, kernel_size=3, stride=2, padding=1)
        layer = nn.TransformerEncoderLayer(config.width, config.heads, 4 * config.width, dropout=0.1,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.out = nn.Linear(config.width, len(CHARACTERS) + 1)

    def forward(self, states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probabilities (B, T', characters + blank) for encoder states (B, T, D) valid where
        ``mask``, and the mask of the T' = ceil(T / 2) output frames."""
        states = states * mask[..., None]  # padding contributes nothing to the strided frames
        x = nn.functional.gelu(self.downsample(self.norm(states).transpose(1, 2))).transpose(1, 2)
        mask = mask[:, ::2]
        x = self.blocks(x, src_key_padding_mask=~mask)  # the encoder's states already carry position
        return self.out(x).log_softmax(-1), mask


def encode_characters(text: str) -> list[int]:
    """Character ids of a normalised transcript; characters outside the set are dropped."""
    return [CHARACTERS.index(c) + 1 for c in text if c in CHARACTERS]


def ctc_loss(log_probs: Tensor, mask: Tensor, texts: list[str]) -> Tensor:
    """CTC loss of the head's output (log-probabilities and their frame mask) against normalised
    transcripts, mean over the batch (each utterance's loss divided by its number of characters)."""
    targets = [torch.tensor(encode_characters(t), dtype=torch.long) for t in texts]
    return F.ctc_loss(log_probs.transpose(0, 1).float(), torch.cat(targets).to(log_probs.device),
                      mask.sum(1), torch.tensor([len(t) for t in targets]), blank=0, reduction="mean",
                      zero_infinity=True)


def greedy_characters(log_probs: Tensor, mask: Tensor) -> list[tuple[str, list[float]]]:
    """Best-path decoding: per utterance, the text (single spaces, none at the ends) and each
    character's posterior (the highest over the frames that emitted it)."""
    out = []
    best, ids = log_probs.exp().max(-1)
    for row_ids, row_best, valid in zip(ids.tolist(), best.tolist(), mask.tolist()):
        chars: list[str] = []
        confidence: list[float] = []
        previous, emitted = 0, False   # emitted: the run of ``previous`` added a character
        for index, prob, ok in zip(row_ids, row_best, valid):
            if not ok:
                break
            if index != 0 and index == previous:
                if emitted:
                    confidence[-1] = max(confidence[-1], prob)
                continue
            emitted = index != 0 and not (CHARACTERS[index - 1] == " " and (not chars or chars[-1] == " "))
            if emitted:
                chars.append(CHARACTERS[index - 1])
                confidence.append(prob)
            previous = index
        if chars and chars[-1] == " ":
            chars, confidence = chars[:-1], confidence[:-1]
        out.append(("".join(chars), confidence))
    return out


def token_confidences(text: str, confidence: list[float], offsets: list[tuple[int, int]]) -> list[float]:
    """Each BPE token's confidence: the least confident character inside its span (``offsets`` from the
    tokenizer, into ``text``); a token over only spaces takes its neighbours' least."""
    out = []
    for start, end in offsets:
        span = [confidence[i] for i in range(start, min(end, len(confidence))) if text[i] != " "]
        out.append(min(span) if span else min(confidence[max(start - 1, 0):end + 1] or [1.0]))
    return out


def token_words(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """The word (index among ``text``'s space-separated words) of each token's first letter; -1 for a
    token over only spaces."""
    words = []
    for start, end in offsets:
        span = text[start:end]
        first = start + len(span) - len(span.lstrip())  # the token's first letter
        words.append(text[:first].count(" ") if span.strip() else -1)
    return words


def word_confidences(text: str, confidence: list[float], offsets: list[tuple[int, int]],
                     lexicon: set[str] | None = None) -> list[float]:
    """Each token's confidence lowered to the least of its word's tokens (a word: tokens between
    spaces of ``text``; ``offsets`` into it); with a ``lexicon``, 0 for the tokens of a word outside it."""
    words = token_words(text, offsets)
    least: dict[int, float] = {}
    for word, conf in zip(words, confidence):
        least[word] = min(least.get(word, 1.0), conf)
    if lexicon is not None:
        for index, word in enumerate(text.split(" ")):
            if word not in lexicon and index in least:
                least[index] = 0.0
    return [least[w] for w in words]


__all__ = ["CHARACTERS", "CTCHeadConfig", "CTCHead", "encode_characters", "ctc_loss", "greedy_characters",
           "token_confidences", "token_words", "word_confidences"]
