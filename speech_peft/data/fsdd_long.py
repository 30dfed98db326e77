"""Long utterances from FSDD: one speaker's digit recordings joined with short pauses.

Each item holds the recordings of one speaker concatenated with 0.1-0.4 s of silence between them,
up to a target length (5, 10, 20 or 30 s); its transcript is the digit words in order. The split is
by speaker, so test speakers are never heard in training; validation items come from the training
speakers' takes 0-4 (the dataset authors' test takes), which training items never use.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import UserError
from .audio import load_audio, save_audio
from .builders import from_fsdd
from .manifest import Entry, write_manifest
from .splits import fsdd_take

SAMPLE_RATE = 16000


def _join(clips: list[Entry], seconds: float, rng: random.Random, waves: dict[str, torch.Tensor]
          ) -> tuple[torch.Tensor, list[str]]:
    parts, words, total = [], [], 0
    limit = int(seconds * SAMPLE_RATE)
    while True:
        clip = rng.choice(clips)
        if clip.id not in waves:
            waves[clip.id] = load_audio(clip.audio, SAMPLE_RATE)
        pause = torch.zeros(int(rng.uniform(0.1, 0.4) * SAMPLE_RATE))
        if total + len(pause) + len(waves[clip.id]) > limit and parts:
            return torch.cat(parts), words
        parts += [pause, waves[clip.id]]
        words.append(clip.text)
        total += len(pause) + len(waves[clip.id])


def make_fsdd_long(src: str | os.PathLike, out: str | os.PathLike, test_speakers: tuple[str, ...] = ("jackson", "nicolas"),
                   seconds: tuple[float, ...] = (5, 10, 20, 30), train_items: int = 10, eval_items: int = 5,
                   val_takes: int = 5, seed: int = 0) -> dict[str, Path]:
    """Write the items (``OUT/audio``) and ``train``/``val``/``test`` manifests, plus a test manifest per
    length bucket (``test_5s.jsonl`` ...). Existing audio is reused, so a rerun writes nothing new."""
    entries = from_fsdd(src)
    speakers = sorted({e.speaker for e in entries})
    unknown = set(test_speakers) - set(speakers)
    if unknown:
        raise UserError(f"test speakers {sorted(unknown)} are not in {src} (speakers: {speakers})")
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng, waves = random.Random(seed), {}
    splits: dict[str, list[Entry]] = {"train": [], "val": [], "test": []}
    plan = []
    for speaker in speakers:
        own = [e for e in entries if e.speaker == speaker]
        if speaker in test_speakers:
            plan.append(("test", speaker, own, eval_items))
        else:
            plan.append(("train", speaker, [e for e in own if fsdd_take(e) >= val_takes], train_items))
            plan.append(("val", speaker, [e for e in own if fsdd_take(e) < val_takes], eval_items // 2 or 1))
    for split, speaker, clips, count in tqdm(plan, desc="fsdd_long", unit="speaker"):
        if not clips:
            raise UserError(f"speaker {speaker}: no recordings for the {split} split")
        for length in seconds:
            for n in range(count):
                uid = f"{speaker}_{split}_{int(length):02d}s_{n:03d}"
                wave, words = _join(clips, length, rng, waves)
                path = out / "audio" / f"{uid}.wav"
                if not path.exists():
                    save_audio(path, wave, SAMPLE_RATE)
                splits[split].append(Entry(uid, str(path.resolve()), len(wave) / SAMPLE_RATE, SAMPLE_RATE,
                                           text=" ".join(words), speaker=speaker, task=f"{int(length)}s"))
    written = {name: write_manifest(items, out / f"{name}.jsonl", relative=False) for name, items in splits.items()}
    for length in seconds:
        bucket = [e for e in splits["test"] if e.task == f"{int(length)}s"]
        written[f"test_{int(length)}s"] = write_manifest(bucket, out / f"test_{int(length)}s.jsonl", relative=False)
    return written
