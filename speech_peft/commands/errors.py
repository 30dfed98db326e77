"""Which exceptions are the user's to fix (a missing file, a bad value, an unknown name), as one line."""
from __future__ import annotations

import sys
from typing import Callable

from ..errors import UserError

# What the package raises where it validates input (a bad value, an unknown name, an option that does not
# apply), a missing file; and, from modules a command may have loaded, a bad override or config name (Hydra,
# OmegaConf) or a speech synthesiser that fails on a voice. Those are looked up only when loaded (an error of a
# module never imported cannot have been raised), so a light command stays light. Any other ValueError or
# KeyError is a fault of the program and keeps its traceback.
USER_ERRORS = (UserError, FileNotFoundError)
LOADED_USER_ERRORS = {"hydra.errors": "HydraException", "omegaconf.errors": "OmegaConfBaseException",
                      "speech_peft.data.tts_voices": "SynthesisError"}


def _user_errors() -> tuple[type, ...]:
    loaded = tuple(getattr(sys.modules[m], name) for m, name in LOADED_USER_ERRORS.items() if m in sys.modules)
    return USER_ERRORS + loaded


def user_error(err: BaseException) -> str | None:
    """The message of the user error behind ``err`` (or behind what it was raised from), else None."""
    kinds = _user_errors()
    seen = err
    while seen is not None:
        if isinstance(seen, kinds):
            return " ".join(str(seen).split())
        seen = seen.__cause__ or seen.__context__
    return None


def machine_error(err: BaseException) -> str | None:
    """The message of an error of the machine rather than the input (a full disk, a folder that cannot be
    written, a failing device) behind ``err``, else None."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and not isinstance(seen, FileNotFoundError):
            where = f": {seen.filename}" if seen.filename else ""
            return " ".join(f"{seen.strerror or seen}{where}".split())
        seen = seen.__cause__ or seen.__context__
    return None


def exit_status(command: str, action: Callable[[], object]) -> int:
    """Run ``action``: its status when it returns an int, else 0; a user error is one line on stderr and
    status 2, an error of the machine (full disk, unwritable folder) one line and status 1; anything else
    raises."""
    try:
        status = action()
    except Exception as err:  # noqa: BLE001 - only user errors are reported; the rest re-raises
        message = user_error(err)
        if message is not None:
            print(f"speech-peft {command}: error: {message}", file=sys.stderr)
            return 2
        message = machine_error(err)
        if message is None:
            raise
        print(f"speech-peft {command}: error: {message} (outputs already written are complete and kept)",
              file=sys.stderr)
        return 1
    return status if isinstance(status, int) else 0
