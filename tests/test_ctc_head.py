"""The CTC head on frozen encoder states, and the Mask-CTC starting canvas it gives the decoder."""
from __future__ import annotations

import math

import pytest
import torch

from speech_peft.decoders.ctc import (CHARACTERS, CTCHead, CTCHeadConfig, ctc_loss, encode_characters, greedy_characters,
                                      token_confidences)


def _frames(path: str, confidence: list[float]) -> torch.Tensor:
    """Log-probabilities whose best path is ``path`` ("_" is blank) with the given frame posteriors."""
    out = torch.full((len(path), len(CHARACTERS) + 1), -1e4)
    for t, (char, p) in enumerate(zip(path, confidence)):
        index = 0 if char == "_" else CHARACTERS.index(char) + 1
        out[t] = math.log((1 - p) / len(CHARACTERS))
        out[t, index] = math.log(p)
    return out[None]


def test_best_path_collapses_repeats_drops_blanks_and_keeps_each_characters_best_posterior():
    log_probs = _frames(" aa_a b  _bc ", [.9, .6, .8, .9, .7, .99, .5, .9, .9, .9, .4, .95, .9])
    text, confidence = greedy_characters(log_probs, torch.ones(1, 13, dtype=torch.bool))[0]
    assert text == "aa b bc"
    assert confidence == pytest.approx([.8, .7, .99, .5, .9, .4, .95])  # the first a: the best of its two frames


def test_padding_frames_are_never_read():
    log_probs = _frames("ab_c", [.9] * 4)
    mask = torch.tensor([[True, True, False, False]])
    assert greedy_characters(log_probs, mask)[0][0] == "ab"


def test_a_tokens_confidence_is_its_least_confident_character():
    text, confidence = "one two", [.9, .8, .99, .95, .9, .3, .9]
    assert token_confidences(text, confidence, [(0, 3), (3, 7)]) == [.8, .3]


def test_the_head_learns_a_short_transcript_from_fixed_states():
    torch.manual_seed(0)
    head = CTCHead(CTCHeadConfig(input_dim=12, width=32, layers=1, heads=2))
    states, mask = torch.randn(2, 30, 12), torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    texts = ["one two", "nine"]
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(150):
        loss = ctc_loss(*head(states, mask), texts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    log_probs, frames = head(states, mask)
    assert log_probs.shape[1] == 15 and frames.sum(1).tolist() == [15, 10]  # 25 Hz
    assert [t for t, _ in greedy_characters(log_probs, frames)] == texts
    assert encode_characters("a-b") == [CHARACTERS.index("a") + 1, CHARACTERS.index("b") + 1]


def test_every_token_of_a_word_outside_the_lexicon_is_unsure():
    from speech_peft.decoders.ctc import word_confidences
    text, offsets = "one seve three", [(0, 3), (3, 6), (6, 8), (8, 14)]  # "one", " se", "ve", " three"
    sure = [0.99, 0.98, 0.97, 0.96]
    assert word_confidences(text, sure, offsets) == [0.99, 0.97, 0.97, 0.96]  # a word takes its least
    assert word_confidences(text, sure, offsets, lexicon={"one", "seven", "three"}) == [0.99, 0.0, 0.0, 0.96]


def test_a_re_decoded_ctc_word_stays_one_word_and_its_spare_slots_are_gaps():
    from speech_peft.decoders import Candidates
    from speech_peft.tasks.diffusion_asr import DiffusionASR
    model = DiffusionASR("whisper-tiny.en", stage=1, max_length=16)
    config, encode = model.decoder.config, lambda w: model.tokenizer.encode(w, add_special_tokens=False).ids
    one, seven, nine = encode(" one")[0], encode(" seven")[0], encode(" nine")[0]
    # CTC read "one seve nine"; "seve" (two tokens) was masked, and the decoder wrote "seven nine" there
    tokens = torch.tensor([[*config.prefix, one, seven, nine, nine, config.pad_id]])
    words = torch.tensor([[-1] * len(config.prefix) + [-1, 1, 1, -1, -1]])
    candidates = Candidates(tokens, torch.ones(tokens.shape), config.pad_id, len(config.prefix), pad_is_gap=True,
                            words=words)
    assert model.candidate_texts(candidates) == ["one seven nine"]
    candidates.spellings = ["one", "seve", "nine"]  # "seven nine" spells "seve" worse than "seven" alone
    assert model.candidate_texts(candidates) == ["one seven nine"]


def test_a_ctc_word_that_ran_two_words_together_keeps_both_words_the_decoder_wrote_in_its_slots():
    """CTC read "one eightseven nine" (no space heard): the decoder's "eight seven" in that word's slots spells it
    exactly, so both stay; without the spelling only the first would."""
    from speech_peft.decoders import Candidates
    from speech_peft.decoders.mask_ctc import ctc_spellings
    from speech_peft.tasks.diffusion_asr import DiffusionASR
    model = DiffusionASR("whisper-tiny.en", stage=1, max_length=16)
    config, encode = model.decoder.config, lambda w: model.tokenizer.encode(w, add_special_tokens=False).ids
    one, eight, seven, nine = (encode(f" {w}")[0] for w in ("one", "eight", "seven", "nine"))
    merged = encode(" one eightseven nine")
    words = [0] + [1] * (len(merged) - 2) + [2]
    assert ctc_spellings((merged, [1.0] * len(merged), words), model.tokenizer) == ["one", "eightseven", "nine"]
    tokens = torch.tensor([[*config.prefix, one, eight, seven, nine, config.pad_id]])
    slots = torch.tensor([[-1] * len(config.prefix) + [-1, 1, 1, -1, -1]])
    candidates = Candidates(tokens, torch.ones(tokens.shape), config.pad_id, len(config.prefix), pad_is_gap=True,
                            words=slots)
    assert model.candidate_texts(candidates) == ["one eight nine"]
    candidates.spellings = ["one", "eightseven", "nine"]
    assert model.candidate_texts(candidates) == ["one eight seven nine"]
