"""Several adapters in one batch: each utterance names the adapter it is decoded with (none: the base model),
the way a server answers requests for different users' adapters without regrouping them. Every adapter runs
only on its own utterances, so a mixed batch costs about what a batch through one adapter costs."""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import UnknownNameError
from .fusion import active_fusion
from .site import sites


def set_row_adapters(model: nn.Module, names: Sequence[str | None] | None) -> None:
    """``names[i]``: the adapter of utterance i (loaded on ``model`` under that name), or None for the
    base model; ``names=None`` returns to the active adapters."""
    placed = {n for site in sites(model).values() for n in site.adapters}
    unknown = sorted({n for n in names or () if n is not None and n not in placed})
    if unknown:
        raise UnknownNameError(f"no adapter named {unknown} on the model; it has {sorted(placed)}")
    rows = None if names is None else {
        name: torch.tensor([i for i, n in enumerate(names) if n == name], dtype=torch.long)
        for name in dict.fromkeys(n for n in names if n is not None)}
    for site in sites(model).values():
        site.row_adapters = rows


@contextlib.contextmanager
def select_rows(model: nn.Module, rows: list[int]) -> Iterator[None]:
    """Within the block, the model sees only utterances ``rows`` of the batch its per-utterance routing was
    set for (mixed adapters, fusion masks and routings): a decoder re-running a few of them stays correct."""
    saved_sites = {path: site.row_adapters for path, site in sites(model).items()}
    context = active_fusion(model)
    saved_context = None if context is None else (context.mask, context.routing, context.predicted)
    index = torch.tensor(rows, dtype=torch.long)
    position = {row: k for k, row in enumerate(rows)}  # a row's place in the selection
    try:
        for path, site in sites(model).items():
            if saved_sites[path] is not None:
                site.row_adapters = {name: torch.tensor([position[r] for r in picked.tolist() if r in position],
                                                        dtype=torch.long) for name, picked in saved_sites[path].items()}
        if context is not None:
            context.mask, context.routing, context.predicted = (
                None if t is None else t[index.to(t.device)] for t in saved_context)
        yield
    finally:
        for path, site in sites(model).items():
            site.row_adapters = saved_sites[path]
        if context is not None:
            context.mask, context.routing, context.predicted = saved_context
