"""A masked-diffusion text decoder (Whisfusion): a bidirectional transformer that fills MASK tokens.

A sequence is a fixed prefix (BOS, and for a decoder made from Whisper with ``shift``, Whisper's
<|notimestamps|>), the transcript's BPE tokens, then PAD up to a canvas length L; the model learns
where the text ends by predicting PAD. L is fixed (the decoder's maximum) or follows the audio:
``canvas_lengths`` gives prefix + ceil(tokens_per_second x seconds), the same rule in training and
decoding, so a 5 s clip is not decoded (nor trained) on a canvas sized for 30 s; positions past an
utterance's canvas hold PAD and are never masked. Training masks each position (never the prefix)
with probability t and scores cross-entropy on the masked positions only.

The blocks are Whisper decoder blocks without their cross-attention and without the causal mask, so
the Whisper decoder's embeddings, self-attention and feed-forward weights load as a pretrained text
model (``from_whisper``); the audio reaches the text through cross-attention adapters from the
adapter core, one per block. With ``shift`` the state at position i predicts the token at i + 1, as
the autoregressive decoder it starts from did, so its pretrained next-token head stays useful
(DiffuLLaMA, Dream); without it each position predicts itself.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..adapters.layout import BlockLayout, Sublayer, register_layout
from ..asr.whisper_ar import prompt_for
from ..errors import UserError


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
    prompt: tuple[int, ...] = ()   # fixed tokens after BOS, never masked (Whisper: <|notimestamps|>)
    shift: bool = False            # the state at position i predicts token i + 1

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1

    @property
    def prefix(self) -> tuple[int, ...]:
        return (self.bos_id, *self.prompt)

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
        if self.config.shift:  # position i is read from the state before it; position 0 is never predicted
            x = torch.cat([x[:, :1], x[:, :-1]], 1)
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
        raise UserError(f"decoder weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    bad = [k for k in own if own[k].shape != renamed[k].shape]
    if bad:
        raise UserError(f"decoder weights do not fit: shape of {bad[0]} is {tuple(renamed[bad[0]].shape)}, "
                         f"expected {tuple(own[bad[0]].shape)}")
    decoder.load_state_dict(renamed, strict=True)


def from_whisper(whisper: nn.Module, max_length: int = 256, shift: bool = False) -> MaskedDiffusionDecoder:
    """A diffusion decoder initialised from a Whisper decoder (``WhisperForConditionalGeneration``):
    its token and position embeddings, self-attention, feed-forward and norms; MASK is a new token
    whose embedding starts at the mean of the others. With ``shift`` the prefix is Whisper's own
    transcription prompt, so the first text token is predicted where Whisper predicts it."""
    wc = whisper.config
    if max_length > wc.max_target_positions:
        raise UserError(f"max_length {max_length} exceeds the Whisper decoder's {wc.max_target_positions} positions")
    config = DiffusionDecoderConfig(vocab_size=wc.vocab_size + 1, bos_id=wc.decoder_start_token_id,
                                    pad_id=wc.eos_token_id, d_model=wc.d_model, layers=wc.decoder_layers,
                                    heads=wc.decoder_attention_heads, ffn_dim=wc.decoder_ffn_dim, max_length=max_length,
                                    prompt=whisper_prompt(whisper)[1:] if shift else (), shift=shift)
    decoder = MaskedDiffusionDecoder(config)
    source = whisper.model.decoder.state_dict()
    state = {k: v for k, v in source.items() if ".encoder_attn" not in k}
    embeddings = state["embed_tokens.weight"]
    state["embed_tokens.weight"] = torch.cat([embeddings, embeddings.mean(0, keepdim=True)])
    state["embed_positions.weight"] = state["embed_positions.weight"][:max_length]
    load_decoder_weights(decoder, state)
    return decoder


def whisper_prompt(whisper: nn.Module) -> tuple[int, ...]:
    """The prompt Whisper transcribes English after: <|startoftranscript|> and <|notimestamps|> for an
    English-only model, with <|en|> and <|transcribe|> for a multilingual one; a model without
    Whisper's vocabulary (a test model) has only its decoder start token."""
    config = whisper.config
    if config.vocab_size in (51864, 51865, 51866):
        return tuple(prompt_for(config.vocab_size))
    return (config.decoder_start_token_id,)


def canvas_lengths(seconds: Tensor, tokens_per_second: float, max_length: int, prefix: int = 1) -> Tensor:
    """Canvas length per utterance (prefix included): prefix + ceil(tokens_per_second x seconds), at most L."""
    return (prefix + torch.ceil(seconds * tokens_per_second)).long().clamp(prefix + 1, max_length)


def within(canvas: Tensor, width: int) -> Tensor:
    """(B, width) bool: True at the positions inside each row's canvas."""
    return torch.arange(width, device=canvas.device)[None] < canvas[:, None]


def mask_tokens(tokens: Tensor, ratio: Tensor, mask_id: int, generator: torch.Generator | None = None,
                canvas: Tensor | None = None, prefix: int = 1) -> tuple[Tensor, Tensor]:
    """Mask each position of row i with probability ``ratio[i]``; the first ``prefix`` positions (BOS
    and the prompt) are never masked, nor any position past the row's ``canvas`` length."""
    draw = torch.rand(tokens.shape, generator=generator, device="cpu").to(tokens.device)
    masked = draw < ratio[:, None]
    masked[:, :prefix] = False
    if canvas is not None:
        masked &= within(canvas.to(tokens.device), tokens.shape[1])
    return tokens.masked_fill(masked, mask_id), masked


def sample_ratio(batch: int, low: float, high: float, generator: torch.Generator | None = None,
                 antithetic: bool = False) -> Tensor:
    """Per-sample mask ratio t ~ U(low, high). ``antithetic``: one uniform draw u and t_i from
    (u + i / B) mod 1, so every batch covers the whole range evenly (low-discrepancy sampling; the
    gradient of the t-weighted loss has less variance on small batches)."""
    u = torch.rand(1 if antithetic else batch, generator=generator)
    if antithetic:
        u = (u + torch.arange(batch) / batch) % 1.0
    return low + (high - low) * u


def diffusion_loss(logits: Tensor, tokens: Tensor, masked: Tensor, weighting: str = "mean",
                   ratio: Tensor | None = None, text_positions: Tensor | None = None) -> Tensor:
    """Cross-entropy on the masked positions only; zero when nothing is masked. ``logits`` is
    (B, L, vocab), or (N, vocab) already taken at the masked positions.

    ``weighting``: "mean" averages over all masked positions of the batch; "inverse_t" is the
    masked-diffusion ELBO: each row's summed loss divided by its mask ratio t and by its number of
    text positions (``text_positions``), so a lightly masked row, which scores few tokens, counts as
    much as a heavily masked one."""
    if not masked.any():
        return logits.sum() * 0.0
    picked = logits if logits.dim() == 2 else logits[masked]
    if weighting == "mean":
        return F.cross_entropy(picked, tokens[masked])
    if weighting != "inverse_t":
        raise UserError(f"unknown loss weighting {weighting!r} (mean, inverse_t)")
    if ratio is None or text_positions is None:
        raise UserError("inverse_t weighting needs each row's mask ratio and number of text positions")
    per_token = F.cross_entropy(picked, tokens[masked], reduction="none")
    rows = masked.nonzero()[:, 0]
    per_row = torch.zeros(masked.shape[0], device=per_token.device).index_add_(0, rows, per_token)
    return (per_row / (ratio.to(per_row.device).clamp(min=1e-3) * text_positions.to(per_row.device))).mean()


def insert_gaps(ids: list[int], rate: float, room: int, pad_id: int, generator: torch.Generator | None = None
                ) -> list[int]:
    """The tokens with empty slots (PAD) inserted before each with probability ``rate``, at most
    ``room`` of them: a decoder trained on these learns that PAD inside a text is a gap, so a canvas
    whose length is only an estimate (Mask-CTC's) can hold fewer tokens than it has slots."""
    if rate <= 0 or room <= 0:
        return list(ids)
    draws = torch.rand(len(ids), generator=generator).tolist()
    out: list[int] = []
    for token, draw in zip(ids, draws):
        if draw < rate and room > 0:
            out.append(pad_id)
            room -= 1
        out.append(token)
    return out


def pack_transcripts(token_lists: list[list[int]], config: DiffusionDecoderConfig,
                     canvas: Tensor | None = None, names: list[str] | None = None) -> Tensor:
    """Prefix + tokens + PAD to L (the longest ``canvas`` when given); a transcript too long for its
    canvas is an error naming it (``names[i]``, else its index), never silently cut."""
    sizes = [config.max_length] * len(token_lists) if canvas is None else canvas.tolist()
    out = torch.full((len(token_lists), max(sizes)), config.pad_id, dtype=torch.long)
    prefix = len(config.prefix)
    for i, ids in enumerate(token_lists):
        if len(ids) + prefix > sizes[i]:
            name = names[i] if names else f"transcript {i}"
            hint = "" if canvas is None else " (raise tokens_per_second)"
            raise UserError(f"{name} has {len(ids)} tokens; its canvas holds {sizes[i] - prefix}{hint}")
        out[i, :prefix] = torch.tensor(config.prefix, dtype=torch.long)
        out[i, prefix:prefix + len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def text_tokens(row: Tensor, config: DiffusionDecoderConfig, pad_is_gap: bool = False) -> list[int]:
    """The transcript in a decoded row: after the prefix, up to the first PAD (or MASK, if any is left).
    ``pad_is_gap``: the row's length was given (a Mask-CTC canvas), so a PAD the decoder put inside a
    masked span is an empty slot, skipped, and the text ends only at the canvas's last PAD."""
    ids = row[len(config.prefix):].tolist()
    if pad_is_gap:
        while ids and ids[-1] == config.pad_id:
            ids.pop()
        ids = [t for t in ids if t != config.pad_id]
    for stop in (config.pad_id, config.mask_id):
        if stop in ids:
            ids = ids[: ids.index(stop)]
    return ids


__all__ = ["DiffusionDecoderConfig", "MaskedDiffusionDecoder", "from_whisper", "load_decoder_weights",
           "whisper_prompt", "canvas_lengths", "within", "mask_tokens", "sample_ratio", "diffusion_loss", "pack_transcripts",
           "insert_gaps", "text_tokens"]
