"""Feature widths of modules, so adapters can be sized before the first forward pass."""
from __future__ import annotations

from torch import nn

from ..errors import UserError
from .site import unwrap
from .targeting import Target


def output_dim(module: nn.Module) -> int:
    module = unwrap(module)
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.MultiheadAttention):
        return module.embed_dim
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return module.out_channels
    last = None
    for sub in module.modules():
        if sub is not module and isinstance(sub, (nn.Linear, nn.LayerNorm, nn.Conv1d, nn.MultiheadAttention)):
            last = sub
    if last is None:
        raise UserError(f"cannot tell the output width of {type(module).__name__}")
    return output_dim(last)


def input_dim(model: nn.Module, target: Target, base: nn.Module) -> int:
    """Width of what the adapter reads: the named module's output, or the wrapped module's input."""
    if target.read is not None:
        return output_dim(model.get_submodule(target.read))
    if isinstance(base, nn.Linear):
        return base.in_features
    return output_dim(base)
