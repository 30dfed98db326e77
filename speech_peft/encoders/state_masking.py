"""SpecAugment on encoder states: time and channel spans of the frozen encoder's output set to zero in
training, so a decoder that trains on cached states still sees each clip differently every epoch (the
states themselves are computed once, ``encoders/cache.py``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UserError


@dataclass
class StateMasking:
    """``time_masks`` spans of up to ``max_time`` of each clip's valid frames and ``feature_masks`` spans of
    up to ``max_features`` channels, drawn per clip."""

    time_masks: int = 2
    max_time: float = 0.05
    feature_masks: int = 2
    max_features: int = 48

    def __post_init__(self) -> None:
        if min(self.time_masks, self.feature_masks, self.max_features) < 0 or not 0.0 <= self.max_time <= 1.0:
            raise UserError(f"state masking {self}: counts and max_features at least 0, max_time in [0, 1]")


def mask_states(hidden: Tensor, valid: Tensor, masking: StateMasking,
                generator: torch.Generator | None = None) -> Tensor:
    """``hidden`` (B, T, D) with its spans zeroed; ``valid`` (B, T) is True on a clip's own frames (padding
    is never chosen as a span's start). A new tensor: a cached state is never changed in place."""
    keep = torch.ones_like(hidden)
    frames, channels = valid.sum(1).tolist(), hidden.shape[-1]

    def span(limit: int, size: int) -> tuple[int, int]:
        width = int(torch.randint(0, limit + 1, (1,), generator=generator))
        start = int(torch.randint(0, max(size - width, 0) + 1, (1,), generator=generator))
        return start, start + width

    for b, length in enumerate(frames):
        for _ in range(masking.time_masks):
            start, end = span(int(masking.max_time * length), length)
            keep[b, start:end] = 0
        for _ in range(masking.feature_masks):
            start, end = span(min(masking.max_features, channels), channels)
            keep[b, :, start:end] = 0
    return hidden * keep
