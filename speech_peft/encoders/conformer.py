"""A USM-like Conformer encoder: log-mel input, 4x convolutional subsampling, torchaudio Conformer blocks.

Its own checkpoint format: ``conformer.json`` (the constructor's arguments) and
``conformer.safetensors`` (weights), written by ``save`` and read by ``load_conformer_encoder``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchaudio
from torch import Tensor, nn

from ..fileio import write_json
from ..tensor_files import load_tensors, save_tensors
from .base import EncoderOutput, FrozenEncoder, frame_mask, lengths_or_full


@dataclass
class ConformerSpec:
    n_mels: int = 80
    dim: int = 256
    num_heads: int = 4
    ffn_dim: int = 1024
    num_layers: int = 8
    kernel_size: int = 31
    dropout: float = 0.0


class ConformerEncoderModel(FrozenEncoder):
    def __init__(self, spec: ConformerSpec, name: str = "conformer"):
        super().__init__()
        self.spec, self.dim, self.name = spec, spec.dim, name
        self.melspec = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=spec.n_mels)
        self.subsample = nn.Sequential(nn.Conv2d(1, spec.dim, 3, 2), nn.ReLU(), nn.Conv2d(spec.dim, spec.dim, 3, 2),
                                       nn.ReLU())
        freq = ((spec.n_mels - 1) // 2 - 1) // 2
        self.proj = nn.Linear(spec.dim * freq, spec.dim)
        self.conformer = torchaudio.models.Conformer(spec.dim, spec.num_heads, spec.ffn_dim, spec.num_layers,
                                                     spec.kernel_size, dropout=spec.dropout)

    @property
    def layers(self) -> nn.ModuleList:
        return self.conformer.conformer_layers

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, output_layers: bool = False) -> EncoderOutput:
        lengths = lengths_or_full(waveforms, lengths)
        feats = (self.melspec(waveforms) + 1e-6).log().transpose(1, 2)      # (B, T, n_mels)
        x = self.subsample(feats[:, None])                                    # (B, C, T', F')
        x = self.proj(x.permute(0, 2, 1, 3).flatten(2))                       # (B, T', D)
        frames = torch.div(lengths, 160, rounding_mode="floor") + 1
        frames = ((frames - 1) // 2 - 1) // 2
        frames = frames.clamp(1, x.shape[1])
        mask = frame_mask(frames, x.shape[1])
        states = []
        if output_layers:
            h = x.transpose(0, 1)
            for layer in self.layers:
                h = layer(h, ~mask)
                states.append(h.transpose(0, 1))
            hidden = states[-1]
        else:
            hidden, _ = self.conformer(x, frames)
        return EncoderOutput(hidden, mask, states or None)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        save_tensors(directory / "conformer.safetensors", self.state_dict())
        write_json(directory / "conformer.json", asdict(self.spec))
        return directory


def load_conformer_encoder(directory: str | Path) -> ConformerEncoderModel:
    directory = Path(directory)
    for name in ("conformer.json", "conformer.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory}: not a Conformer checkpoint ({name} missing)")
    model = ConformerEncoderModel(ConformerSpec(**json.loads((directory / "conformer.json").read_text())),
                                  name=str(directory))
    model.load_state_dict(load_tensors(directory / "conformer.safetensors"), strict=True)
    return model.eval()
