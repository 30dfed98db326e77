"""Manifests (and folds) from a corpus layout (``speech-peft prepare LAYOUT SRC OUT``)."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from . import builders, corpora
from .digits_long import make_digits_long
from .fsdd_long import make_fsdd_long
from .manifest import write_manifest
from .splits import fsdd_take, leave_one_group_out, write_folds
from .tts_voices import make_tts_voices

LAYOUTS = ("fsdd", "fsdd_long", "digits_long", "esc50", "speechcommands", "folder", "kaldi", "tts_voices", *corpora.READERS)


def prepare(layout: str, src: str, out: str, skip_bad: bool = False, val_takes: int = 5,
            long_items: tuple[int, int] | None = None, voices: tuple[int, int] | None = None,
            task_column: str = "locale", language: str = "en") -> list[Path]:
    """Corpora (librispeech, libritts, vctk, commonvoice): one manifest per split (``corpora.py``);
    ``task_column``: commonvoice's ``task`` field, the locale or the speaker's accents.
    ``long_items``: fsdd_long and digits_long items per speaker and length bucket, (training speakers, test
    speakers); default (10, 5) and (4, 2).
    ``voices``: tts_voices (sentences per voice, voices: 0 for every available one; default (8, 0)); SRC is the
    sentences file, read by the espeak-ng voices of ``language`` (English adds flite's). digits_long: (digit
    strings per synthetic voice, voices; default (8, 24)); SRC is the shared data folder (``digits_long.py``)."""
    out_dir = Path(out)
    rejects = out_dir / "rejects.tsv"
    if layout == "fsdd":
        entries = builders.from_fsdd(src, skip_bad, rejects)
        # Leave-one-speaker-out; validation = the other speakers' first takes (the authors' test takes).
        folds = leave_one_group_out(entries, lambda e: e.speaker, lambda e: fsdd_take(e) < val_takes)
        return [write_manifest(entries, out_dir / "all.jsonl", relative=False), *write_folds(folds, out_dir)]
    if layout == "esc50":
        entries = builders.from_esc50(src, skip_bad, rejects)
        # Official 5 folds; validation = every 10th clip of the training folds, never the test fold.
        index = {e.id: i for i, e in enumerate(entries)}
        folds = leave_one_group_out(entries, lambda e: e.speaker, lambda e: index[e.id] % 10 == 0)
        return [write_manifest(entries, out_dir / "all.jsonl", relative=False), *write_folds(folds, out_dir)]
    if layout == "speechcommands":
        splits = builders.from_speech_commands(src, skip_bad, rejects)
        names = {"train": "train", "validation": "val", "test": "test"}  # one fold: the official split
        return [write_manifest(v, out_dir / "fold_official" / f"{names[k]}.jsonl", relative=False)
                for k, v in splits.items()]
    if layout == "tts_voices":
        per_voice, count = voices or (8, 0)
        return list(make_tts_voices(src, out_dir, per_voice=per_voice, max_voices=count or None,
                                    language=language).values())
    if layout == "fsdd_long":
        train_items, eval_items = long_items or (10, 5)
        return list(make_fsdd_long(src, out_dir, train_items=train_items, eval_items=eval_items).values())
    if layout == "digits_long":
        (train_items, eval_items), (strings, count) = long_items or (4, 2), voices or (8, 24)
        return list(make_digits_long(src, out_dir, train_items=train_items, eval_items=eval_items,
                                     voices=count, strings=strings, skip_bad=skip_bad).values())
    if layout in corpora.READERS:
        extra = {"task_column": task_column} if layout == "commonvoice" else {}
        splits = corpora.READERS[layout](src, skip_bad, rejects, **extra)
        written = [write_manifest(entries, out_dir / f"{name}.jsonl", relative=False)
                   for name, entries in splits.items() if entries]  # a split the download lacks: no file
        if not written:
            raise UserError(f"{layout}: no usable recordings under {src}")
        return written
    single = {"folder": builders.from_folder, "kaldi": builders.from_kaldi_dir}
    if layout in single:
        return [write_manifest(single[layout](src, skip_bad, rejects), out_dir / "all.jsonl", relative=False)]
    raise UserError(f"unknown layout {layout!r} ({', '.join(LAYOUTS)})")
