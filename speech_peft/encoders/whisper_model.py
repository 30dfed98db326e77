"""Whisper (encoder-decoder) defined here, on the parameter names of the published checkpoints.

The names (``model.encoder.layers.0.self_attn.q_proj`` ...) and block class names are those of the
Hugging Face definition, so the same weights load from CTranslate2 files and Hugging Face folders, saved
adapters address the same modules, and LoRA trades with PEFT unchanged; the definition itself needs no
``transformers`` import, which is most of a transcription's start-up time. Attention runs through
``scaled_dot_product_attention``; the decoder keeps a key/value cache per layer for step-by-step search.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from ..errors import UserError


@dataclass
class WhisperConfig:
    vocab_size: int = 51864
    num_mel_bins: int = 80
    d_model: int = 384
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    decoder_layers: int = 4
    decoder_attention_heads: int = 6
    decoder_ffn_dim: int = 1536
    max_source_positions: int = 1500
    max_target_positions: int = 448
    pad_token_id: int = 50256
    eos_token_id: int = 50256  # <|endoftext|>
    decoder_start_token_id: int = 50257  # <|startoftranscript|>
    name_or_path: str = field(default="", compare=False)

    @classmethod
    def from_dict(cls, values: dict) -> "WhisperConfig":
        """From our own dict or a Hugging Face ``config.json`` (its other keys are not needed here)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class LayerCache:
    """One decoder layer's keys and values: its own tokens' so far, and the encoder states' (computed once)."""
    self_kv: tuple[Tensor, Tensor] | None = None
    cross_kv: tuple[Tensor, Tensor] | None = None


@dataclass
class DecoderCache:
    layers: list[LayerCache]
    length: int = 0  # tokens seen so far: the next token's position

    @classmethod
    def empty(cls, layers: int) -> "DecoderCache":
        return cls([LayerCache() for _ in range(layers)])

    def reorder(self, rows: Tensor) -> None:
        """Keep row ``rows[i]`` as row i (beam search's surviving hypotheses)."""
        for layer in self.layers:
            for name in ("self_kv", "cross_kv"):
                kv = getattr(layer, name)
                if kv is not None:
                    setattr(layer, name, (kv[0].index_select(0, rows), kv[1].index_select(0, rows)))


class WhisperAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = width, heads, width // heads
        self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width, bias=False)
        self.v_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], -1, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, memory: Tensor | None = None, causal: bool = False,
                cache: LayerCache | None = None) -> Tensor:
        """Self-attention over ``x``, or cross-attention to ``memory``; with ``cache`` the keys and values
        are extended (self) or computed once (cross)."""
        q = self._heads(self.q_proj(x))
        if memory is not None and cache is not None and cache.cross_kv is not None:
            k, v = cache.cross_kv
        else:
            source = x if memory is None else memory
            k, v = self._heads(self.k_proj(source)), self._heads(self.v_proj(source))
            if cache is not None and memory is not None:
                cache.cross_kv = (k, v)
            elif cache is not None:
                if cache.self_kv is not None:
                    k, v = torch.cat([cache.self_kv[0], k], 2), torch.cat([cache.self_kv[1], v], 2)
                cache.self_kv = (k, v)
        mask, steps, known = None, q.shape[2], k.shape[2]
        if causal and steps > 1 and known > steps:  # new tokens after cached ones: bottom-right causal
            mask = torch.ones(steps, known, dtype=torch.bool, device=q.device).tril(known - steps)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and steps > 1 and mask is None)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class WhisperEncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = WhisperAttention(width, heads), nn.LayerNorm(width)
        self.fc1, self.fc2, self.final_layer_norm = nn.Linear(width, ffn), nn.Linear(ffn, width), nn.LayerNorm(width)
        self.activation_fn = nn.GELU()

    def forward(self, x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(self.activation_fn(self.fc1(self.final_layer_norm(x))))


class WhisperDecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = WhisperAttention(width, heads), nn.LayerNorm(width)
        self.encoder_attn, self.encoder_attn_layer_norm = WhisperAttention(width, heads), nn.LayerNorm(width)
        self.fc1, self.fc2, self.final_layer_norm = nn.Linear(width, ffn), nn.Linear(ffn, width), nn.LayerNorm(width)
        self.activation_fn = nn.GELU()

    def forward(self, x: Tensor, memory: Tensor, cache: LayerCache | None = None) -> Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), causal=True, cache=cache)
        x = x + self.encoder_attn(self.encoder_attn_layer_norm(x), memory=memory, cache=cache)
        return x + self.fc2(self.activation_fn(self.fc1(self.final_layer_norm(x))))


class WhisperEncoder(nn.Module):
    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.config = config
        width = config.d_model
        self.conv1 = nn.Conv1d(config.num_mel_bins, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_source_positions, width)
        self.embed_positions.requires_grad_(False)  # sinusoidal, fixed
        self.layers = nn.ModuleList(WhisperEncoderLayer(width, config.encoder_attention_heads, config.encoder_ffn_dim)
                                    for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(width)

    def forward(self, feats: Tensor, output_layers: bool = False, final_norm: bool = True) -> tuple[Tensor, list[Tensor]]:
        """Log-mel ``feats`` (batch, mels, frames) of any length up to the window: the position embeddings are
        sliced to the input, so a 2 s clip costs 2 s, not 30. Returns the last state (after the final layer
        norm when ``final_norm``) and, when asked, each layer's."""
        x = F.gelu(self.conv1(feats))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        if x.shape[1] > self.embed_positions.weight.shape[0]:
            raise UserError(f"{x.shape[1]} encoder frames exceed Whisper's {self.embed_positions.weight.shape[0]}")
        x = x + self.embed_positions.weight[: x.shape[1]]
        states = []
        for layer in self.layers:
            x = layer(x)
            if output_layers:
                states.append(x)
        return (self.layer_norm(x) if final_norm else x), states


class WhisperDecoder(nn.Module):
    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.config = config
        width = config.d_model
        self.embed_tokens = nn.Embedding(config.vocab_size, width, config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_target_positions, width)
        self.layers = nn.ModuleList(WhisperDecoderLayer(width, config.decoder_attention_heads, config.decoder_ffn_dim)
                                    for _ in range(config.decoder_layers))
        self.layer_norm = nn.LayerNorm(width)

    def forward(self, ids: Tensor, memory: Tensor, cache: DecoderCache | None = None) -> Tensor:
        start = cache.length if cache is not None else 0
        x = self.embed_tokens(ids) + self.embed_positions.weight[start:start + ids.shape[1]]
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, cache.layers[i] if cache is not None else None)
        if cache is not None:
            cache.length += ids.shape[1]
        return self.layer_norm(x)


class WhisperModel(nn.Module):
    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.encoder, self.decoder = WhisperEncoder(config), WhisperDecoder(config)


class WhisperForConditionalGeneration(nn.Module):
    """``model`` (encoder and decoder) and ``proj_out``, the vocabulary projection tied to the token embedding."""

    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.config = config
        self.model = WhisperModel(config)
        self.proj_out = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.proj_out.weight = self.model.decoder.embed_tokens.weight

    @property
    def device(self) -> torch.device:
        return self.proj_out.weight.device

    def forward(self, decoder_input_ids: Tensor, encoder_states: Tensor | None = None,
                input_features: Tensor | None = None, cache: DecoderCache | None = None) -> Tensor:
        """Logits (batch, tokens, vocabulary) of each next token, given the encoder's states or log-mel input."""
        if encoder_states is None:
            encoder_states = self.model.encoder(input_features)[0]
        return self.proj_out(self.model.decoder(decoder_input_ids, encoder_states, cache))

    def new_cache(self) -> DecoderCache:
        return DecoderCache.empty(len(self.model.decoder.layers))


@contextlib.contextmanager
def _uninitialised() -> Iterator[None]:
    """Layers built inside keep their weights' memory as allocated: a model whose every tensor is replaced
    at once by a loaded one need not draw 39 M random numbers first (a third of a second), nor go through
    the meta device, whose first use imports torch's compiler (over a second)."""
    layers = (nn.Linear, nn.Conv1d, nn.Embedding, nn.LayerNorm)
    originals = [layer.reset_parameters for layer in layers]
    for layer in layers:
        layer.reset_parameters = lambda self: None
    try:
        yield
    finally:
        for layer, original in zip(layers, originals):
            layer.reset_parameters = original


def build_whisper(config: WhisperConfig, state: dict[str, Tensor]) -> WhisperForConditionalGeneration:
    """The model with ``state``'s tensors (published names; ``proj_out.weight`` may be left out: it is the
    token embedding); every other tensor must be in ``state``."""
    with _uninitialised():
        model = WhisperForConditionalGeneration(config)
    state = {k: v for k, v in state.items() if k != "proj_out.weight"}
    expected = {k for k in model.state_dict() if k != "proj_out.weight"}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise UserError(f"{config.name_or_path or 'weights'} do not map onto Whisper: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=False, assign=True)
    model.proj_out.weight = model.model.decoder.embed_tokens.weight
    model.model.encoder.embed_positions.requires_grad_(False)
    return model.eval()
