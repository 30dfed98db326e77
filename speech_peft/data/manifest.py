"""The manifest: one JSON object per line.

Fields: id, audio (path), duration (s), sample_rate, and optional text, label, task, clean_audio,
speaker, adapter (a saved adapter folder that transcribes this utterance). Relative paths are relative to
the manifest's own folder, so a data folder can move.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import UserError
from ..fileio import write_text


@dataclass
class Entry:
    id: str
    audio: str
    duration: float
    sample_rate: int
    text: str | None = None
    label: str | None = None
    task: str | None = None
    clean_audio: str | None = None
    speaker: str | None = None
    adapter: str | None = None
    language: str | None = None   # what is spoken (a Whisper language code: en, de, ...)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, ensure_ascii=False)


_FIELDS = {f.name for f in fields(Entry)}
PATH_FIELDS = ("audio", "clean_audio", "adapter")


def read_manifest(path: str | os.PathLike) -> list[Entry]:
    """Entries with absolute paths; a malformed line (not UTF-8, not a JSON object, a field missing, unknown
    or of the wrong type) is an error naming the file and line, a manifest with no entries one naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # JSON escapes line breaks; \x85 or \u2028 in a text is no break
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}): not a manifest") from None
    root = path.parent
    entries, seen = [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            raise UserError(f"{where}: not valid JSON ({getattr(err, 'msg', err)})") from None
        if not isinstance(data, dict):
            raise UserError(f"{where}: a manifest line is a JSON object, got {type(data).__name__}")
        missing = {"id", "audio"} - set(data)
        if missing:
            raise UserError(f"{where}: missing field(s) {sorted(missing)}")
        unknown = set(data) - _FIELDS
        if unknown:
            raise UserError(f"{where}: unknown field(s) {sorted(unknown)}")
        _check_types(data, where)
        if data["id"] in seen:
            raise UserError(f"{where}: id {data['id']!r} appears twice")
        seen.add(data["id"])
        for key in PATH_FIELDS:
            if data.get(key) and not os.path.isabs(data[key]):
                data[key] = str(root / data[key])
        data["duration"] = float(data.get("duration", 0.0))
        data.setdefault("sample_rate", 0)
        entries.append(Entry(**data))
    if not entries:  # a split that lost its rows (a failed grep, a filter) would train or score nothing
        raise UserError(f"manifest {path} is empty: it holds no entries")
    return entries


def _check_types(data: dict, where: str) -> None:
    for key in ("id", "audio"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise UserError(f"{where}: {key} must be a non-empty string, got {data[key]!r}")
    duration = data.get("duration", 0.0)
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 <= duration < float("inf"):
        raise UserError(f"{where}: duration must be a finite number of seconds >= 0, got {duration!r}")
    rate = data.get("sample_rate", 0)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 0:
        raise UserError(f"{where}: sample_rate must be a whole number >= 0, got {rate!r}")
    for key in _FIELDS - {"id", "audio", "duration", "sample_rate"}:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise UserError(f"{where}: {key} must be a string, got {data[key]!r}")


def write_manifest(entries: list[Entry], path: str | os.PathLike, relative: bool = True) -> Path:
    """Write atomically; with ``relative`` audio paths under the manifest's folder are stored relative."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    lines = []
    for entry in entries:
        data = Entry(**asdict(entry))
        if relative:
            for key in PATH_FIELDS:
                value = getattr(data, key)
                if value:
                    full = Path(value).resolve()
                    setattr(data, key, os.path.relpath(full, root) if full.is_relative_to(root) else str(full))
        lines.append(data.to_json())
    return write_text(path, "\n".join(lines) + ("\n" if lines else ""))
