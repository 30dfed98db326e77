"""Train / validation / test splits that never select models on the test fold."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .manifest import Entry, write_manifest


def leave_one_group_out(entries: list[Entry], group_of, is_val) -> dict[str, dict[str, list[Entry]]]:
    """One fold per group (speaker, ESC-50 fold): test = that group; validation = ``is_val`` entries
    of the other groups; train = the rest. Validation never sees the test group."""
    groups = sorted({group_of(e) for e in entries})
    if len(groups) < 2:
        raise UserError(f"need at least two groups for held-out folds, found {groups}")
    folds = {}
    for held_out in groups:
        others = [e for e in entries if group_of(e) != held_out]
        folds[held_out] = {
            "train": [e for e in others if not is_val(e)],
            "val": [e for e in others if is_val(e)],
            "test": [e for e in entries if group_of(e) == held_out],
        }
        if not folds[held_out]["val"] or not folds[held_out]["train"]:
            raise UserError(f"fold {held_out}: empty train or validation split")
    return folds


def fsdd_take(entry: Entry) -> int:
    return int(entry.id.rsplit("_", 1)[1])


def write_folds(folds: dict[str, dict[str, list[Entry]]], out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    written = []
    for name, splits in folds.items():
        for split, entries in splits.items():
            written.append(write_manifest(entries, out_dir / f"fold_{name}" / f"{split}.jsonl", relative=False))
    return written
