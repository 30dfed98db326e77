"""``speech-peft`` run in the test process, as its console script runs it: the exit status, stdout and
stderr a user would see. A fresh process would spend seconds importing torch and Lightning for every
call; the end-to-end tests that need a real process (kill, two processes) start one themselves."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from speech_peft.cli import main


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def speech_peft(*args: object, cwd: Path | None = None) -> Done:
    """Run ``speech-peft ARGS`` here. An uncaught exception propagates (a user would see a traceback)."""
    if _processes(args) > 1:  # Lightning would start the others by running this process's command: pytest
        raise ValueError("a run on several processes needs its own process: use subprocess")
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level, argv, where = root.handlers[:], root.level, sys.argv[:], os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main([str(a) for a in args])
            except SystemExit as stop:  # argparse and Hydra leave by SystemExit, as the console script does
                status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr)
    finally:
        # Hydra's job logging points the root logger at the streams of this call: give the old ones back.
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.argv = argv
        os.chdir(where)
    return Done(status or 0, out.getvalue(), err.getvalue())


def _processes(args: tuple[object, ...]) -> int:
    words = [str(a) for a in args]
    counts = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--devices"]
    counts += [w.partition("=")[2] for w in words if w.startswith("trainer.devices=")]
    return max([int(c) if c.isdigit() else 2 for c in counts], default=1)
