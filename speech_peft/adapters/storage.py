"""How adapter tensors sit on disk: dense, sparse (a packed bit mask and the kept values), or low-bit.

Low-bit storage (the precision-redundancy result: adapters keep their accuracy at very few bits): each
matrix is cut into groups of ``group`` values; a group stores one float16 scale ``s`` and a ``bits``-bit
code ``c`` per value, read back as ``s * (c - (2**bits - 1) / 2)``. The scale minimises the squared error
of its group: in closed form at 1 bit (``s = 2 * mean |w|``, the sign times the mean magnitude), by a
search over clipping ratios above. Codes are packed eight bits to the byte. Tensors smaller than one group
stay float32 (their scale would cost more than their values).

``encode`` turns a state dict into what safetensors stores plus a JSON description; ``decode`` inverts it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from ..errors import UserError

BITS = (1, 2, 4, 8)
SPARSE_FROM = 0.4  # a float tensor at least this fraction zeros is stored as mask + kept values


def pack(codes: Tensor, bits: int) -> Tensor:
    """Unsigned ``bits``-bit codes (flat) packed into bytes, first code in the lowest bits."""
    per_byte = 8 // bits
    padded = torch.zeros(math.ceil(len(codes) / per_byte) * per_byte, dtype=torch.uint8)
    padded[: len(codes)] = codes.to(torch.uint8)
    shifts = torch.arange(per_byte, dtype=torch.uint8) * bits
    return (padded.view(-1, per_byte) << shifts).sum(1).to(torch.uint8)


def unpack(packed: Tensor, bits: int, count: int) -> Tensor:
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, dtype=torch.uint8) * bits
    return ((packed[:, None] >> shifts) & (2 ** bits - 1)).reshape(-1)[:count]


def quantise(values: Tensor, bits: int, group: int) -> tuple[Tensor, Tensor]:
    """(codes, float16 scales) for flat ``values``, one scale per group, each minimising its group's error."""
    if bits not in BITS:
        raise UserError(f"{bits}-bit storage: choose one of {BITS}")
    flat = values.detach().float().reshape(-1)
    pad = (-len(flat)) % group
    groups = torch.cat([flat, flat.new_zeros(pad)]).view(-1, group)
    half = (2 ** bits - 1) / 2
    if bits == 1:
        scales = (2 * groups.abs().mean(1)).clamp(min=1e-12)[:, None]
    else:  # search the clipping ratio: the largest magnitude is rarely the best range for few levels
        peak = groups.abs().amax(1, keepdim=True).clamp(min=1e-12)
        ratios = torch.linspace(0.3, 1.0, 36)
        candidates = peak[None] * ratios[:, None, None] / half          # (ratios, groups, 1)
        codes = (groups[None] / candidates + half).round().clamp(0, 2 * half)
        errors = ((codes - half) * candidates - groups[None]).pow(2).sum(-1)
        scales = candidates.squeeze(-1).gather(0, errors.argmin(0)[None]).squeeze(0)[:, None]
    scales = scales.half().float().clamp(min=torch.finfo(torch.float16).tiny)  # the scale as it is stored
    codes = (groups / scales + half).round().clamp(0, 2 * half).to(torch.uint8)
    return codes.reshape(-1)[: len(flat)], scales.reshape(-1).half()


def dequantise(codes: Tensor, scales: Tensor, bits: int, group: int, shape: list[int]) -> Tensor:
    half = (2 ** bits - 1) / 2
    count = math.prod(shape)
    per_value = scales.float().repeat_interleave(group)[:count]
    return ((codes.float() - half) * per_value).reshape(shape)


def encode(tensors: dict[str, Tensor], bits: int | None = None, group: int = 256) -> tuple[dict[str, Tensor], dict]:
    """What to write (safetensors-ready) and how to read it back (``{key: description}``)."""
    stored: dict[str, Tensor] = {}
    layout: dict[str, dict] = {}
    for key, value in tensors.items():
        value = value.detach().cpu()
        shape = list(value.shape)
        if value.dtype == torch.bool:
            stored[f"{key}::bits"] = pack(value.reshape(-1).to(torch.uint8), 1)
            layout[key] = {"kind": "mask", "shape": shape}
        elif value.is_floating_point() and bits is not None and value.numel() >= group:
            codes, scales = quantise(value, bits, group)
            stored[f"{key}::codes"], stored[f"{key}::scales"] = pack(codes, bits), scales
            layout[key] = {"kind": "low_bit", "bits": bits, "group": group, "shape": shape,
                           "dtype": str(value.dtype).removeprefix("torch.")}
        elif value.is_floating_point() and value.numel() >= 64 and (value == 0).float().mean() >= SPARSE_FROM:
            kept = value != 0
            stored[f"{key}::mask"], stored[f"{key}::values"] = pack(kept.reshape(-1).to(torch.uint8), 1), value[kept]
            layout[key] = {"kind": "sparse", "shape": shape}
        else:
            stored[key] = value.contiguous()
            layout[key] = {"kind": "dense"}
    return stored, layout


def decode(stored: dict[str, Tensor], layout: dict[str, dict]) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    for key, how in layout.items():
        kind = how["kind"]
        if kind == "dense":
            tensors[key] = stored[key]
            continue
        count = math.prod(how["shape"])
        if kind == "mask":
            tensors[key] = unpack(stored[f"{key}::bits"], 1, count).bool().reshape(how["shape"])
        elif kind == "sparse":
            kept = unpack(stored[f"{key}::mask"], 1, count).bool()
            dense = torch.zeros(count, dtype=stored[f"{key}::values"].dtype)
            dense[kept] = stored[f"{key}::values"]
            tensors[key] = dense.reshape(how["shape"])
        elif kind == "low_bit":
            codes = unpack(stored[f"{key}::codes"], how["bits"], count)
            value = dequantise(codes, stored[f"{key}::scales"], how["bits"], how["group"], how["shape"])
            tensors[key] = value.to(getattr(torch, how["dtype"]))
        else:
            raise UserError(f"tensor {key}: unknown storage kind {kind!r}")
    return tensors
