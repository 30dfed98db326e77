"""Tiny, seeded stand-ins for the real encoders: same block classes, small widths."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import ASTConfig, ASTModel

from speech_peft.encoders.whisper_model import WhisperConfig, WhisperEncoder

WHISPER_FRAMES = 32  # mel frames the tiny Whisper encoder takes (2 * max_source_positions)


def tiny_whisper_config() -> WhisperConfig:
    return WhisperConfig(num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                         encoder_ffn_dim=64, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=64,
                         max_source_positions=WHISPER_FRAMES // 2, max_target_positions=32, vocab_size=100,
                         pad_token_id=0, eos_token_id=0, decoder_start_token_id=1)


class TinyWhisperEncoder(WhisperEncoder):
    """The project's Whisper encoder answering like a transformers model (``out.last_hidden_state``), as the
    AST and Conformer stand-ins do, so the adapter tables run every encoder the same way."""

    def forward(self, feats: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(last_hidden_state=super().forward(feats)[0])


def tiny_whisper_encoder(seed: int = 0, config: WhisperConfig | None = None) -> TinyWhisperEncoder:
    torch.manual_seed(seed)
    model = TinyWhisperEncoder(config or tiny_whisper_config()).eval()
    with torch.no_grad():  # sinusoids in the published weights; any fixed values serve a test
        model.embed_positions.weight.normal_()
    _randomise_biases(model)
    return model


def tiny_ast(seed: int = 0) -> ASTModel:
    torch.manual_seed(seed)
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       num_mel_bins=16, max_length=32, patch_size=8, frequency_stride=8, time_stride=8)
    model = ASTModel(config).eval()
    _randomise_biases(model)
    return model


class LastHiddenState(torch.nn.Module):
    """A speech_peft encoder answering like a transformers model (``out.last_hidden_state``), so the
    adapter tables run it exactly as they run the transformers encoders."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, waveforms: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(last_hidden_state=self.encoder(waveforms).hidden)


def tiny_conformer(seed: int = 0) -> LastHiddenState:
    from speech_peft.encoders.conformer import ConformerEncoderModel, ConformerSpec

    torch.manual_seed(seed)
    model = ConformerEncoderModel(ConformerSpec(n_mels=16, dim=32, num_heads=4, ffn_dim=64, num_layers=2,
                                                kernel_size=5)).eval()
    _randomise_biases(model)
    return LastHiddenState(model).eval()


def conformer_input(batch: int = 2, seed: int = 1) -> torch.Tensor:
    """Crops of a real recording: white noise gives the Conformer's mel front end frames so alike
    that a small ReLU bottleneck can start with every unit dead."""
    from pathlib import Path

    from speech_peft.data.audio import load_audio

    wave = load_audio(Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr" / "spk1_snt1.wav")
    starts = torch.randint(0, wave.shape[0] - 4000, (batch,), generator=torch.Generator().manual_seed(seed))
    return torch.stack([wave[s:s + 4000] for s in starts.tolist()])


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
    """A tiny Whisper saved by transformers as a local Hugging Face directory (what the real loader reads)."""
    from transformers import WhisperConfig as HFConfig
    from transformers import WhisperForConditionalGeneration

    config = HFConfig(**{**tiny_whisper_config().to_dict(), "num_mel_bins": 80, "max_source_positions": 1500},
                      bos_token_id=1)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(directory)
    return str(directory)
