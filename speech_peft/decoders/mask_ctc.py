"""Mask-CTC starting canvases for the diffusion decoder, and the word rule that reads its candidates.

The CTC head's best path becomes BPE tokens; the tokens of a doubtful word (its least confident character
below the threshold, or a word outside the training lexicon) are masked, so the diffusion decoder re-decodes
the word whole. Reading a candidate back, each re-decoded CTC word stays one word, unless the words the
decoder wrote in its slots spell the CTC word better together than the first alone: the CTC head often runs
two words into one ("eightseven"), whose slots then hold both.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from .ctc import CTCHead, greedy_characters, token_confidences, token_words, word_confidences
from .masked_diffusion import DiffusionDecoderConfig, text_tokens
from .parallel_decode import Candidates

log = logging.getLogger(__name__)


def ctc_hypotheses(ctc: CTCHead, tokenizer, hidden: Tensor, mask: Tensor, lexicon: set[str] | None = None
                   ) -> list[tuple[list[int], list[float], list[int]]]:
    """The CTC head's best path per utterance, as BPE tokens with each token's confidence (that of the least
    confident character of its word) and word index, so a doubtful word is re-decoded whole (its tokens come
    from the CTC spelling, which may split it oddly, e.g. "eighxt" -> "eigh", "x", "t"). With ``lexicon``, a
    word outside it has confidence 0: a dropped letter ("seve") leaves no unsure character behind; not being
    a known word gives it away."""
    out = []
    for text, confidence in greedy_characters(*ctc(hidden, mask)):
        if not text:
            out.append(([], [], []))
            continue
        encoding = tokenizer.encode(" " + text, add_special_tokens=False)
        offsets = [(max(a - 1, 0), max(b - 1, 0)) for a, b in encoding.offsets]  # into text, not " " + text
        out.append((encoding.ids, word_confidences(text, token_confidences(text, confidence, offsets), offsets,
                                                   lexicon), token_words(text, offsets)))
    return out


def ctc_canvas(hypotheses: list[tuple[list[int], list[float], list[int]]], config: DiffusionDecoderConfig,
               threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Starting canvases (B, L), their lengths, and for each masked position the index of the CTC word it
    re-decodes (-1 elsewhere): the prefix, the CTC tokens with those below ``threshold`` masked, then one
    PAD (end of text). A hypothesis longer than the decoder's positions is cut, with a warning: its end is lost."""
    prefix = list(config.prefix)
    rows, spans = [], []
    room = config.max_length - 1 - len(prefix)
    for ids, confidence, words in hypotheses:
        if len(ids) > room:
            log.warning("a CTC hypothesis of %d tokens exceeds the diffusion decoder's %d text positions: its last %d "
                        "tokens are dropped (decode shorter audio, or train with a larger max_length)",
                        len(ids), room, len(ids) - room)
        doubtful = [c < threshold for c in confidence]
        ids = [config.mask_id if d else t for t, d in zip(ids, doubtful)]
        rows.append((prefix + ids)[: config.max_length - 1] + [config.pad_id])
        spans.append(([-1] * len(prefix) + [w if d else -1 for w, d in zip(words, doubtful)])[: len(rows[-1]) - 1] + [-1])
    canvas = torch.tensor([len(r) for r in rows])
    start = torch.full((len(rows), int(canvas.max())), config.pad_id, dtype=torch.long)
    words = torch.full(start.shape, -1, dtype=torch.long)
    for i, (row, span) in enumerate(zip(rows, spans)):
        start[i, : len(row)] = torch.tensor(row)
        words[i, : len(span)] = torch.tensor(span)
    return start, canvas, words


def ctc_spellings(hypothesis: tuple[list[int], list[float], list[int]], tokenizer) -> list[str]:
    """Each CTC word's spelling (its tokens detokenised), by word index."""
    ids, _, words = hypothesis
    spelt: dict[int, list[int]] = {}
    for token, word in zip(ids, words):
        spelt.setdefault(word, []).append(token)
    return [tokenizer.decode(spelt.get(w, [])).strip() for w in range(max(words, default=-1) + 1)]


def candidate_texts(candidates: Candidates, config: DiffusionDecoderConfig, tokenizer, gaps: bool) -> list[str]:
    """Each candidate row's transcript (after the prefix, up to the first PAD; with ``gaps`` a PAD may sit
    inside the text), detokenised. On a Mask-CTC canvas each re-decoded CTC word stays one word: a second
    word the decoder put in its slots (most often a copy of the neighbour, where the CTC spelling had more
    tokens than the right word) is dropped, as a PAD there would have been; with the CTC words' spellings
    (``candidates.spellings``), the slots' words are all kept when together they spell the CTC word more
    closely (fewer character edits) than the first alone."""
    gaps = gaps or candidates.pad_is_gap
    texts = []
    for index, row in enumerate(candidates.tokens):
        if candidates.words is not None:
            row = row.clone()
            slots: dict[int, list[int]] = {}
            for position, word in enumerate(candidates.words[index].tolist()):
                if word >= 0 and row[position] != config.pad_id:
                    slots.setdefault(word, []).append(position)
            for word, positions in slots.items():
                starts = [p for p in positions if _starts_word(tokenizer, int(row[p]))]
                if len(starts) > 1 and not _spelt_by_all(row, positions, starts, word, candidates.spellings, tokenizer):
                    row[starts[1:]] = config.pad_id  # gaps: pad_is_gap skips them
        texts.append(tokenizer.decode(text_tokens(row, config, gaps)).strip())
    return texts


def _spelt_by_all(row: Tensor, positions: list[int], starts: list[int], word: int, spellings: list[str] | None,
                  tokenizer) -> bool:
    if spellings is None or word >= len(spellings):
        return False
    spelling = spellings[word].replace(" ", "")
    together = tokenizer.decode(row[positions].tolist()).replace(" ", "")
    first = tokenizer.decode(row[[p for p in positions if p < starts[1]]].tolist()).strip()
    return _edits(together, spelling) < _edits(first, spelling)


def _edits(a: str, b: str) -> int:
    """Character edit (Levenshtein) distance."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _starts_word(tokenizer, token: int) -> bool:
    piece = tokenizer.id_to_token(token)
    return piece is not None and piece.startswith("Ġ")  # byte-level BPE's space
