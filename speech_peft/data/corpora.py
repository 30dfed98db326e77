"""Manifests from the published download layouts of the large speech corpora, one manifest per split.

Each reader takes the folder the archive unpacks to (or one split inside it) and returns
``{split name: entries}``; ``speech-peft prepare NAME SRC OUT`` writes ``OUT/<split>.jsonl``. Transcripts are
kept verbatim (LibriSpeech's upper case included): scoring normalises text, the manifest does not.
Audio is probed (length, rate) but not decoded; an unreadable or absurd file raises an error naming it,
or with ``skip_bad`` goes to the rejects file with its reason, as every manifest builder does.

- LibriSpeech (https://www.openslr.org/12): ``LibriSpeech/<subset>/<speaker>/<chapter>/
  <speaker>-<chapter>-<utt>.flac`` with ``<speaker>-<chapter>.trans.txt`` ("ID TRANSCRIPT" lines).
- LibriTTS and LibriTTS-R (https://www.openslr.org/60, /141): ``<subset>/<speaker>/<chapter>/
  <speaker>_<chapter>_<paragraph>_<sentence>.wav`` beside ``.normalized.txt`` (the text used) and
  ``.original.txt``.
- VCTK 0.92 (https://datashare.ed.ac.uk/handle/10283/3443): ``wav48_silence_trimmed/<speaker>/
  <speaker>_<nnn>_mic1.flac`` (microphone 2 duplicates every utterance: not used) and ``txt/<speaker>/
  <speaker>_<nnn>.txt``; VCTK 0.80's ``wav48/<speaker>/<speaker>_<nnn>.wav`` too. No official split:
  VoiceBank-DEMAND's test speakers (p232, p257) are the test split, every 20th utterance of the others
  validation. Utterances without a text file (all of p315) keep no text: restoration needs none.
- Common Voice (https://commonvoice.mozilla.org/datasets): ``<locale>/clips/*.mp3`` with ``train.tsv``,
  ``dev.tsv``, ``test.tsv`` (client_id, path, sentence, ..., accents, locale); SRC may hold several
  locales. ``task`` is the locale, or with ``task_column="accents"`` the speaker's accent (multi-accent
  ASR); ``speaker`` the client id.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import UserError
from .builders import _entry, _kaldi_table, _keep, _rejects
from .manifest import Entry
from .rejects import Rejects

VCTK_TEST_SPEAKERS = ("p232", "p257")
VCTK_VAL_EVERY = 20
COMMONVOICE_SPLITS = {"train": "train", "dev": "val", "test": "test"}


def _subsets(root: Path, marker: str, corpus: str) -> dict[str, Path]:
    """{subset name: folder}: ROOT itself when it is one subset (``marker`` files two levels down), else each
    child folder that is one."""
    if not root.is_dir():
        raise FileNotFoundError(f"{corpus}: {root} is not a folder")
    if any(root.glob(f"*/*/{marker}")):
        return {root.name: root}
    found = {child.name: child for child in sorted(root.iterdir()) if child.is_dir() and any(child.glob(f"*/*/{marker}"))}
    if not found:
        raise UserError(f"{corpus}: no {marker} files under {root} (expected <subset>/<speaker>/<chapter>/{marker})")
    return found


def _missing(rejects: Rejects | None, path: Path, problem: str) -> None:
    if rejects is None:
        raise UserError(f"{path}: {problem}")
    rejects.add(str(path), problem)


def librispeech(root: str | os.PathLike, skip_bad: bool = False, rejects_path=None) -> dict[str, list[Entry]]:
    rejects = _rejects(skip_bad, rejects_path)
    splits = {}
    for name, folder in _subsets(Path(root), "*.trans.txt", "librispeech").items():
        entries = []
        for trans in sorted(folder.glob("*/*/*.trans.txt")):
            texts = _kaldi_table(trans)
            audio_files = {p.stem: p for p in trans.parent.glob("*.flac")}
            for uid in sorted(set(texts) - set(audio_files)):
                _missing(rejects, trans.parent / f"{uid}.flac", f"listed in {trans.name} but missing")
            for uid, audio in sorted(audio_files.items()):
                if uid not in texts:
                    _missing(rejects, audio, f"no transcript in {trans.name}")
                    continue
                entries.append(_entry(uid, audio, rejects, text=texts[uid], speaker=uid.split("-")[0]))
        splits[name] = _keep(entries)
    return splits


def libritts(root: str | os.PathLike, skip_bad: bool = False, rejects_path=None) -> dict[str, list[Entry]]:
    rejects = _rejects(skip_bad, rejects_path)
    splits = {}
    for name, folder in _subsets(Path(root), "*.wav", "libritts").items():
        entries = []
        for audio in sorted(folder.glob("*/*/*.wav")):
            text_file = audio.with_suffix(".normalized.txt")
            if not text_file.is_file():
                _missing(rejects, audio, f"no transcript ({text_file.name} missing)")
                continue
            text = text_file.read_text(encoding="utf-8").strip()
            if not text:
                _missing(rejects, text_file, "empty transcript")
                continue
            entries.append(_entry(audio.stem, audio, rejects, text=text, speaker=audio.stem.split("_")[0]))
        splits[name] = _keep(entries)
    return splits


def vctk(root: str | os.PathLike, skip_bad: bool = False, rejects_path=None) -> dict[str, list[Entry]]:
    root = Path(root)
    rejects = _rejects(skip_bad, rejects_path)
    if (root / "wav48_silence_trimmed").is_dir():
        audio_files = sorted((root / "wav48_silence_trimmed").glob("*/*_mic1.flac"))
        uid_of = lambda p: p.stem[: -len("_mic1")]  # noqa: E731
    elif (root / "wav48").is_dir():
        audio_files = sorted((root / "wav48").glob("*/*.wav"))
        uid_of = lambda p: p.stem  # noqa: E731
    else:
        raise UserError(f"vctk: {root} has neither wav48_silence_trimmed/ (VCTK 0.92) nor wav48/ (0.80)")
    if not audio_files:
        raise UserError(f"vctk: no recordings under {root}")
    splits: dict[str, list[Entry]] = {"train": [], "val": [], "test": []}
    for audio in audio_files:
        uid = uid_of(audio)
        speaker, _, number = uid.partition("_")
        text_file = root / "txt" / speaker / f"{uid}.txt"
        text = text_file.read_text(encoding="utf-8").strip() if text_file.is_file() else None
        entry = _entry(uid, audio, rejects, text=text or None, speaker=speaker)
        if entry is None:
            continue
        if speaker in VCTK_TEST_SPEAKERS:
            splits["test"].append(entry)
        elif number.isdigit() and int(number) % VCTK_VAL_EVERY == 0:
            splits["val"].append(entry)
        else:
            splits["train"].append(entry)
    return splits


def commonvoice(root: str | os.PathLike, skip_bad: bool = False, rejects_path=None,
                task_column: str = "locale") -> dict[str, list[Entry]]:
    root = Path(root)
    if task_column not in ("locale", "accents"):
        raise UserError(f"commonvoice: task_column must be 'locale' or 'accents', got {task_column!r}")
    if (root / "clips").is_dir():
        locales = [root]
    else:
        locales = sorted(p for p in root.iterdir() if (p / "clips").is_dir()) if root.is_dir() else []
    if not locales:
        raise UserError(f"commonvoice: no <locale>/clips/ folder under {root}")
    rejects = _rejects(skip_bad, rejects_path)
    splits: dict[str, list[Entry]] = {name: [] for name in COMMONVOICE_SPLITS.values()}
    for locale in locales:
        for tsv_name, split in COMMONVOICE_SPLITS.items():
            tsv = locale / f"{tsv_name}.tsv"
            if not tsv.is_file():
                continue
            with open(tsv, newline="", encoding="utf-8") as handle:
                rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
                missing = {"client_id", "path", "sentence"} - set(rows.fieldnames or ())
                if missing:
                    raise UserError(f"{tsv}: missing column(s) {sorted(missing)}")
                for number, row in enumerate(rows, 2):
                    audio = locale / "clips" / row["path"]
                    if not (row.get("sentence") or "").strip():
                        _missing(rejects, audio, f"{tsv.name}:{number}: empty sentence")
                        continue
                    spoken = row.get("locale") or locale.name
                    group = (row.get("accents") or row.get("accent") or "") if task_column == "accents" else spoken
                    splits[split].append(_entry(Path(row["path"]).stem, audio, rejects, text=row["sentence"].strip(),
                                                speaker=row["client_id"], task=group or "unknown",
                                                language=spoken.split("-")[0].lower()))
    if not any(splits.values()):
        raise UserError(f"commonvoice: no train.tsv, dev.tsv or test.tsv under {root}")
    return {name: _keep(entries) for name, entries in splits.items()}


READERS = {"librispeech": librispeech, "libritts": libritts, "vctk": vctk, "commonvoice": commonvoice}
