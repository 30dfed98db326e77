"""Every file the package writes goes through here: to a temporary name beside it, then renamed.

A reader (or a resumed batch job) therefore sees either the old file or the whole new one, never a
half-written file, whatever kills the writer.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename the result onto ``path`` (parents are created).

    The temporary name keeps ``path``'s suffix, so writers that pick a format from it (soundfile,
    safetensors) behave as for the real name; it starts with a dot so folder scans skip it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp{path.suffix}")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes files private (0600); outputs get the usual permissions
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        # name the file the user asked for, not our temporary; a failed write() (a full disk) names none
        if err.errno is not None and err.filename in (tmp, None):
            raise type(err)(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def folder_digest(folders: list[str | os.PathLike], seed: bytes = b"") -> str:
    """A short hash of ``seed`` and every file under ``folders`` (relative names and bytes): what a job
    records to tell whether the model it ran is the one it would run now."""
    digest = hashlib.sha256(seed)
    for folder in map(Path, folders):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete temporaries a killed writer left under ``folder``; returns how many."""
    stale = [p for p in Path(folder).rglob(".*.tmp.*") if p.is_file()] if Path(folder).is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)
