"""Where skipped inputs go: one ``path<TAB>reason`` line each, appended, never silently dropped, and never
twice: a resumed run or a second run on the same folder finds the same bad input again."""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger("speech_peft.data")


class Rejects:
    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.count = 0

    def add(self, item: str, reason: str) -> None:
        self.count += 1
        log.warning("skipped %s: %s", item, reason)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = f"{item}\t{reason.replace(chr(9), ' ').replace(chr(10), ' ')}\n"
            with open(self.path, "a+", encoding="utf-8") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # read and append as one step across processes
                handle.seek(0)
                if line not in set(handle):
                    handle.write(line)

    def skip_or_raise(self, err: ValueError, skip_bad: bool) -> None:
        """The one rule for a bad input (an ``AudioError``): with ``skip_bad`` it is listed here with its
        reason and the caller goes on; without, the error stands."""
        if not skip_bad:
            raise err
        self.add(err.path, err.problem)
