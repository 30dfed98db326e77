"""The diffusion decoding options, defined once: ``DecodeOptions``. ``speech-peft transcribe``'s diffusion
flags are made from its fields (``add_arguments``), the task config's ``decode:`` block holds its defaults (a
test compares them), and an export stores the ones it was trained with. Kept free of torch, so that the
command line can build its parser without loading it."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal


def _option(default, help: str):  # noqa: A002 - argparse's word
    return field(default=default, metadata={"help": help})


@dataclass
class DecodeOptions:
    candidates: int = _option(4, "candidates decoded in parallel, K")
    schedule: tuple[float, ...] = _option((1.0, 0.9, 0.85, 0.8), "mask ratio at each refinement step, T = its length")
    remask: Literal["random", "low_confidence", "progressive"] = _option(
        "random", "random or low_confidence: re-mask and refill (mask-predict); progressive: commit the most confident")
    rule: Literal["confidence", "mbr", "rover"] = _option("confidence", "how one transcript is chosen from the K")
    length: int | None = _option(None, "canvas length L (default: from the audio's duration, else the decoder's maximum)")
    hold_eos: bool = _option(False, "progressive: end of text only at the last step")
    distinct_neighbours: bool = _option(False, "progressive: never commit two equal neighbouring tokens in one step")
    init: Literal["mask", "ctc"] = _option("mask", "ctc: start from the CTC head's hypothesis (Mask-CTC)")
    ctc_threshold: float = _option(0.9, "init ctc: tokens less confident than this start masked")
    mask_unknown_words: bool = _option(False, "init ctc: also mask words outside the training lexicon")
    seed: int = _option(0, "seed of the random re-masking and of the candidates' noise")


def flags() -> str:
    """The command line's diffusion flags, for messages that refuse them: "--candidates, --schedule, ..."."""
    return ", ".join("--" + option.name.replace("_", "-") for option in dataclasses.fields(DecodeOptions))


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """One flag per option (``--hold-eos`` for ``hold_eos``), unset by default so that an export decodes as
    it was trained unless told otherwise."""
    hints = typing.get_type_hints(DecodeOptions)
    for option in dataclasses.fields(DecodeOptions):
        kind, flag, help = hints[option.name], "--" + option.name.replace("_", "-"), option.metadata["help"]  # noqa: A001
        if typing.get_origin(kind) is Literal:
            group.add_argument(flag, choices=typing.get_args(kind), help=help)
        elif kind is bool:
            group.add_argument(flag, action="store_true", default=None, help=help)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, type=typing.get_args(kind)[0], nargs="+", help=help)
        else:
            plain = next(k for k in (typing.get_args(kind) or (kind,)) if k is not type(None))
            group.add_argument(flag, type=plain, help=help)


def given_options(args: argparse.Namespace) -> dict | None:
    """The options set on the command line (None: none), as ``DecodeOptions`` takes them."""
    given = {}
    for option in dataclasses.fields(DecodeOptions):
        value = getattr(args, option.name, None)
        if value is not None:
            given[option.name] = tuple(value) if isinstance(value, list) else value
    return given or None
