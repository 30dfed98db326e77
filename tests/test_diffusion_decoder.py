"""Whisfusion's text side: a masked-diffusion decoder from Whisper's decoder, its objective, and decoding."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from speech_peft.adapters import CrossAttentionConfig, add_adapter
from speech_peft.adapters.cross_attention import adapter_memory
from speech_peft.decoders import (DecodeOptions, choose, diffusion_decode, diffusion_loss, from_whisper, mask_tokens,
                                  pack_transcripts, rover, sample_ratio, select_mbr, text_tokens)


@pytest.fixture(scope="module")
def whisper(tiny_whisper_dir):
    from speech_peft.encoders.whisper import load_whisper
    return load_whisper(tiny_whisper_dir).model


def test_decoder_starts_from_whispers_decoder_weights_with_a_new_mask_token(whisper):
    decoder = from_whisper(whisper, max_length=16)
    source = whisper.model.decoder
    vocab = whisper.config.vocab_size
    assert decoder.config.vocab_size == vocab + 1 and decoder.config.mask_id == vocab
    assert torch.equal(decoder.embed_tokens.weight[:vocab], source.embed_tokens.weight)
    assert torch.allclose(decoder.embed_tokens.weight[vocab], source.embed_tokens.weight.mean(0))
    assert torch.equal(decoder.embed_positions.weight, source.embed_positions.weight[:16])
    for ours, theirs in zip(decoder.layers, source.layers):
        assert torch.equal(ours.self_attn.q_proj.weight, theirs.self_attn.q_proj.weight)
        assert torch.equal(ours.fc2.bias, theirs.fc2.bias)
    with pytest.raises(ValueError, match="positions"):
        from_whisper(whisper, max_length=whisper.config.max_target_positions + 1)


def test_decoder_is_bidirectional_every_position_sees_the_last_one(whisper):
    decoder = from_whisper(whisper, max_length=8).eval()
    tokens = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11]])
    changed = tokens.clone()
    changed[0, -1] = 12
    with torch.no_grad():
        assert not torch.allclose(decoder(tokens)[0, 1], decoder(changed)[0, 1])


def test_transcripts_are_bos_then_tokens_then_pad_and_too_long_is_an_error(whisper):
    config = from_whisper(whisper, max_length=6).config
    packed = pack_transcripts([[5, 6], []], config)
    assert packed.tolist() == [[config.bos_id, 5, 6] + [config.pad_id] * 3, [config.bos_id] + [config.pad_id] * 5]
    assert text_tokens(packed[0], config) == [5, 6]
    with pytest.raises(ValueError, match="holds 5"):
        pack_transcripts([[5] * 6], config)


def test_mask_ratio_is_drawn_per_sample_and_bos_is_never_masked():
    generator = torch.Generator().manual_seed(0)
    ratio = sample_ratio(4000, 0.7, 1.0, generator)
    assert 0.7 <= ratio.min() and ratio.max() <= 1.0 and abs(ratio.mean().item() - 0.85) < 0.01
    tokens = torch.randint(0, 50, (3, 2000), generator=generator)
    noisy, masked = mask_tokens(tokens, torch.tensor([0.0, 0.3, 1.0]), mask_id=99, generator=generator)
    assert not masked[:, 0].any() and masked[0].sum() == 0 and masked[2, 1:].all()
    assert abs(masked[1].float().mean().item() - 0.3) < 0.04
    assert torch.equal(noisy[masked], torch.full((int(masked.sum()),), 99)) and torch.equal(noisy[~masked], tokens[~masked])


def test_objective_scores_masked_positions_only():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 7, generator=generator)
    tokens = torch.randint(0, 7, (2, 5), generator=generator)
    masked = torch.tensor([[False, True, False, True, False], [False, False, True, False, False]])
    expected = F.cross_entropy(logits[masked], tokens[masked])
    assert torch.allclose(diffusion_loss(logits, tokens, masked), expected)
    moved = logits.clone()
    moved[~masked] += torch.randn_like(moved[~masked])
    assert torch.allclose(diffusion_loss(moved, tokens, masked), expected)
    assert diffusion_loss(logits, tokens, torch.zeros_like(masked)).item() == 0.0


def test_cross_attention_adapters_one_per_block_leave_the_decoder_unchanged_at_first(whisper):
    decoder = from_whisper(whisper, max_length=8).eval()
    tokens = torch.tensor([[1, 5, 6, 7, 0, 0, 0, 0]])
    with torch.no_grad():
        before = decoder(tokens)
    report = add_adapter(decoder, CrossAttentionConfig(memory_dim=48, num_heads=4), name="xattn")
    assert len(report.targets) == len(decoder.layers) and report.adapter_params > 0
    memory = torch.randn(1, 10, 48)
    with torch.no_grad(), adapter_memory(decoder, memory):
        assert torch.equal(decoder(tokens), before)


def _decoder_with_memory(whisper):
    torch.manual_seed(0)
    decoder = from_whisper(whisper, max_length=12).eval()
    add_adapter(decoder, CrossAttentionConfig(memory_dim=32, num_heads=4), name="xattn")
    for name, p in decoder.named_parameters():
        if name.endswith("gate"):
            p.data.fill_(1.0)
    return decoder, torch.randn(2, 9, 32)


@pytest.mark.parametrize("remask", ["random", "low_confidence"])
def test_decoding_with_a_fixed_seed_is_deterministic_and_fills_every_mask(whisper, remask):
    decoder, memory = _decoder_with_memory(whisper)
    options = DecodeOptions(candidates=3, remask=remask, seed=5)
    first, again = diffusion_decode(decoder, memory, None, options), diffusion_decode(decoder, memory, None, options)
    assert len(first) == 2 and first[0].tokens.shape == (3, 12)
    for a, b in zip(first, again):
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.confidence, b.confidence)
        assert (a.tokens != decoder.config.mask_id).all() and (a.tokens[:, 0] == decoder.config.bos_id).all()
        assert ((a.confidence > 0) & (a.confidence <= 1)).all()


def test_mbr_picks_the_candidate_closest_to_the_others():
    candidates = [["a", "cat", "sat", "down"], ["the", "cat", "sat"], ["the", "bat", "sat"], ["the", "cat", "sat"]]
    assert select_mbr(candidates) == 1


def test_rover_votes_each_word_so_the_result_can_beat_every_candidate():
    candidates = [["one", "two", "tree"], ["one", "too", "three"], ["won", "two", "three"]]
    assert rover(candidates) == ["one", "two", "three"]
    # An insertion only one candidate makes is voted out; one most candidates make is kept.
    assert rover([["a", "b"], ["a", "x", "b"], ["a", "b"]]) == ["a", "b"]
    assert rover([["a", "b"], ["a", "x", "b"], ["a", "x", "b"]]) == ["a", "x", "b"]


def test_confidence_rule_takes_the_candidate_with_the_highest_mean_over_text_tokens():
    from speech_peft.decoders import Candidates
    tokens = torch.tensor([[1, 5, 0, 0], [1, 6, 7, 0]])
    confidence = torch.tensor([[1.0, 0.6, 1.0, 1.0], [1.0, 0.7, 0.8, 0.1]])  # PAD confidences do not count
    picked = choose(Candidates(tokens, confidence, pad_id=0), [["five"], ["six", "seven"]], "confidence")
    assert picked.index == 1 and picked.words == ["six", "seven"]
    with pytest.raises(ValueError, match="unknown selection rule"):
        choose(Candidates(tokens, confidence, pad_id=0), [["five"], ["six"]], "vote")


def test_canvas_follows_the_audio_and_positions_past_it_are_pad_never_masked_never_decoded(whisper):
    from speech_peft.decoders import canvas_lengths
    canvas = canvas_lengths(torch.tensor([1.0, 2.2, 60.0]), tokens_per_second=3.0, max_length=12)
    assert canvas.tolist() == [4, 8, 12]  # 1 + ceil(3 x seconds), at most L
    config = from_whisper(whisper, max_length=12).config
    packed = pack_transcripts([[5, 6], [5, 6, 7, 8]], config, canvas[:2])
    assert packed.shape == (2, 8) and packed[0, 3:].eq(config.pad_id).all()
    with pytest.raises(ValueError, match="canvas holds 3"):
        pack_transcripts([[5, 6, 7, 8], []], config, canvas[:2])
    with pytest.raises(ValueError, match="clip_a has 4 tokens; its canvas holds 3"):
        pack_transcripts([[5, 6, 7, 8], []], config, canvas[:2], names=["clip_a", "clip_b"])
    _, masked = mask_tokens(packed, torch.ones(2), config.mask_id, canvas=canvas[:2])
    assert masked[0].tolist() == [False, True, True, True] + [False] * 4 and masked[1, 1:].all()

    decoder, memory = _decoder_with_memory(whisper)
    for remask in ("random", "low_confidence"):
        rows = diffusion_decode(decoder, memory, None, DecodeOptions(candidates=2, remask=remask),
                                canvas=torch.tensor([4, 7]))
        assert rows[0].tokens.shape == (2, 7)
        assert rows[0].tokens[:, 4:].eq(decoder.config.pad_id).all()  # the short utterance's tail
        assert (rows[1].tokens != decoder.config.mask_id).all()


def test_only_masked_positions_are_projected_onto_the_vocabulary_with_the_same_logits(whisper):
    decoder = from_whisper(whisper, max_length=8).eval()
    tokens = torch.tensor([[1, 5, 6, 7, 0, 0, 0, 0], [1, 9, 9, 0, 0, 0, 0, 0]])
    only = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    with torch.no_grad():
        assert torch.allclose(decoder(tokens, only=only), decoder(tokens)[only], atol=1e-5)


# -- design changes beyond the paper ---------------------------------------------------------------

def test_with_the_ar_shift_each_position_reads_the_state_before_it(whisper):
    plain = from_whisper(whisper, max_length=8).eval()
    shifted = from_whisper(whisper, max_length=8, shift=True).eval()
    assert shifted.config.shift and shifted.config.prefix[0] == plain.config.bos_id
    tokens = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11]])
    with torch.no_grad():
        assert torch.allclose(shifted(tokens)[0, 1:], plain(tokens)[0, :-1], atol=1e-6)


def test_the_prompt_after_bos_is_part_of_every_canvas_and_never_masked(whisper):
    from dataclasses import replace

    from speech_peft.decoders import canvas_lengths
    config = replace(from_whisper(whisper, max_length=8).config, prompt=(7,))
    packed = pack_transcripts([[5, 6]], config, canvas_lengths(torch.tensor([1.0]), 3.0, 8, prefix=2))
    assert packed.tolist() == [[config.bos_id, 7, 5, 6, config.pad_id]]
    assert text_tokens(packed[0], config) == [5, 6]
    _, masked = mask_tokens(packed, torch.ones(1), config.mask_id, prefix=2)
    assert masked.tolist() == [[False, False, True, True, True]]


def test_antithetic_ratios_cover_the_range_evenly_in_every_batch():
    ratio = sample_ratio(8, 0.0, 1.0, torch.Generator().manual_seed(3), antithetic=True).sort().values
    assert torch.allclose(ratio.diff(), torch.full((7,), 1 / 8), atol=1e-6)
    assert 0.0 <= ratio.min() and ratio.max() < 1.0
    shifted = sample_ratio(4, 0.5, 1.0, torch.Generator().manual_seed(3), antithetic=True).sort().values
    assert torch.allclose(shifted.diff(), torch.full((3,), 0.125), atol=1e-6)


def test_inverse_t_weighting_is_each_rows_summed_loss_over_t_and_its_text_length():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 7, generator=generator)
    tokens = torch.randint(0, 7, (2, 5), generator=generator)
    masked = torch.tensor([[False, True, False, True, False], [False, False, True, False, False]])
    ratio, text = torch.tensor([0.5, 0.25]), torch.tensor([4, 3])
    per_token = F.cross_entropy(logits[masked], tokens[masked], reduction="none")
    expected = ((per_token[0] + per_token[1]) / (0.5 * 4) + per_token[2] / (0.25 * 3)) / 2
    got = diffusion_loss(logits, tokens, masked, "inverse_t", ratio, text)
    assert torch.allclose(got, expected)
    with pytest.raises(ValueError, match="mask ratio"):
        diffusion_loss(logits, tokens, masked, "inverse_t")


class ScriptedDecoder(torch.nn.Module):
    """A decoder whose predictions are fixed per position (token, confidence); it records its inputs."""

    def __init__(self, config, tokens: list[int], confidence: list[float]):
        super().__init__()
        self.config, self.inputs = config, []
        others = config.vocab_size - 2  # every id but the token and MASK (which decoding never picks)
        self.logits = torch.zeros(len(tokens), config.vocab_size)
        for position, (token, conf) in enumerate(zip(tokens, confidence)):
            self.logits[position, token] = torch.tensor(min(conf, 0.999) * others / (1 - min(conf, 0.999))).log()

    def forward(self, tokens, only=None):
        self.inputs.append(tokens.clone())
        out = self.logits[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)
        return out if only is None else out[only]


def _scripted(whisper, tokens, confidence):
    config = from_whisper(whisper, max_length=len(tokens)).config
    return ScriptedDecoder(config, tokens, confidence), torch.zeros(1, 3, 8)


def test_progressive_decoding_keeps_what_it_committed_and_commits_by_the_schedule(whisper):
    decoder, memory = _scripted(whisper, [1, 5, 6, 7, 8, 9, 10, 11, 12], [1, .9, .2, .8, .3, .7, .4, .6, .5])
    options = DecodeOptions(candidates=1, remask="progressive", schedule=(1.0, 0.75, 0.5, 0.25))
    out = diffusion_decode(decoder, memory, None, options)[0].tokens[0]
    assert out.tolist() == [decoder.config.bos_id, 5, 6, 7, 8, 9, 10, 11, 12]
    masked_per_step = [int((x == decoder.config.mask_id).sum()) for x in decoder.inputs]
    assert masked_per_step == [8, 6, 4, 2]  # 8 text positions, 2 committed per step
    second = decoder.inputs[1][0]
    assert second[1] == 5 and second[3] == 7  # the two most confident went first and stayed


def test_end_of_text_is_committed_only_at_the_last_step(whisper):
    decoder, memory = _scripted(whisper, [1, 5, 6, 0, 0, 0], [1, .5, .5, .99, .99, .99])
    pad = decoder.config.pad_id
    for hold, early_pads in ((False, 3), (True, 0)):
        decoder.inputs.clear()
        options = DecodeOptions(candidates=1, remask="progressive", schedule=(1.0, 0.5), hold_eos=hold)
        out = diffusion_decode(decoder, memory, None, options)[0].tokens[0]
        assert out.tolist() == [decoder.config.bos_id, 5, 6, pad, pad, pad]
        assert int((decoder.inputs[1][0, 1:] == pad).sum()) == early_pads


def test_two_equal_neighbours_are_never_committed_in_one_step(whisper):
    decoder, memory = _scripted(whisper, [1, 5, 5, 5, 6, 6], [1, .9, .8, .95, .6, .7])
    options = DecodeOptions(candidates=1, remask="progressive", schedule=(1.0, 0.0, 0.0), distinct_neighbours=True)
    diffusion_decode(decoder, memory, None, options)
    mask = decoder.config.mask_id
    first = decoder.inputs[1][0].tolist()
    # of 5 5 5 the middle (least sure) waits, of 6 6 the more confident goes first
    assert first == [decoder.config.bos_id, 5, mask, 5, mask, 6]
    decoder.inputs.clear()
    diffusion_decode(decoder, memory, None, DecodeOptions(candidates=1, remask="progressive", schedule=(1.0, 0.0)))
    assert len(decoder.inputs) == 1  # without the rule everything is committed at once


def test_a_starting_canvas_keeps_its_known_tokens_and_fills_only_its_masks(whisper):
    decoder, memory = _scripted(whisper, [1, 5, 6, 7, 0], [1, .9, .9, .9, .9])
    mask, pad = decoder.config.mask_id, decoder.config.pad_id
    start = torch.tensor([[decoder.config.bos_id, 9, mask, 9, pad]])
    options = DecodeOptions(candidates=2, remask="progressive", schedule=(1.0, 0.5), hold_eos=True)
    out = diffusion_decode(decoder, memory, None, options, canvas=torch.tensor([5]), start=start)[0]
    assert out.tokens.tolist() == [[decoder.config.bos_id, 9, 6, 9, pad]] * 2


def test_gaps_are_empty_slots_inside_the_text_that_decoding_skips(whisper):
    from speech_peft.decoders import insert_gaps
    generator = torch.Generator().manual_seed(0)
    gapped = insert_gaps(list(range(5, 45)), 0.3, room=6, pad_id=0, generator=generator)
    assert [t for t in gapped if t != 0] == list(range(5, 45)) and gapped.count(0) == 6  # at most the room
    assert insert_gaps([5, 6], 1.0, room=0, pad_id=0) == [5, 6]
    config = from_whisper(whisper, max_length=8).config
    row = torch.tensor([config.bos_id, 5, config.pad_id, 6, config.pad_id, config.pad_id])
    assert text_tokens(row, config) == [5]
    assert text_tokens(row, config, pad_is_gap=True) == [5, 6]
