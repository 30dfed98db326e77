"""``speech-peft prepare LAYOUT SRC OUT``: manifests (and folds) from a corpus layout."""
from __future__ import annotations

import argparse

from ..data.prepare import LAYOUTS, prepare


def add_parser(sub) -> None:
    p = sub.add_parser("prepare", help="write manifests (and folds) from a corpus layout")
    p.add_argument("layout", choices=LAYOUTS)
    p.add_argument("src", help="the corpus root")
    p.add_argument("out", help="output folder for the manifests")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable files, listing them in OUT/rejects.tsv")
    p.add_argument("--long-items", type=int, nargs=2, default=[10, 5], metavar=("TRAIN", "TEST"),
                   help="fsdd_long: items per speaker and length bucket for training and test speakers")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.layout != "fsdd_long" and args.long_items != [10, 5]:
        raise ValueError("--long-items applies to the fsdd_long layout only")
    for path in prepare(args.layout, args.src, args.out, args.skip_bad, long_items=tuple(args.long_items)):
        print(path)
    return 0
