"""The one kind of error the command line reports to the user as one line: ``UserError``.

Raised where input is validated (a value, a file's contents, a name, an option that does not apply), never for
a fault of the program, so a programming error still ends in a traceback. It is a ``ValueError``, so callers
that catch those keep working; ``UnknownNameError`` (an adapter, method or fusion that is not there) is also a
``KeyError``."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class UserError(ValueError):
    """A problem with what the user gave, said so that they can fix it: what is wrong and where."""


class UnknownNameError(UserError, KeyError):
    """A name looked up that is not there; the message says which names are."""

    def __str__(self) -> str:  # the message itself, not KeyError's quoted repr of it
        return str(self.args[0]) if self.args else ""


def dataclass_options(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """``cls(**values)`` for a config dataclass, a key it has no field for refused with ``where`` (the option's
    name, e.g. ``task.state_masking``) and the fields it has, instead of Python's TypeError."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"{where}: no option(s) {unknown}; its options are {fields}")
    return cls(**values)
