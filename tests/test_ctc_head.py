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
