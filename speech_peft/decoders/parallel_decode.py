"""Parallel diffusion decoding: K candidates in one batch, T refinement steps, then one is chosen.

Step 1 predicts every masked position of the starting canvas (all MASK, or a Mask-CTC canvas where
only the CTC head's unsure tokens are MASK). Then, by ``remask``:

- "random" / "low_confidence" (mask-predict, as Whisfusion): each later step re-masks a fraction of
  the text positions given by the schedule (default 1.0, 0.9, 0.85, 0.8), at random per candidate or
  where the candidate is least confident, and fills them again by argmax;
- "progressive" (MaskGIT / LLaDA low-confidence remasking): a filled token is kept for good; each
  step commits the most confident predictions and leaves the rest masked, so that the fraction still
  masked after step s is ``schedule[s + 1]`` of the masked positions the canvas started with. With
  ``hold_eos`` an end-of-text (PAD) prediction is committed only at the last step, so the text is
  not cut short by an early guess of its length; with ``distinct_neighbours`` two equal tokens side
  by side are not committed in the same step (the more confident one goes first), the usual
  repetition of non-autoregressive decoders where neighbouring positions read the same audio.

Candidates differ by Gumbel noise on the confidence ranking (none on candidate 0; random re-masking
is random anyway) and are then chosen by mean token confidence, by minimum Bayes risk (the least
expected WER against the others), or combined by ROVER-style word voting.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..adapters.cross_attention import adapter_memory
from ..decoding import DecodeOptions
from ..errors import UserError
from .masked_diffusion import MaskedDiffusionDecoder, within


@dataclass
class Candidates:
    tokens: Tensor          # (K, L) decoded rows, the prefix first
    confidence: Tensor      # (K, L) probability of each chosen token
    pad_id: int
    prefix: int = 1         # leading positions that are the fixed prompt, not text
    pad_is_gap: bool = False  # a given canvas fixed the length: a PAD inside it is an empty slot, not the end
    words: Tensor | None = None  # (K, L) Mask-CTC: which CTC word each masked position re-decodes (-1: none)
    spellings: list[str] | None = None  # Mask-CTC: each CTC word as the CTC head spelt it, by word index

    def mean_confidence(self) -> Tensor:
        """Mean confidence over each row's non-PAD text tokens."""
        keep = self.tokens[:, self.prefix:] != self.pad_id
        conf = self.confidence[:, self.prefix:]
        return (conf * keep).sum(1) / keep.sum(1).clamp(min=1)


def _gumbel(rows: int, width: int, k: int, generator: torch.Generator) -> Tensor:
    """Gumbel noise (rows, width), zero on each utterance's first candidate."""
    noise = -torch.log(-torch.log(torch.rand(rows, width, generator=generator).clamp(1e-9, 1 - 1e-9)))
    noise.view(rows // k, k, width)[:, 0] = 0
    return noise


def _split_equal_neighbours(commit: Tensor, tokens: Tensor, prob: Tensor) -> Tensor:
    """Of two neighbours about to be committed with the same token, keep the more confident one; the
    most confident of every run of equal tokens always stays, so each step still commits something."""
    commit = commit.clone()
    for _ in range(commit.shape[1]):
        same = commit[:, :-1] & commit[:, 1:] & (tokens[:, :-1] == tokens[:, 1:])
        if not same.any():
            break
        left_wins = prob[:, :-1] >= prob[:, 1:]
        drop = torch.zeros_like(commit)
        drop[:, 1:] |= same & left_wins
        drop[:, :-1] |= same & ~left_wins
        commit &= ~drop
    return commit


@torch.no_grad()
def diffusion_decode(decoder: MaskedDiffusionDecoder, memory: Tensor, memory_mask: Tensor | None,
                     options: DecodeOptions, canvas: Tensor | None = None, start: Tensor | None = None
                     ) -> list[Candidates]:
    """The K candidates for each of the B utterances whose encoder states are ``memory`` (B, S, D).
    ``canvas`` (B,): each utterance's canvas length (prefix included; see ``canvas_lengths``); without
    it every utterance gets ``options.length`` or the decoder's maximum. ``start`` (B, L): a starting
    canvas (prefix, known tokens, MASK where unknown, PAD after the canvas) instead of all MASK."""
    config, k = decoder.config, options.candidates
    batch, prefix = memory.shape[0], len(config.prefix)
    if canvas is None:
        canvas = torch.full((batch,), options.length or config.max_length, dtype=torch.long)
    length = int(canvas.max()) if start is None else start.shape[1]
    canvas = canvas.cpu().repeat_interleave(k, 0)
    memory = memory.repeat_interleave(k, 0)
    memory_mask = None if memory_mask is None else memory_mask.repeat_interleave(k, 0)
    generator = torch.Generator().manual_seed(options.seed)
    inside = within(canvas, length)
    if start is None:
        x = torch.full((batch * k, length), config.pad_id, dtype=torch.long)
        x[inside] = config.mask_id
        x[:, :prefix] = torch.tensor(config.prefix)
    else:
        x = start.cpu().repeat_interleave(k, 0)
    x = x.to(memory.device)
    confidence = torch.ones(x.shape, device=memory.device)
    initial = (x == config.mask_id).sum(1).cpu()
    text = length - prefix
    outside = ~inside[:, prefix:]
    steps = len(options.schedule)
    with adapter_memory(decoder, memory, memory_mask):
        for step, ratio in enumerate(options.schedule):
            if step > 0 and options.remask != "progressive":
                count = torch.round(ratio * (canvas - prefix))
                if options.remask == "random":
                    scores = torch.rand(batch * k, text, generator=generator)
                else:  # least confident first
                    scores = confidence[:, prefix:].clamp(min=1e-9).log().cpu() + _gumbel(batch * k, text, k, generator)
                scores[outside] = float("inf")  # positions past the canvas stay PAD
                rank = scores.argsort(dim=1).argsort(dim=1)
                chosen = torch.cat([torch.zeros(batch * k, prefix, dtype=torch.bool), rank < count[:, None]], 1)
                x[chosen.to(x.device)] = config.mask_id
            masked = x == config.mask_id
            if not masked.any():
                break
            logits = decoder(x, only=masked)
            logits[:, config.mask_id] = float("-inf")
            prob, token = logits.softmax(-1).max(-1)
            if options.remask != "progressive":
                x = x.masked_scatter(masked, token)
                confidence = confidence.masked_scatter(masked, prob)
                continue
            last = step == steps - 1
            filled, certainty = x.clone(), torch.zeros_like(confidence)
            filled[masked], certainty[masked] = token, prob
            commit = masked.clone()
            if not last:
                left = torch.round(options.schedule[step + 1] * initial).long().to(x.device)
                quota = masked.sum(1) - left
                score = certainty.clamp(min=1e-9).log() + _gumbel(batch * k, length, k, generator).to(x.device)
                score[~masked] = float("-inf")
                if options.hold_eos:
                    score[filled == config.pad_id] = float("-inf")
                rank = score.argsort(dim=1, descending=True).argsort(dim=1)
                commit = (rank < quota[:, None]) & (score > float("-inf"))
                if options.distinct_neighbours:
                    commit = _split_equal_neighbours(commit, filled, certainty)
            x = torch.where(commit, filled, x)
            confidence = torch.where(commit, certainty, confidence)
    return [Candidates(x[i * k:(i + 1) * k].cpu(), confidence[i * k:(i + 1) * k].cpu(), config.pad_id, prefix,
                       pad_is_gap=start is not None) for i in range(batch)]


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
        raise UserError(f"unknown selection rule {rule!r} (confidence, mbr, rover)")
    return Choice(index, words[index], words)
