"""AST and Conformer load through their real loaders from local files; features are what AST expects."""
from __future__ import annotations

import pytest
import torch

from speech_peft.encoders import build_encoder
from speech_peft.encoders.ast import ast_fbank
from speech_peft.encoders.conformer import ConformerEncoderModel, ConformerSpec
from tiny_models import tiny_ast


def test_ast_loads_from_a_local_directory_and_resizes_positions_to_the_configured_length(tmp_path):
    model = tiny_ast()
    model.config.num_mel_bins = 128
    model.config.max_length = 64
    from transformers import ASTModel
    torch.manual_seed(0)
    saved = ASTModel(model.config)
    saved.save_pretrained(tmp_path)
    encoder = build_encoder("ast", str(tmp_path), max_length=128)
    f_dim = (128 - 8) // 8 + 1
    assert encoder.model.embeddings.position_embeddings.shape[1] == 2 + f_dim * ((128 - 8) // 8 + 1)
    out = encoder(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    assert out.hidden.shape == (2, 2 + f_dim * 16, 32)
    assert not any(p.requires_grad for p in encoder.parameters())


@pytest.mark.parametrize("seconds,max_length", [(3.0, 1024), (0.7, 1024), (3.0, 200)])
def test_ast_fbank_matches_the_reference_ast_feature_extractor(seconds, max_length):
    """The features AST checkpoints were trained on (transformers' ASTFeatureExtractor), padded or cut."""
    from pathlib import Path

    from transformers import ASTFeatureExtractor

    from speech_peft.data.audio import load_audio

    wave = load_audio(Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr" / "spk1_snt1.wav")
    wave = wave[: int(seconds * 16000)] + 0.01  # a DC offset, which both remove
    reference = ASTFeatureExtractor(max_length=max_length)(wave.numpy(), sampling_rate=16000,
                                                           return_tensors="pt").input_values[0]
    ours = ast_fbank(wave, 128, max_length)
    assert ours.shape == reference.shape == (max_length, 128)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)


def test_missing_model_directories_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_encoder("ast", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="conformer.json"):
        build_encoder("conformer", str(tmp_path))
    with pytest.raises(ValueError, match="unknown encoder kind"):
        build_encoder("wav2vec", str(tmp_path))


def test_conformer_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = ConformerEncoderModel(ConformerSpec(dim=32, num_heads=4, ffn_dim=64, num_layers=2, kernel_size=7)).eval()
    model.save(tmp_path)
    loaded = build_encoder("conformer", str(tmp_path))
    wave, lengths = torch.randn(2, 16000), torch.tensor([16000, 9000])
    a, b = model(wave, lengths), loaded(wave, lengths)
    assert torch.equal(a.hidden, b.hidden)
    assert a.mask.sum(1).tolist() == [24, 13] and len(loaded.layers) == 2
    layered = loaded(wave, lengths, output_layers=True)
    assert len(layered.layers) == 2 and torch.allclose(layered.hidden, a.hidden, atol=1e-5)
