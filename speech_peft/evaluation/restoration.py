"""What a trained restorer achieves on held-out degraded speech (the table is ``reports/restoration.py``).

``measure_restorer`` computes, over a degraded manifest whose entries name their clean source
(``clean_audio``, as ``speech-peft degrade`` writes it): the mean L1 distance between the frozen
encoder's features of degraded and of clean audio, the same after the cleaner, and the real-time
factor of cleaner + vocoder (processing seconds / audio seconds, batch 1, this machine).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..adapters import set_active_adapters
from ..data.audio import load_audio
from ..data.manifest import read_manifest
from ..errors import UserError
from ..vocoders.restorer import Restorer

def measure_restorer(restorer_dir: str | Path, degraded_manifest: str | Path) -> dict[str, float]:
    """The feature distances before and after the cleaner, and the real-time factor (the module's opening)."""
    restorer = Restorer.from_export(restorer_dir)
    encoder, entries = restorer.encoder, read_manifest(degraded_manifest)
    missing = [e.id for e in entries if not e.clean_audio]
    if missing:
        raise UserError(f"{degraded_manifest}: entries without clean_audio, e.g. {missing[:3]}")
    before, after, seconds, busy = [], [], 0.0, 0.0
    with torch.inference_mode():
        for entry in entries:
            degraded, clean = load_audio(entry.audio)[None], load_audio(entry.clean_audio)[None]
            set_active_adapters(encoder, [])
            target, plain = encoder(clean).hidden, encoder(degraded).hidden
            set_active_adapters(encoder, ["cleaner"])
            cleaned = encoder(degraded).hidden
            start = time.perf_counter()
            restorer(degraded)  # cleaner + vocoder, as restore runs them
            busy += time.perf_counter() - start
            seconds += degraded.shape[-1] / 16000
            before.append((plain - target).abs().mean().item())
            after.append((cleaned - target).abs().mean().item())
    l1_before, l1_after = sum(before) / len(before), sum(after) / len(after)
    return {"files": len(entries), "audio_s": seconds, "l1_degraded": l1_before, "l1_cleaned": l1_after,
            "l1_reduction": 1 - l1_after / l1_before, "rtf": busy / seconds, "threads": torch.get_num_threads(),
            "backend": restorer.backend}
