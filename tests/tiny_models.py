"""Tiny, seeded stand-ins for the real encoders: same block classes, small widths."""
from __future__ import annotations

import torch
from transformers import ASTConfig, ASTModel, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

WHISPER_FRAMES = 32  # mel frames the tiny Whisper encoder takes (2 * max_source_positions)


def tiny_whisper_config() -> WhisperConfig:
    return WhisperConfig(num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                         encoder_ffn_dim=64, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=64,
                         max_source_positions=WHISPER_FRAMES // 2, max_target_positions=32, vocab_size=100,
                         pad_token_id=0, bos_token_id=1, eos_token_id=0, decoder_start_token_id=1)


def tiny_whisper_encoder(seed: int = 0) -> WhisperEncoder:
    torch.manual_seed(seed)
    model = WhisperEncoder(tiny_whisper_config()).eval()
    _randomise_biases(model)
    return model


def tiny_ast(seed: int = 0) -> ASTModel:
    torch.manual_seed(seed)
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       num_mel_bins=16, max_length=32, patch_size=8, frequency_stride=8, time_stride=8)
    model = ASTModel(config).eval()
    _randomise_biases(model)
    return model


def _randomise_biases(model: torch.nn.Module) -> None:
    # Fresh models have zero biases and unit LayerNorms, which hides bugs that mix up inputs.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))


def whisper_input(batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 16, WHISPER_FRAMES, generator=g)


def ast_input(batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 32, 16, generator=g)


def save_tiny_whisper(directory) -> str:
    """A tiny Whisper saved as a local Hugging Face directory (what the real loader reads)."""
    from transformers import WhisperForConditionalGeneration

    config = tiny_whisper_config()
    config.num_mel_bins = 80
    config.max_source_positions = 1500
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(directory)
    return str(directory)
