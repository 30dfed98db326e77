"""``speech-peft export --format ctranslate2 --model M [--adapter A] --out DIR``: merged Whisper for another engine."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="write a Whisper model with its adapter merged in for CTranslate2 / faster-whisper")
    e.add_argument("--model", default="whisper-tiny.en", help="a Whisper name or directory, or an AR export (adapter inside)")
    e.add_argument("--adapter", help="a saved adapter to merge into the Whisper model")
    e.add_argument("--format", default="ctranslate2", choices=["ctranslate2"])
    e.add_argument("--out", required=True, help="a new folder (an existing model.bin is never overwritten)")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.export import export_whisper

    print(export_whisper(args.model, args.out, args.adapter, args.format))
    return 0
