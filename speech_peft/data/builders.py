"""Manifests from common corpus layouts. Each returns entries; ``write_manifest`` stores them.

Files that cannot be read raise an error naming them, or, with ``skip_bad=True``, go to the rejects
file with the reason.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import UserError
from .audio import MAX_SECONDS, AudioError, probe
from .manifest import Entry
from .rejects import Rejects

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif"}
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _entry(uid: str, path: Path, rejects: Rejects | None, max_seconds: float = MAX_SECONDS,
           **fields) -> Entry | None:
    try:
        frames, rate, _ = probe(path, max_seconds)
    except AudioError as err:
        if rejects is None:
            raise
        rejects.add(str(path), err.problem)
        return None
    return Entry(id=uid, audio=str(path.resolve()), duration=round(frames / rate, 4), sample_rate=rate, **fields)


def _rejects(skip_bad: bool, rejects_path: str | os.PathLike | None) -> Rejects | None:
    return Rejects(rejects_path) if skip_bad else None


def _keep(entries: list[Entry | None]) -> list[Entry]:
    return [e for e in entries if e is not None]


def from_folder(root: str | os.PathLike, skip_bad: bool = False, rejects_path=None,
                max_seconds: float = MAX_SECONDS) -> list[Entry]:
    """Every audio file below ``root``; the id is its relative path without suffix."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {root} not found")
    rejects = _rejects(skip_bad, rejects_path)
    # A link that leads nowhere (dangling, looping) is an input too: it fails its check, named, or is rejected.
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and (p.is_file() or p.is_symlink())
                   and not p.name.startswith("."))  # hidden: a writer's temporary, never an input
    if not files:
        raise UserError(f"{root}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    return _keep([_entry(str(p.relative_to(root).with_suffix("")), p, rejects, max_seconds) for p in files])


def from_fsdd(root: str | os.PathLike, skip_bad: bool = False, rejects_path=None) -> list[Entry]:
    """Free Spoken Digit Dataset: ``{digit}_{speaker}_{take}.wav`` (in ``recordings/`` or ``root``)."""
    root = Path(root)
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    rejects = _rejects(skip_bad, rejects_path)
    entries = []
    for path in sorted(folder.glob("*.wav")):
        parts = path.stem.split("_")
        if len(parts) != 3 or not parts[0].isdigit():
            raise UserError(f"{path}: not an FSDD name ({{digit}}_{{speaker}}_{{take}}.wav)")
        digit, speaker, take = parts
        entries.append(_entry(path.stem, path, rejects, text=DIGIT_WORDS[int(digit)], label=digit,
                              speaker=speaker, task="digits"))
    if not entries:
        raise UserError(f"{folder}: no FSDD recordings")
    return _keep(entries)


def from_speaker_table(root: str | os.PathLike, skip_bad: bool = False, rejects_path=None) -> list[Entry]:
    """A folder of real speakers described by ``manifest.tsv`` (columns ``id``, ``path`` relative to the folder,
    ``speaker``, and ``text`` where the source has transcripts), as the shared real-speech folders are laid out
    (speechocean762, speech_commands_digits, librispeech_speakers)."""
    root = Path(root)
    table = root / "manifest.tsv"
    if not table.is_file():
        raise FileNotFoundError(f"{root}: manifest.tsv not found (a speaker table: id, path, speaker[, text])")
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    missing = {"id", "path", "speaker"} - set(rows[0] if rows else {})
    if missing:
        raise UserError(f"{table}: no column {', '.join(sorted(missing))} (a speaker table: id, path, speaker[, text])")
    rejects = _rejects(skip_bad, rejects_path)
    return _keep([_entry(row["id"], root / row["path"], rejects, text=row.get("text") or None, speaker=row["speaker"])
                  for row in rows])


def from_kaldi_dir(root: str | os.PathLike, skip_bad: bool = False, rejects_path=None) -> list[Entry]:
    """A Kaldi data directory: ``wav.scp`` (plain paths only), optional ``text`` and ``utt2spk``."""
    root = Path(root)
    scp = root / "wav.scp"
    if not scp.is_file():
        raise FileNotFoundError(f"{root}: wav.scp not found")
    if (root / "segments").is_file():
        # A segments file cuts utterances out of longer recordings; a manifest entry is a whole file.
        raise UserError(f"{root}: segments is not supported: cut the recordings into one file per utterance "
                         "first (Kaldi's extract-segments, or sox) and list those files in wav.scp")
    texts = _kaldi_table(root / "text")
    speakers = _kaldi_table(root / "utt2spk")
    rejects = _rejects(skip_bad, rejects_path)
    entries = []
    for number, line in enumerate(scp.read_text().splitlines(), 1):
        if not line.strip():
            continue
        uid, _, location = line.strip().partition(" ")
        location = location.strip()
        if location.endswith("|") or not location:
            # A piped command would have to be executed to get the audio; data files are never executed.
            raise UserError(f"{scp}:{number}: {uid} is a command or empty, not a file path; "
                             "convert the audio to files first")
        path = Path(location) if os.path.isabs(location) else root / location
        if (root / "text").is_file() and uid not in texts:
            problem = "no transcript in text"
            if rejects is None:
                raise UserError(f"{scp}:{number}: {uid}: {problem}")
            rejects.add(str(path), problem)
            continue
        entries.append(_entry(uid, path, rejects, text=texts.get(uid), speaker=speakers.get(uid)))
    return _keep(entries)


def _kaldi_table(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            table[key] = value.strip()
    return table


def from_esc50(root: str | os.PathLike, skip_bad: bool = False, rejects_path=None) -> list[Entry]:
    """ESC-50: ``audio/*.wav`` and ``meta/esc50.csv`` (filename, fold, target, category, ...).

    The fold goes into ``speaker`` so that fold-wise splits use the same code as speaker splits.
    """
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{root}: meta/esc50.csv not found")
    rejects = _rejects(skip_bad, rejects_path)
    entries = []
    with open(meta, newline="") as handle:
        for row in csv.DictReader(handle):
            path = root / "audio" / row["filename"]
            entries.append(_entry(Path(row["filename"]).stem, path, rejects, label=row["category"],
                                  speaker=f"fold{row['fold']}", task="esc50"))
    return _keep(entries)


def from_speech_commands(root: str | os.PathLike, skip_bad: bool = False, rejects_path=None) -> dict[str, list[Entry]]:
    """Speech Commands: one folder per word, ``validation_list.txt`` and ``testing_list.txt``.

    Returns the official ``train`` / ``validation`` / ``test`` split.
    """
    root = Path(root)
    lists = {}
    for split, name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        file = root / name
        if not file.is_file():
            raise FileNotFoundError(f"{root}: {name} not found")
        lists[split] = {line.strip() for line in file.read_text().splitlines() if line.strip()}
    rejects = _rejects(skip_bad, rejects_path)
    splits: dict[str, list[Entry]] = {"train": [], "validation": [], "test": []}
    for path in sorted(root.glob("*/*.wav")):
        word = path.parent.name
        if word.startswith("_"):
            continue  # _background_noise_ is not a class
        rel = f"{word}/{path.name}"
        split = next((s for s, names in lists.items() if rel in names), "train")
        entry = _entry(rel.removesuffix(".wav"), path, rejects, label=word, text=word,
                       speaker=path.stem.split("_nohash_")[0], task="speech_commands")
        if entry is not None:
            splits[split].append(entry)
    return splits
