"""Clean speech from many synthetic voices with exact transcripts (``speech-peft prepare tts_voices``).

Every voice of espeak-ng for a language (its accents x voice variants, at several rates and pitches) and,
for English, the flite voices read sentences from a text file (one per line; the bundled
``data/sentences/read_sentences*.txt`` were written for this project: English, German, French, Spanish).
Files are written at 16 kHz, atomically, and kept when they already exist (a rerun resumes). Validation voices are whole voices
held out of training, so a validation score is on voices never trained on.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import UserError
from .audio import load_audio, probe, save_audio
from .manifest import Entry, write_manifest

SAMPLE_RATE = 16000
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                  "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m3", "m7", "f1", "f2", "f4")
# Whisper language code -> espeak-ng voices speaking it
ESPEAK_LANGUAGES = {"en": ESPEAK_ACCENTS, "de": ("de",), "fr": ("fr-fr", "fr-be", "fr-ch"), "es": ("es", "es-419"),
                    "it": ("it",), "nl": ("nl",), "pt": ("pt", "pt-br"), "pl": ("pl",), "sv": ("sv",)}
FLITE_VOICES = ("slt", "rms", "awb", "kal16")


class SynthesisError(RuntimeError):
    """A synthesiser failed on a voice (the user's to fix: reinstall it, or drop that voice)."""


@dataclass(frozen=True)
class Voice:
    engine: str      # espeak-ng | flite
    name: str        # the engine's voice name
    rate: int = 0    # espeak-ng words per minute (0: the engine's default)
    pitch: int = 50  # espeak-ng pitch 0-99

    @property
    def id(self) -> str:
        return f"{self.engine}_{self.name}_{self.rate}_{self.pitch}".replace("+", "-")

    def command(self, text: str, wav: str) -> list[str]:
        if self.engine == "espeak-ng":
            return ["espeak-ng", "-v", self.name, "-s", str(self.rate or 165), "-p", str(self.pitch), "-w", wav, text]
        return ["flite", "-voice", self.name, "-t", text, "-o", wav]


def available_voices(rates: tuple[int, ...] = (140, 175), pitches: tuple[int, ...] = (35, 60),
                     language: str = "en", variants: tuple[str, ...] = ESPEAK_VARIANTS) -> list[Voice]:
    """The voices this machine can synthesise in ``language`` (an engine that is not installed contributes
    none; flite speaks English only); ``variants`` are espeak-ng's voice variants (``espeak-ng
    --voices=variant``) to combine with each accent."""
    if language not in ESPEAK_LANGUAGES:
        raise UserError(f"no synthetic voices for language {language!r}; known: {', '.join(ESPEAK_LANGUAGES)}")
    voices = []
    if shutil.which("espeak-ng"):
        for accent in ESPEAK_LANGUAGES[language]:
            for variant in variants:
                for rate in rates:
                    for pitch in pitches:
                        voices.append(Voice("espeak-ng", f"{accent}+{variant}", rate, pitch))
    if shutil.which("flite") and language == "en":
        voices += [Voice("flite", name) for name in FLITE_VOICES]
    return voices


def synthesise(voice: Voice, text: str, path: Path) -> Path:
    """``text`` read by ``voice`` into ``path`` (16 kHz), unless the file is already there."""
    if path.exists():
        return path
    with tempfile.TemporaryDirectory() as tmp:
        raw = str(Path(tmp) / "raw.wav")
        done = subprocess.run(voice.command(text, raw), capture_output=True, text=True)
        if done.returncode != 0:
            raise SynthesisError(f"{voice.engine} failed for voice {voice.name} "
                                 f"(exit status {done.returncode}): {done.stderr.strip()[:200]}")
        return save_audio(path, load_audio(raw, SAMPLE_RATE), SAMPLE_RATE)


def make_tts_voices(sentences: str | Path, out: str | Path, per_voice: int = 8, val_voices: int = 8,
                    max_voices: int | None = None, seed: int = 0, language: str = "en") -> dict[str, Path]:
    """Synthesise ``per_voice`` sentences (drawn per voice) with every available voice of ``language`` (or
    ``max_voices`` of them, drawn at random); ``val_voices`` whole voices go to validation. Entries carry
    ``language``."""
    lines = [s.strip() for s in Path(sentences).read_text(encoding="utf-8").splitlines() if s.strip()]
    if not lines:
        raise UserError(f"{sentences}: no sentences (one per line)")
    voices = available_voices(language=language)
    if not voices:
        raise FileNotFoundError("no speech synthesiser found: install espeak-ng and/or flite "
                                "(apt-get install espeak-ng flite)")
    rng = random.Random(seed)
    if max_voices is not None and max_voices < len(voices):
        voices = rng.sample(voices, max_voices)
    held_out = {v.id for v in rng.sample(voices, min(val_voices, len(voices) - 1))}
    out = Path(out)
    splits: dict[str, list[Entry]] = {"train": [], "val": []}
    for voice in tqdm(voices, desc="tts voices", unit="voice"):
        for index in sorted(rng.sample(range(len(lines)), min(per_voice, len(lines)))):
            path = synthesise(voice, lines[index], out / "audio" / voice.id / f"s{index:03d}.wav")
            frames, rate, _ = probe(path)
            split = "val" if voice.id in held_out else "train"
            splits[split].append(Entry(f"{voice.id}_s{index:03d}", str(path.resolve()), round(frames / rate, 4),
                                       SAMPLE_RATE, text=lines[index], speaker=voice.id, language=language))
    return {name: write_manifest(entries, out / f"{name}.jsonl", relative=False) for name, entries in splits.items()}
