"""The small interface every frozen encoder offers: waveforms with lengths in, hidden states out."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class EncoderOutput:
    hidden: Tensor                      # (B, T, D)
    mask: Tensor                        # (B, T) True on valid frames
    layers: list[Tensor] | None = None  # per-layer outputs, when asked for


class FrozenEncoder(nn.Module):
    """Subclasses set ``sample_rate``, ``dim`` and ``layers`` (the ModuleList adapters target by role)."""

    sample_rate: int = 16000
    dim: int
    name: str = "encoder"

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None,
                output_layers: bool = False) -> EncoderOutput:
        raise NotImplementedError

    @property
    def layers(self) -> nn.ModuleList:
        raise NotImplementedError


def lengths_or_full(waveforms: Tensor, lengths: Tensor | None) -> Tensor:
    if lengths is None:
        return torch.full((waveforms.shape[0],), waveforms.shape[-1], dtype=torch.long, device=waveforms.device)
    return lengths.to(waveforms.device)


def frame_mask(frames: Tensor, total: int) -> Tensor:
    return torch.arange(total, device=frames.device)[None, :] < frames[:, None]
