"""``speech-peft prepare LAYOUT SRC OUT``: manifests (and folds) from a corpus layout."""
from __future__ import annotations

import argparse

from ..data.prepare import LAYOUTS, prepare
from ..errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("prepare", help="write manifests (and folds) from a corpus layout")
    p.add_argument("layout", choices=LAYOUTS)
    p.add_argument("src", help="the corpus root")
    p.add_argument("out", help="output folder for the manifests")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable files, listing them in OUT/rejects.tsv")
    p.add_argument("--long-items", type=int, nargs=2, metavar=("TRAIN", "TEST"),
                   help="fsdd_long, digits_long: items per speaker and length bucket for training and test "
                        "speakers (fsdd_long 10 5, digits_long 4 2)")
    p.add_argument("--voices", type=int, nargs=2, metavar=("SENTENCES", "VOICES"),
                   help="tts_voices (SRC: a sentences file): sentences per voice and voices (0: all; default 8 0); "
                        "digits_long: digit strings per synthetic voice and voices (0: none; default 8 24)")
    p.add_argument("--language", help="tts_voices: the language of the sentences, spoken by that language's "
                                      "voices and written into each entry (en, de, fr, es, ...; default en)")
    p.add_argument("--task-column", choices=("locale", "accents"),
                   help="commonvoice: what goes into each entry's task, the locale (default) or the accent")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for option, layouts in (("long_items", ("fsdd_long", "digits_long")), ("voices", ("tts_voices", "digits_long")),
                            ("task_column", ("commonvoice",)), ("language", ("tts_voices",))):
        if getattr(args, option) is not None and args.layout not in layouts:
            raise UserError(f"--{option.replace('_', '-')} applies to the {' and '.join(layouts)} "
                            f"layout{'s' if len(layouts) > 1 else ''} only")
    options = {"long_items": tuple(args.long_items) if args.long_items else None,
               "voices": tuple(args.voices) if args.voices else None,
               "task_column": args.task_column or "locale", "language": args.language or "en"}
    for path in prepare(args.layout, args.src, args.out, args.skip_bad, **options):
        print(path)
    return 0
