"""``--device cpu|cuda|auto`` of the batch jobs, checked once."""
from __future__ import annotations
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


def accelerator_for(name: str) -> str:
    """Lightning's accelerator name for ``name``."""
    return "gpu" if torch_device(name).type == "cuda" else "cpu"
