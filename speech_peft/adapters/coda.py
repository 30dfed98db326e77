"""CoDA, conditional adapters (Lei et al., 2023): at each adapted block a router picks the top-k tokens (one in
``reduction``) that go through the frozen block; every token takes a light parallel adapter, and the
tokens left out skip the block's heavy attention and feed-forward. The block runs on k tokens instead
of T, so its cost falls by ``reduction`` (its attention by its square).

    out_i = x_i + adapter(x_i) + g_i [block(x_selected) - x_selected]_i     (g_i = 0 if i is not selected)

By default the selected tokens attend to each other only, at their own positions (the encoder added
positions before the first block). With ``attend="all"`` their queries attend to every token's keys and
values, as in the paper's conditional attention: a selected token's block output is then exactly the dense
block's output at its position, given the same inputs. That needs a pre-norm transformer layer whose parts
are known (Whisper's and AST's layers, ``_TRANSFORMER_LAYERS``); other blocks (the Conformer, whose
convolution needs the sequence) run the selected tokens alone either way.

What the tokens left out receive (``skipped``): the paper's ``"light"`` gives them the light path only, so
after a few routed blocks most tokens hold features the later frozen blocks never saw. ``"interpolate"``
selects one token per window of ``reduction`` consecutive tokens and adds to every token the block's update
interpolated in time between the selected tokens around it (neighbouring 20 ms frames change little), so
every token stays near what the dense encoder would give. On FSDD's held-out speakers (see the recipe's
RESULTS.md) the shipped configs use it with ``attend="all"``.

The router learns through the gate: ``g = 1 + s - stop_gradient(s)`` with
``s = sigmoid(router(x))`` is exactly 1 in the forward pass and passes the score's gradient back (a
straight-through top-k in place of the paper's soft top-k). With k = T every token is selected and the
block is the frozen block with a parallel adapter beside it (``ParallelAdapterConfig`` on the block).

The shipped configs leave the first block dense (``layers: "1-"``).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import UserError
from .bottleneck import BottleneckAdapter, BottleneckFields
from .dims import output_dim
from .registry import register_method
from .targeting import Target


@dataclass
class CoDAConfig(BottleneckFields):
    method = "coda"
    default_roles = ("block",)
    scale: float = 1.0
    reduction: int = 4          # one token in ``reduction`` goes through the frozen block
    router_init_std: float = 0.02
    attend: str = "selected"    # "selected": among themselves; "all": selected queries, every token's keys/values
    skipped: str = "light"      # "light": the light path only; "interpolate": also the selected tokens' update

    def __post_init__(self) -> None:
        if self.reduction < 1:
            raise UserError(f"coda: reduction must be at least 1, got {self.reduction}")
        if self.attend not in ("all", "selected"):
            raise UserError(f"coda: attend must be 'all' or 'selected', got {self.attend!r}")
        if self.skipped not in ("light", "interpolate"):
            raise UserError(f"coda: skipped must be 'light' or 'interpolate', got {self.skipped!r}")


class ConditionalAdapter(nn.Module):
    routes_base = True  # the site lets route() run the frozen block

    def __init__(self, width: int, config: CoDAConfig):
        super().__init__()
        self.reduction, self.attend, self.skipped = config.reduction, config.attend, config.skipped
        self.light = BottleneckAdapter(width, width, config, reads_output=False)
        self.router = nn.Linear(width, 1)
        nn.init.normal_(self.router.weight, std=config.router_init_std)
        nn.init.zeros_(self.router.bias)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # the light path, on every token
        return self.light(x, y)

    def selected(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(indices in time order (batch, k), gates (batch, k)) of the tokens the block processes."""
        scores = torch.sigmoid(self.router(x).squeeze(-1))                 # (batch, time)
        batch, steps = scores.shape
        k = max(1, math.ceil(steps / self.reduction))
        if self.skipped == "interpolate":  # the best token of each window of ``reduction`` consecutive tokens
            padded = nn.functional.pad(scores, (0, k * self.reduction - steps), value=-1.0)
            offsets = torch.arange(k, device=x.device) * self.reduction
            index = padded.view(batch, k, self.reduction).argmax(-1) + offsets  # padding (-1) never wins
        else:
            index = scores.topk(k, dim=1).indices.sort(dim=1).values
        chosen = scores.gather(1, index)
        return index, 1.0 + chosen - chosen.detach()

    def _merge(self, x: Tensor, index: Tensor, update: Tensor) -> Tensor:
        """``x`` with the block's ``update`` (batch, k, width) of the selected tokens ``index`` added."""
        if self.skipped == "light":
            return x.scatter_add(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]), update)
        return x + interpolate_in_time(update, index, x.shape[1])

    def route(self, block: nn.Module, args: tuple, kwargs: dict, time_first: bool = False):
        x = args[0].transpose(0, 1) if time_first else args[0]              # (batch, time, width)
        batch, steps, width = x.shape
        index, gate = self.selected(x)
        gather = lambda t: t.gather(1, index.unsqueeze(-1).expand(-1, -1, width))  # noqa: E731
        picked = gather(x)
        parts = _TRANSFORMER_LAYERS.get(type(block).__name__)
        side_inputs = [a for a in (*args[1:], *kwargs.values()) if a is not None]
        if self.attend == "all" and parts is not None and not time_first and not side_inputs:
            heavy = _attend_in_context(block, parts, picked, x)
            return self._merge(x, index, (heavy - picked) * gate.unsqueeze(-1).to(heavy.dtype))
        # Per-token side inputs (a batch-first padding mask) follow their tokens.
        rest = [a.gather(1, index) if _per_token(a, batch, steps) else a for a in args[1:]]
        extra = {k: v.gather(1, index) if _per_token(v, batch, steps) else v for k, v in kwargs.items()}
        out = block(picked.transpose(0, 1) if time_first else picked, *rest, **extra)
        heavy = out[0] if isinstance(out, tuple) else out
        heavy = heavy.transpose(0, 1) if time_first else heavy
        merged = self._merge(x, index, (heavy - picked) * gate.unsqueeze(-1).to(heavy.dtype))
        merged = merged.transpose(0, 1) if time_first else merged
        return (merged, *out[1:]) if isinstance(out, tuple) else merged


# Pre-norm transformer layers by class: (pre-attention norm, attention, its output projection, pre-MLP norm).
_TRANSFORMER_LAYERS = {
    "WhisperEncoderLayer": ("self_attn_layer_norm", "self_attn", "out_proj", "final_layer_norm"),
    "ASTLayer": ("layernorm_before", "attention", "o_proj", "layernorm_after"),
}


def _mlp(block: nn.Module, h: Tensor) -> Tensor:
    if hasattr(block, "mlp"):
        return block.mlp(h)
    return block.fc2(block.activation_fn(block.fc1(h)))


def _attend_in_context(block: nn.Module, parts: tuple[str, str, str, str], picked: Tensor, x: Tensor) -> Tensor:
    """The block on the selected tokens ``picked``, their queries attending to the keys and values of every
    token of ``x``. Calls the block's own modules, so adapters on its projections still apply."""
    norm_attn, attn, norm_mlp = (getattr(block, name) for name in (parts[0], parts[1], parts[3]))
    heads = lambda t: t.unflatten(-1, (-1, attn.head_dim)).transpose(1, 2)  # noqa: E731
    queries, context = norm_attn(picked), norm_attn(x)
    mixed = nn.functional.scaled_dot_product_attention(
        heads(attn.q_proj(queries)), heads(attn.k_proj(context)), heads(attn.v_proj(context)))
    h = picked + getattr(attn, parts[2])(mixed.transpose(1, 2).flatten(2))
    return h + _mlp(block, norm_mlp(h))


def conditional_adapters(model: nn.Module) -> list[ConditionalAdapter]:
    """Every CoDA adapter of ``model`` (their ``reduction`` sets the share of tokens routed at inference)."""
    return [m for m in model.modules() if isinstance(m, ConditionalAdapter)]


@contextlib.contextmanager
def every_token(model: nn.Module) -> Iterator[None]:
    """Inside the block, every CoDA adapter of ``model`` sends every token through its block (the dense path
    of the same weights); the routing comes back after it."""
    routed = conditional_adapters(model)
    reductions = [m.reduction for m in routed]
    for module in routed:
        module.reduction = 1
    try:
        yield
    finally:
        for module, reduction in zip(routed, reductions):
            module.reduction = reduction


def interpolate_in_time(values: Tensor, positions: Tensor, steps: int) -> Tensor:
    """(batch, steps, width): ``values`` (batch, k, width) given at increasing ``positions`` (batch, k),
    linear between neighbouring positions and held constant before the first and after the last."""
    if values.shape[1] == 1:
        return values.expand(-1, steps, -1)
    where = positions.to(values.dtype).contiguous()
    time = torch.arange(steps, device=values.device, dtype=values.dtype).expand(values.shape[0], -1).contiguous()
    right = torch.searchsorted(where, time).clamp(1, where.shape[1] - 1)
    left = right - 1
    start, stop = where.gather(1, left), where.gather(1, right)
    share = ((time - start) / (stop - start)).clamp(0, 1).unsqueeze(-1)
    pick = lambda i: values.gather(1, i.unsqueeze(-1).expand(-1, -1, values.shape[-1]))  # noqa: E731
    return (1 - share) * pick(left) + share * pick(right)


def _per_token(value, batch: int, steps: int) -> bool:
    return isinstance(value, Tensor) and value.dim() == 2 and tuple(value.shape) == (batch, steps)


def _build(config: CoDAConfig, target: Target, base: nn.Module, model: nn.Module) -> ConditionalAdapter:
    if target.role != "block":
        raise UserError("coda routes tokens around a whole block: target_roles must be [block]")
    return ConditionalAdapter(output_dim(base), config)


register_method("coda", CoDAConfig, _build)
