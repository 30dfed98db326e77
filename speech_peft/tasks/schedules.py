"""Learning-rate schedules built from torch's own schedulers."""
from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LRScheduler:
    """Linear warm-up over ``warmup_steps`` (step i at (i + 1) / warmup of the peak), then cosine decay
    to zero at ``total_steps``; stepped once per optimiser step."""
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps))
    if warmup_steps <= 0:
        return cosine
    warmup = LinearLR(optimizer, 1 / warmup_steps, 1.0, total_iters=max(1, warmup_steps - 1))
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])
