"""What a batch command was given (audio files, folders of audio, ``.jsonl`` manifests) as entries."""
from __future__ import annotations

from pathlib import Path

from .builders import AUDIO_SUFFIXES, from_folder
from .manifest import Entry, read_manifest


def gather_inputs(inputs: list[str]) -> list[Entry]:
    """Entries in the order given; an id that appears twice is an error naming it."""
    entries: list[Entry] = []
    for item in inputs:
        path = Path(item)
        if path.suffix == ".jsonl":
            entries += read_manifest(path)
        elif path.is_dir():
            entries += from_folder(path)
        elif path.suffix.lower() in AUDIO_SUFFIXES or path.exists():
            entries.append(Entry(id=path.stem, audio=str(path), duration=0.0, sample_rate=0))
        else:
            raise FileNotFoundError(f"{path}: no such file, folder or manifest")
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"the inputs hold the same id more than once: {dup[:5]}")
    return entries
