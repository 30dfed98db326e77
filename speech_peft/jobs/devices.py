"""``--device cpu|cuda|auto`` of the batch jobs, checked once; which process of a data-parallel run decides."""
from __future__ import annotations

import os

from ..errors import UserError

DEVICES = ("cpu", "cuda", "auto")


def torch_device(name: str):
    """The torch device for ``name``; ``auto`` takes a GPU when there is one."""
    import torch  # here, so that commands which never touch torch start without it

    if name not in DEVICES:
        raise UserError(f"device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for, but torch sees no CUDA GPU here (use --device cpu or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def first_process() -> bool:
    """Whether this is the first process of a data-parallel run (or the only one): the one that claims folders
    and decides before the others start."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def accelerator_for(name: str) -> str:
    """Lightning's accelerator name for ``name``."""
    return "gpu" if torch_device(name).type == "cuda" else "cpu"
