"""Long digit strings from many speakers (``speech-peft prepare digits_long SHARED OUT``).

Each item is one speaker's digit recordings joined with 0.1-0.4 s of silence up to a length bucket (5, 10,
20 or 30 s); its transcript is the digit words in order. Speakers come from every real source under SHARED
that has digits, plus synthetic voices reading random digit strings (training only):

- ``fsdd/`` (6 speakers, 8 kHz): jackson and nicolas are test speakers (those of ``fsdd_long``); the others
  train on takes 5-49 and validate on takes 0-4;
- ``speech_commands_digits/`` (single digits) and the digit-string utterances of ``speechocean762/``
  (children and adults): a fixed quarter of their speakers, by a hash of the speaker's id, form a second
  test set that no trained part hears (``test_real``), an eighth validate, the rest train.

A recording is used at most ``MAX_USES`` times in one item, so a speaker with few recordings gives fewer
buckets instead of one digit said thirty times; a speaker contributes to a bucket only when its recordings
fill three quarters of it. Each speaker's items are drawn from a generator seeded by the seed and the speaker,
so the test sets stay the same whatever the synthetic voices. ``speakers.tsv`` lists every speaker's source,
split and item count.
"""
from __future__ import annotations

import random
import zlib
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import UserError
from .audio import load_audio, save_audio
from .builders import DIGIT_WORDS, from_fsdd, from_speaker_table
from .manifest import Entry, write_manifest
from .splits import fsdd_take
from .tts_voices import available_voices, synthesise

SAMPLE_RATE = 16000
MAX_USES = 3
FILL = 0.75
FSDD_TEST_SPEAKERS = ("jackson", "nicolas")
SPOKEN_DIGITS = {**{word: word for word in DIGIT_WORDS}, "oh": "zero"}


def digit_words(text: str | None) -> str | None:
    """``text`` as lower-case digit words ("ZERO THREE" -> "zero three"; "oh" is zero), or None when it holds
    anything but digits."""
    words = (text or "").lower().split()
    if not words or any(w not in SPOKEN_DIGITS for w in words):
        return None
    return " ".join(SPOKEN_DIGITS[w] for w in words)


def speaker_split(speaker: str) -> str:
    """A real speaker's split, fixed by a hash of its id: a quarter test, an eighth validation, the rest training."""
    slot = zlib.crc32(speaker.encode()) % 8
    return "test_real" if slot < 2 else "val" if slot == 2 else "train"


def _join(clips: list[Entry], seconds: float, rng: random.Random, waves: dict[str, torch.Tensor]
          ) -> tuple[torch.Tensor, list[str]] | None:
    """Clips drawn at random (each at most MAX_USES times) joined with pauses up to ``seconds``, or None
    when they cannot fill FILL of it."""
    parts, words, total, uses = [], [], 0, Counter()
    limit = int(seconds * SAMPLE_RATE)
    while True:
        usable = [c for c in clips if uses[c.id] < MAX_USES]
        if not usable:
            break
        clip = rng.choice(usable)
        if clip.id not in waves:
            waves[clip.id] = load_audio(clip.audio, SAMPLE_RATE)
        pause = torch.zeros(int(rng.uniform(0.1, 0.4) * SAMPLE_RATE))
        if total + len(pause) + len(waves[clip.id]) > limit:
            break
        parts += [pause, waves[clip.id]]
        words.append(clip.text)
        total += len(pause) + len(waves[clip.id])
        uses[clip.id] += 1
    if total < FILL * limit:
        return None
    return torch.cat(parts), words


def _real_speakers(shared: Path, skip_bad: bool = False, rejects: Path | None = None
                   ) -> list[tuple[str, str, str, list[Entry]]]:
    """(source, speaker, split, clips) for every real speaker with digits under ``shared``; unreadable
    recordings are an error naming them, or with ``skip_bad`` go to ``rejects`` with the reason."""
    plan = []
    fsdd = from_fsdd(shared / "fsdd", skip_bad, rejects)
    for speaker in sorted({e.speaker for e in fsdd}):
        own = [e for e in fsdd if e.speaker == speaker]
        if speaker in FSDD_TEST_SPEAKERS:
            plan.append(("fsdd", speaker, "test", own))
        else:
            plan.append(("fsdd", speaker, "train", [e for e in own if fsdd_take(e) >= 5]))
            plan.append(("fsdd", speaker, "val", [e for e in own if fsdd_take(e) < 5]))
    for source in ("speech_commands_digits", "speechocean762"):
        entries = [e for e in from_speaker_table(shared / source, skip_bad, rejects) if digit_words(e.text)]
        for speaker in sorted({e.speaker for e in entries}):
            clips = [Entry(e.id, e.audio, e.duration, e.sample_rate, text=digit_words(e.text), speaker=speaker)
                     for e in entries if e.speaker == speaker]
            plan.append((source, speaker, speaker_split(speaker), clips))
    return plan


def _synthetic_speakers(out: Path, voices: int, strings: int, rng: random.Random
                        ) -> list[tuple[str, str, str, list[Entry]]]:
    """Synthetic voices (espeak-ng, flite) reading ``strings`` random strings of 3-8 digits each; training only."""
    available = available_voices()
    if voices and not available:
        raise FileNotFoundError("no speech synthesiser found for the synthetic voices: install espeak-ng and/or "
                                "flite (apt-get install espeak-ng flite), or give --voices 0")
    plan = []
    for voice in rng.sample(available, min(voices, len(available))):
        clips = []
        for n in range(strings):
            text = " ".join(rng.choice(DIGIT_WORDS) for _ in range(rng.randint(3, 8)))
            path = synthesise(voice, text, out / "voices" / voice.id / f"{n:02d}.wav")
            clips.append(Entry(f"{voice.id}_{n:02d}", str(path.resolve()), 0.0, SAMPLE_RATE, text=text,
                               speaker=voice.id))
        plan.append(("synthetic", voice.id, "train", clips))
    return plan


def make_digits_long(shared: str | Path, out: str | Path, seconds: tuple[float, ...] = (5, 10, 20, 30),
                     train_items: int = 4, eval_items: int = 2, voices: int = 24, strings: int = 8,
                     seed: int = 0, skip_bad: bool = False) -> dict[str, Path]:
    """Write the items (``OUT/audio``), ``train`` / ``val`` / ``test`` (FSDD's test speakers) / ``test_real``
    (the held-out real speakers) manifests, one per test set and length bucket (``test_5s``, ``test_real_5s``
    ...), and ``speakers.tsv``. ``train_items`` / ``eval_items``: items per speaker and bucket; ``voices``:
    synthetic voices reading ``strings`` digit strings each; ``skip_bad``: unreadable recordings go to
    ``OUT/rejects.tsv`` instead of stopping. Existing audio is reused: a rerun writes nothing new."""
    shared, out = Path(shared), Path(out)
    missing = [s for s in ("fsdd", "speech_commands_digits", "speechocean762") if not (shared / s).is_dir()]
    if missing:
        raise UserError(f"{shared}: no {', '.join(missing)} folder (digits_long reads every real digit source there)")
    waves: dict[str, torch.Tensor] = {}
    plan = _real_speakers(shared, skip_bad, out / "rejects.tsv") + _synthetic_speakers(out, voices, strings, random.Random(f"{seed}/synthetic"))
    splits: dict[str, list[Entry]] = {"train": [], "val": [], "test": [], "test_real": []}
    table = ["source\tspeaker\tsplit\titems"]
    (out / "audio").mkdir(parents=True, exist_ok=True)
    for source, speaker, split, clips in tqdm(plan, desc="digits_long", unit="speaker"):
        rng = random.Random(f"{seed}/{speaker}/{split}")  # a speaker's items depend on nothing else in the plan
        made = 0
        for length in seconds:
            for n in range(train_items if split == "train" else eval_items):
                joined = _join(clips, length, rng, waves)
                if joined is None:
                    break  # too few recordings for this bucket
                wave, words = joined
                uid = f"{speaker}_{split}_{int(length):02d}s_{n:03d}"
                path = out / "audio" / f"{uid}.wav"
                if not path.exists():
                    save_audio(path, wave, SAMPLE_RATE)
                splits[split].append(Entry(uid, str(path.resolve()), len(wave) / SAMPLE_RATE, SAMPLE_RATE,
                                           text=" ".join(words), speaker=speaker, task=f"{int(length)}s"))
                made += 1
        table.append(f"{source}\t{speaker}\t{split}\t{made}")
    for split in ("train", "test", "test_real"):
        if not splits[split]:
            raise UserError(f"{shared}: no {split} items could be built (too few recordings per speaker)")
    (out / "speakers.tsv").write_text("\n".join(table) + "\n")
    written = {name: write_manifest(items, out / f"{name}.jsonl", relative=False) for name, items in splits.items()}
    for name in ("test", "test_real"):
        for length in seconds:
            bucket = [e for e in splits[name] if e.task == f"{int(length)}s"]
            written[f"{name}_{int(length)}s"] = write_manifest(bucket, out / f"{name}_{int(length)}s.jsonl",
                                                               relative=False)
    return written
