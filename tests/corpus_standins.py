"""Tiny stand-ins of the large corpora in their published layouts, made from the bundled real recordings
(12 read sentences with transcripts, two speakers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"
TRANSCRIPTS = dict(line.split("\t") for line in (SAMPLES / "transcripts.tsv").read_text().splitlines() if line)


def recording(index: int) -> tuple[np.ndarray, int, str]:
    """(audio, rate, transcript) of the index-th bundled sentence (cycling)."""
    uid = sorted(TRANSCRIPTS)[index % len(TRANSCRIPTS)]
    audio, rate = sf.read(SAMPLES / f"{uid}.wav", dtype="float32")
    return audio, rate, TRANSCRIPTS[uid]


def write(path: Path, audio: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate)
    return path


def librispeech(root: Path, subsets: dict[str, int]) -> Path:
    """LibriSpeech/<subset>/<speaker>/<chapter>/ with FLAC and upper-case trans.txt; items per subset."""
    index = 0
    for number, (subset, items) in enumerate(subsets.items()):
        speaker, chapter = str(100 + number), "2000"
        folder = root / subset / speaker / chapter
        lines = []
        for utt in range(items):
            audio, rate, text = recording(index)
            index += 1
            uid = f"{speaker}-{chapter}-{utt:04d}"
            write(folder / f"{uid}.flac", audio, rate)
            lines.append(f"{uid} {text.upper()}")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def vctk(root: Path, speakers: dict[str, int]) -> Path:
    """VCTK-Corpus-0.92: wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic{1,2}.flac and txt/<spk>/<spk>_<nnn>.txt."""
    index = 0
    for speaker, items in speakers.items():
        for number in range(1, items + 1):
            audio, rate, text = recording(index)
            index += 1
            uid = f"{speaker}_{number:03d}"
            for mic in ("mic1", "mic2"):
                write(root / "wav48_silence_trimmed" / speaker / f"{uid}_{mic}.flac", audio, rate)
            (root / "txt" / speaker).mkdir(parents=True, exist_ok=True)
            (root / "txt" / speaker / f"{uid}.txt").write_text(text + "\n")
    return root


CV_HEADER = ("client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents"
             "\tvariant\tlocale\tsegment")


def commonvoice(root: Path, locale: str, accents: list[str], per_split: dict[str, int]) -> Path:
    """cv-corpus/<locale>/clips/*.mp3 with train/dev/test.tsv; per_split items of each accent."""
    rows: dict[str, list[str]] = {split: [] for split in per_split}
    index = 0
    for split, items in per_split.items():
        for accent_number, accent in enumerate(accents):
            for _ in range(items):
                audio, rate, text = recording(index)
                name = f"common_voice_{locale}_{1000 + index}.mp3"
                index += 1
                write(root / locale / "clips" / name, audio, rate)
                rows[split].append(f"client{accent_number}\t{name}\tsid\t{text}\t\t2\t0\t\t\t{accent}\t\t{locale}\t")
    for split, lines in rows.items():
        (root / locale / f"{split}.tsv").write_text("\n".join([CV_HEADER, *lines]) + "\n")
    return root
