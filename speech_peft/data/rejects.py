"""Where skipped inputs go: one ``path<TAB>reason`` line each, appended, never silently dropped."""
from __future__ import annotations

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
            with open(self.path, "a", encoding="utf-8") as handle:  # O_APPEND: safe across workers
                handle.write(f"{item}\t{reason.replace(chr(9), ' ').replace(chr(10), ' ')}\n")

    def skip_or_raise(self, err: ValueError, skip_bad: bool) -> None:
        """The one rule for a bad input (an ``AudioError``): with ``skip_bad`` it is listed here with its
        reason and the caller goes on; without, the error stands."""
        if not skip_bad:
            raise err
        self.add(err.path, err.problem)
