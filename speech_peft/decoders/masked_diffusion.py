"""A masked-diffusion text decoder (Whisfusion): a bidirectional transformer that fills MASK tokens.

A sequence is BOS, the transcript's BPE tokens, then PAD up to a canvas length L; the model learns
where the text ends by predicting PAD. L is fixed (the decoder's maximum) or follows the audio:
``canvas_lengths`` gives 1 + ceil(tokens_per_second x seconds), the same rule in training and
decoding, so a 5 s clip is not decoded (nor trained) on a canvas sized for 30 s; positions past an
utterance's canvas hold PAD and are never masked. Training masks each position (never BOS) with
probability t and scores cross-entropy on the masked positions only. The blocks are Whisper decoder blocks without
their cross-attention and without the causal mask, so the Whisper decoder's embeddings,
self-attention and feed-forward weights load as a pretrained text model (``from_whisper``); the
audio reaches the text through cross-attention adapters from the adapter core, one per block.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..adapters.layout import BlockLayout, Sublayer, register_layout


@dataclass
class DiffusionDecoderConfig:
    vocab_size: int            # the text vocabulary plus MASK (the last id)
    bos_id: int
    pad_id: int
    d_model: int = 384
    layers: int = 4
    heads: int = 6
    ffn_dim: int = 1536
    max_length: int = 256

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1

    def to_dict(self) -> dict:
        return asdict(self)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.q_proj, self.v_proj, self.out_proj = (nn.Linear(width, width) for _ in range(3))
        self.k_proj = nn.Linear(width, width, bias=False)  # as in Whisper

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.num_heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)  # bidirectional: every position sees every other
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class DiffusionBlock(nn.Module):
    """Pre-norm self-attention and feed-forward, named as in Whisper's decoder so its weights load."""

    def __init__(self, width: int, heads: int, ffn_dim: int):
        super().__init__()
        self.self_attn_layer_norm, self.final_layer_norm = nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn = SelfAttention(width, heads)
        self.fc1, self.fc2 = nn.Linear(width, ffn_dim), nn.Linear(ffn_dim, width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


register_layout("DiffusionBlock", BlockLayout(
    linears={"attn.q": "self_attn.q_proj", "attn.k": "self_attn.k_proj", "attn.v": "self_attn.v_proj",
             "attn.o": "self_attn.out_proj", "ffn.up": "fc1", "ffn.down": "fc2"},
    sublayers={"attn": Sublayer(write="self_attn.out_proj", read="self_attn_layer_norm"),
               "ffn": Sublayer(write="fc2", read="final_layer_norm"), "block": Sublayer(write="", read=None)},
    attention={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj"},
    num_heads_attr="self_attn.num_heads"))


class MaskedDiffusionDecoder(nn.Module):
    def __init__(self, config: DiffusionDecoderConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_positions = nn.Embedding(config.max_length, config.d_model)
        self.layers = nn.ModuleList(DiffusionBlock(config.d_model, config.heads, config.ffn_dim)
                                    for _ in range(config.layers))
        self.layer_norm = nn.LayerNorm(config.d_model)

    def forward(self, tokens: Tensor, only: Tensor | None = None) -> Tensor:
        """Logits (B, L, vocab) for every position, or (N, vocab) for the N positions where the bool
        mask ``only`` (B, L) is set, in row-major order. The output projection is the tied embedding;
        over a 50k vocabulary it costs as much as the blocks, so training and decoding project only
        the masked positions they score."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed_tokens(tokens) + self.embed_positions(positions)
        for layer in self.layers:
            x = layer(x)
        x = self.layer_norm(x)
        return (x if only is None else x[only]) @ self.embed_tokens.weight.T


def load_decoder_weights(decoder: MaskedDiffusionDecoder, state: dict[str, Tensor],
                         rename: dict[str, str] | None = None) -> None:
    """Strictly load a text model's weights, renaming key prefixes first (e.g. another diffusion LM's
    names onto ours); a missing or unexpected tensor is an error that names it."""
    renamed = {}
    for key, value in state.items():
        for old, new in (rename or {}).items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        renamed[key] = value
    own = decoder.state_dict()
    missing, unexpected = sorted(set(own) - set(renamed)), sorted(set(renamed) - set(own))
    if missing or unexpected:
        raise ValueError(f"decoder weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    bad = [k for k in own if own[k].shape != renamed[k].shape]
    if bad:
        raise ValueError(f"decoder weights do not fit: shape of {bad[0]} is {tuple(renamed[bad[0]].shape)}, "
                         f"expected {tuple(own[bad[0]].shape)}")
    decoder.load_state_dict(renamed, strict=True)


def from_whisper(whisper: nn.Module, max_length: int = 256) -> MaskedDiffusionDecoder:
    """A diffusion decoder initialised from a Whisper decoder (``WhisperForConditionalGeneration``):
    its token and position embeddings, self-attention, feed-forward and norms; MASK is a new token
    whose embedding starts at the mean of the others."""
    wc = whisper.config
    if max_length > wc.max_target_positions:
        raise ValueError(f"max_length {max_length} exceeds the Whisper decoder's {wc.max_target_positions} positions")
    config = DiffusionDecoderConfig(vocab_size=wc.vocab_size + 1, bos_id=wc.decoder_start_token_id,
                                    pad_id=wc.eos_token_id, d_model=wc.d_model, layers=wc.decoder_layers,
                                    heads=wc.decoder_attention_heads, ffn_dim=wc.decoder_ffn_dim, max_length=max_length)
    decoder = MaskedDiffusionDecoder(config)
    source = whisper.model.decoder.state_dict()
    state = {k: v for k, v in source.items() if ".encoder_attn" not in k}
    embeddings = state["embed_tokens.weight"]
    state["embed_tokens.weight"] = torch.cat([embeddings, embeddings.mean(0, keepdim=True)])
    state["embed_positions.weight"] = state["embed_positions.weight"][:max_length]
    load_decoder_weights(decoder, state)
    return decoder


def canvas_lengths(seconds: Tensor, tokens_per_second: float, max_length: int) -> Tensor:
    """Canvas length per utterance (BOS included): 1 + ceil(tokens_per_second x seconds), at most L."""
    return (1 + torch.ceil(seconds * tokens_per_second)).long().clamp(2, max_length)


def within(canvas: Tensor, width: int) -> Tensor:
    """(B, width) bool: True at the positions inside each row's canvas."""
    return torch.arange(width, device=canvas.device)[None] < canvas[:, None]


def mask_tokens(tokens: Tensor, ratio: Tensor, mask_id: int, generator: torch.Generator | None = None,
                canvas: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mask each position of row i with probability ``ratio[i]``; position 0 (BOS) is never masked,
    nor any position past the row's ``canvas`` length."""
    draw = torch.rand(tokens.shape, generator=generator, device="cpu").to(tokens.device)
    masked = draw < ratio[:, None]
    masked[:, 0] = False
    if canvas is not None:
        masked &= within(canvas.to(tokens.device), tokens.shape[1])
    return tokens.masked_fill(masked, mask_id), masked


def sample_ratio(batch: int, low: float, high: float, generator: torch.Generator | None = None) -> Tensor:
    """Per-sample mask ratio t ~ U(low, high) (stage 1: U(0, 1); stage 2: U(0.7, 1.0))."""
    return low + (high - low) * torch.rand(batch, generator=generator)


def diffusion_loss(logits: Tensor, tokens: Tensor, masked: Tensor) -> Tensor:
    """Cross-entropy on the masked positions only (mean over them); zero when nothing is masked.
    ``logits`` is (B, L, vocab), or (N, vocab) already taken at the masked positions."""
    if not masked.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits if logits.dim() == 2 else logits[masked], tokens[masked])


def pack_transcripts(token_lists: list[list[int]], config: DiffusionDecoderConfig,
                     canvas: Tensor | None = None, names: list[str] | None = None) -> Tensor:
    """BOS + tokens + PAD to L (the longest ``canvas`` when given); a transcript too long for its
    canvas is an error naming it (``names[i]``, else its index), never silently cut."""
    sizes = [config.max_length] * len(token_lists) if canvas is None else canvas.tolist()
    out = torch.full((len(token_lists), max(sizes)), config.pad_id, dtype=torch.long)
    for i, ids in enumerate(token_lists):
        if len(ids) + 1 > sizes[i]:
            name = names[i] if names else f"transcript {i}"
            hint = "" if canvas is None else " (raise tokens_per_second)"
            raise ValueError(f"{name} has {len(ids)} tokens; its canvas holds {sizes[i] - 1}{hint}")
        out[i, 0] = config.bos_id
        out[i, 1:1 + len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def text_tokens(row: Tensor, config: DiffusionDecoderConfig) -> list[int]:
    """The transcript in a decoded row: after BOS, up to the first PAD (or MASK, if any is left)."""
    ids = row[1:].tolist()
    for stop in (config.pad_id, config.mask_id):
        if stop in ids:
            ids = ids[: ids.index(stop)]
    return ids


__all__ = ["DiffusionDecoderConfig", "MaskedDiffusionDecoder", "from_whisper", "load_decoder_weights",
           "canvas_lengths", "within", "mask_tokens", "sample_ratio", "diffusion_loss", "pack_transcripts",
           "text_tokens"]
