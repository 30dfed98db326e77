"""The export contract: every task's ``export(directory)`` writes its files plus ``export.json``
(what kind of export it is, the keyword arguments that rebuild it, the package version), and its
loader reads them back. ``read_export_info`` is the one place that checks a folder is an export of
the expected kind and says clearly when it is not."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UserError
from .fileio import write_json

INFO = "export.json"


def write_export_info(directory: str | os.PathLike, kind: str, config: dict[str, Any]) -> Path:
    """Written last, so a folder with ``export.json`` holds a finished export."""
    return write_json(Path(directory) / INFO, {"kind": kind, "config": config, "speech_peft_version": __version__})


def read_export_info(directory: str | os.PathLike, kinds: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / INFO
    if not path.is_file():
        what = "no such folder" if not directory.exists() else f"{INFO} is missing"
        raise FileNotFoundError(f"{directory} is not a speech_peft export: {what}")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg})") from None
    wanted = (kinds,) if isinstance(kinds, str) else kinds
    if wanted and info.get("kind") not in wanted:
        raise UserError(f"{directory} holds a {info.get('kind')!r} export, not {' or '.join(map(repr, wanted))}")
    return info
