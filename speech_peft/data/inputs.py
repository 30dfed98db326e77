"""What a batch command was given (audio files, folders of audio, ``.jsonl`` manifests) as entries.

Every batch command (transcribe, restore, degrade, score) gathers its inputs here, so bad files are
handled one way: an unreadable, empty, too-short or absurdly long file is an error naming it, or with
``skip_bad`` a line in the rejects file and the rest go on.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from .audio import MAX_SECONDS, AudioError, probe
from .builders import AUDIO_SUFFIXES, from_folder
from .manifest import Entry, read_manifest
from .rejects import Rejects


def gather_inputs(inputs: list[str], skip_bad: bool = False, rejects_path: str | os.PathLike | None = None,
                  max_seconds: float = MAX_SECONDS) -> list[Entry]:
    """Entries in the order given; an id that appears twice is an error naming it. Files given one by one
    and folders are checked from their headers here; a manifest's audio is checked when it is read."""
    rejects = Rejects(rejects_path)
    entries: list[Entry] = []
    for item in inputs:
        path = Path(item)
        if path.suffix == ".jsonl":
            entries += read_manifest(path)
        elif path.is_dir():
            entries += from_folder(path, skip_bad=skip_bad, rejects_path=rejects_path, max_seconds=max_seconds)
        elif path.suffix.lower() in AUDIO_SUFFIXES or path.exists():
            try:
                frames, rate, _ = probe(path, max_seconds)
            except AudioError as err:
                rejects.skip_or_raise(err, skip_bad)
                continue
            entries.append(Entry(id=path.stem, audio=str(path), duration=round(frames / rate, 4), sample_rate=rate))
        else:
            raise FileNotFoundError(f"{path}: no such file, folder or manifest")
    return refuse_shared_ids(entries)


def refuse_shared_ids(entries: list[Entry]) -> list[Entry]:
    """``entries`` itself when every id is its own; otherwise an error naming the files that share one (say
    ``a.wav`` and ``a.flac``, whose outputs would overwrite each other)."""
    files: dict[str, list[str]] = {}
    for entry in entries:
        files.setdefault(entry.id, []).append(entry.audio)
    shared = {uid: paths for uid, paths in files.items() if len(paths) > 1}
    if shared:
        said = "; ".join(f"{uid!r}: {', '.join(paths)}" for uid, paths in sorted(shared.items())[:5])
        raise UserError(f"the inputs hold the same id more than once (their outputs would overwrite each other; "
                        f"rename or give them apart): {said}")
    return entries
