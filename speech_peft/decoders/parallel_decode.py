"""Parallel diffusion decoding: K candidates in one batch, T refinement steps, then one is chosen.

Step 1 predicts every position from an all-MASK sequence. Each later step re-masks a fraction of the
text positions given by the schedule (default T=4: 1.0, 0.9, 0.85, 0.8), either at random per
candidate or, MaskGIT-style, where the candidate is least confident (with Gumbel noise so that
candidates differ), and fills them again by argmax. Candidates are then chosen by mean token
confidence, by minimum Bayes risk (the least expected WER against the others), or combined by
ROVER-style word voting.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ..adapters.cross_attention import adapter_memory
from .masked_diffusion import MaskedDiffusionDecoder, within


@dataclass
class DecodeOptions:
    candidates: int = 4                                            # K
    schedule: tuple[float, ...] = (1.0, 0.9, 0.85, 0.8)             # T = len(schedule)
    remask: Literal["random", "low_confidence"] = "random"
    rule: Literal["confidence", "mbr", "rover"] = "confidence"
    length: int | None = None                                       # L; None: the decoder's maximum
    seed: int = 0


@dataclass
class Candidates:
    tokens: Tensor          # (K, L) decoded rows, BOS first
    confidence: Tensor      # (K, L) probability of each chosen token
    pad_id: int

    def mean_confidence(self) -> Tensor:
        """Mean confidence over each row's non-PAD tokens (BOS excluded)."""
        keep = self.tokens[:, 1:] != self.pad_id
        conf = self.confidence[:, 1:]
        return (conf * keep).sum(1) / keep.sum(1).clamp(min=1)


@torch.no_grad()
def diffusion_decode(decoder: MaskedDiffusionDecoder, memory: Tensor, memory_mask: Tensor | None,
                     options: DecodeOptions, canvas: Tensor | None = None) -> list[Candidates]:
    """The K candidates for each of the B utterances whose encoder states are ``memory`` (B, S, D).
    ``canvas`` (B,): each utterance's canvas length (BOS included; see ``canvas_lengths``); without
    it every utterance gets ``options.length`` or the decoder's maximum."""
    config, k = decoder.config, options.candidates
    batch = memory.shape[0]
    if canvas is None:
        canvas = torch.full((batch,), options.length or config.max_length, dtype=torch.long)
    length = int(canvas.max())
    canvas = canvas.cpu().repeat_interleave(k, 0)
    memory = memory.repeat_interleave(k, 0)
    memory_mask = None if memory_mask is None else memory_mask.repeat_interleave(k, 0)
    generator = torch.Generator().manual_seed(options.seed)
    inside = within(canvas, length)
    x = torch.full((batch * k, length), config.pad_id, dtype=torch.long)
    x[inside] = config.mask_id
    x[:, 0] = config.bos_id
    x = x.to(memory.device)
    confidence = torch.ones(x.shape, device=memory.device)
    text = length - 1
    outside = ~inside[:, 1:]
    with adapter_memory(decoder, memory, memory_mask):
        for step, ratio in enumerate(options.schedule):
            if step > 0:
                count = torch.round(ratio * (canvas - 1))
                if options.remask == "random":
                    scores = torch.rand(batch * k, text, generator=generator)
                else:  # least confident first; Gumbel noise (none on candidate 0) makes candidates differ
                    gumbel = -torch.log(-torch.log(torch.rand(batch * k, text, generator=generator).clamp(1e-9, 1 - 1e-9)))
                    gumbel.view(batch, k, text)[:, 0] = 0
                    scores = confidence[:, 1:].clamp(min=1e-9).log().cpu() + gumbel
                scores[outside] = float("inf")  # positions past the canvas stay PAD
                rank = scores.argsort(dim=1).argsort(dim=1)
                chosen = torch.cat([torch.zeros(batch * k, 1, dtype=torch.bool), rank < count[:, None]], 1)
                x[chosen.to(x.device)] = config.mask_id
            masked = x == config.mask_id
            logits = decoder(x, only=masked)
            logits[:, config.mask_id] = float("-inf")
            prob, token = logits.softmax(-1).max(-1)
            x = x.masked_scatter(masked, token)
            confidence = confidence.masked_scatter(masked, prob)
    return [Candidates(x[i * k:(i + 1) * k].cpu(), confidence[i * k:(i + 1) * k].cpu(), config.pad_id)
            for i in range(batch)]


def word_alignment(ref: list[str], hyp: list[str]) -> list[tuple[str | None, str | None]]:
    """Levenshtein alignment of two word lists as (ref word or None, hyp word or None) pairs."""
    n, m = len(ref), len(hyp)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]), cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    pairs, i, j = [], n, m
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((ref[i - 1], None))
            i -= 1
        else:
            pairs.append((None, hyp[j - 1]))
            j -= 1
    return pairs[::-1]


def _errors(ref: list[str], hyp: list[str]) -> int:
    return sum(r != h for r, h in word_alignment(ref, hyp))


def select_mbr(candidates: list[list[str]]) -> int:
    """The candidate with the least total word errors against all the others (first on ties)."""
    risks = [sum(_errors(other, c) for j, other in enumerate(candidates) if j != i) for i, c in enumerate(candidates)]
    return min(range(len(candidates)), key=lambda i: (risks[i], i))


def rover(candidates: list[list[str]]) -> list[str]:
    """Word voting: align every candidate to the MBR choice; each slot (a backbone word, or the gap
    before one) takes the majority, so a word most candidates agree on wins even if no single
    candidate is right everywhere."""
    backbone = candidates[select_mbr(candidates)]
    slots: list[dict[tuple[str, ...], int]] = [dict() for _ in range(2 * len(backbone) + 1)]  # gap, word, gap, ...
    for cand in candidates:
        position, inserted = 0, []
        votes: list[tuple[str, ...]] = [()] * len(slots)
        for ref_word, hyp_word in word_alignment(backbone, cand):
            if ref_word is None:
                inserted.append(hyp_word)
                continue
            votes[2 * position] = tuple(inserted)
            votes[2 * position + 1] = () if hyp_word is None else (hyp_word,)
            inserted, position = [], position + 1
        votes[2 * position] = tuple(inserted)
        for slot, vote in zip(slots, votes):
            slot[vote] = slot.get(vote, 0) + 1
    words: list[str] = []
    for index, slot in enumerate(slots):
        default = () if index % 2 == 0 else (backbone[index // 2],)
        best = max(slot.items(), key=lambda item: (item[1], item[0] == default))[0]
        words.extend(best)
    return words


@dataclass
class Choice:
    index: int | None           # the chosen candidate (None: ROVER combined them)
    words: list[str]
    candidates: list[list[str]] = field(default_factory=list)


def choose(candidates: Candidates, words: list[list[str]], rule: str) -> Choice:
    """Apply a selection rule to one utterance's candidates (``words``: each candidate's text, split)."""
    if rule == "confidence":
        index = int(candidates.mean_confidence().argmax())
    elif rule == "mbr":
        index = select_mbr(words)
    elif rule == "rover":
        return Choice(None, rover(words), words)
    else:
        raise ValueError(f"unknown selection rule {rule!r} (confidence, mbr, rover)")
    return Choice(index, words[index], words)
