"""``speech-peft``: every verb of the project behind one command.

Lightning's verbs (fit, validate, test, predict) are forwarded to Hydra with their overrides;
``lightning`` is Lightning's own CLI over the same tasks; the rest are batch jobs and reports.
Every user error (a missing file, a bad value, an unknown name) is one line on stderr, exit status 2; an
error of the machine (a full disk, a folder that cannot be written) one line, exit status 1.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .commands import VERBS
from .commands.errors import exit_status

COMMANDS = {"transcribe": "transcribe", "export": "export", "merge-adapters": "merge_adapters", "prepare": "prepare",
            "degrade": "degrade", "restore": "restore", "report": "report", "score": "score",
            "shard": "shard"}  # command: module

VERB_HELP = {"fit": "train a task from the Hydra configs (speech-peft fit experiment=... key=value ...)",
             "validate": "score the validation split (ckpt_path=CHECKPOINT or EXPORT, optional)",
             "test": "score the test split with ckpt_path=CHECKPOINT or EXPORT",
             "predict": "write predictions.jsonl for data.predict with ckpt_path=CHECKPOINT or EXPORT"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or with ``only`` just that one's (its module alone is imported: a
    transcription need not load the training stack)."""
    parser = argparse.ArgumentParser(
        prog="speech-peft", description="Parameter-efficient adaptation of frozen speech and audio encoders.",
        epilog="fit/validate/test/predict take Hydra overrides (--help after the verb shows the config groups); "
               "every other command has its own --help.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")  # not "command": report has --command
    for verb in VERBS:  # parsed by Hydra (see main); listed here so --help shows them
        sub.add_parser(verb, help=VERB_HELP[verb], add_help=False)
    sub.add_parser("lightning", help="Lightning's CLI over the same tasks (--config run.yaml, --print_config)",
                   add_help=False)
    for name in (only,) if only in COMMANDS else COMMANDS:
        importlib.import_module(f".commands.{COMMANDS[name]}", __package__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in VERBS:
        from .commands.train import run_verb

        return run_verb(argv[0], argv[1:])
    if argv and argv[0] == "lightning":
        from .commands.lightning import main as lightning_main

        lightning_main(argv[1:])
        return 0
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    return exit_status(args.verb, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
