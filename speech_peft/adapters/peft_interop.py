"""LoRA interchange with Hugging Face PEFT's on-disk format.

PEFT keeps ``adapter_config.json`` and ``adapter_model.safetensors`` with keys
``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``. Module names are those of the model
that PEFT wrapped, so export and import must be given the same (unwrapped) model PEFT sees.
A PiSSA adapter exports exactly as a rank-2r LoRA: ``[B, -B0] @ [A; A0]``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..fileio import write_json
from ..tensor_files import load_tensors, save_tensors
from .injection import AdapterReport, adapter_modules, add_adapter, records
from .lora import LoRAConfig, LoRALinear
from .targeting import Target

_PREFIX = "base_model.model."


def export_peft_lora(model: nn.Module, directory: str | os.PathLike, name: str = "default",
                     base_model_name_or_path: str | None = None) -> Path:
    config = records(model)[name].config if name in records(model) else None
    if not isinstance(config, LoRAConfig):
        raise UserError(f"adapter {name!r} is not a LoRA adapter; only LoRA exports to PEFT")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, ranks = {}, set()
    for path, module in adapter_modules(model, name).items():
        assert isinstance(module, LoRALinear)
        a, b = module.lora_A.weight.detach(), module.lora_B.weight.detach()
        if module.pissa:
            a, b = torch.cat([a, module.pissa_A0]), torch.cat([b, -module.pissa_B0], dim=1)
        tensors[f"{_PREFIX}{path}.lora_A.weight"] = a.contiguous().cpu()
        tensors[f"{_PREFIX}{path}.lora_B.weight"] = b.contiguous().cpu()
        ranks.add(a.shape[0])
    if len(ranks) != 1:
        raise UserError(f"adapter {name!r} has ranks {sorted(ranks)} at different modules; PEFT export needs one")
    rank = ranks.pop()
    scale = next(iter(adapter_modules(model, name).values())).scale
    peft_config = {
        "peft_type": "LORA", "task_type": None, "r": rank, "lora_alpha": scale * rank,
        "lora_dropout": config.dropout, "target_modules": sorted(adapter_modules(model, name)),
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "init_lora_weights": True, "modules_to_save": None, "inference_mode": True,
        "base_model_name_or_path": base_model_name_or_path, "rank_pattern": {}, "alpha_pattern": {},
    }
    save_tensors(directory / "adapter_model.safetensors", tensors)
    write_json(directory / "adapter_config.json", peft_config)
    return directory


def import_peft_lora(model: nn.Module, directory: str | os.PathLike, name: str = "default") -> AdapterReport:
    directory = Path(directory)
    peft_config = json.loads((directory / "adapter_config.json").read_text())
    if peft_config.get("peft_type") != "LORA":
        raise UserError(f"{directory}: peft_type {peft_config.get('peft_type')!r} is not LORA")
    for unsupported in ("use_dora", "fan_in_fan_out"):
        if peft_config.get(unsupported):
            raise UserError(f"{directory}: {unsupported}=true is not supported")
    if peft_config.get("rank_pattern") or peft_config.get("alpha_pattern"):
        raise UserError(f"{directory}: per-module rank_pattern/alpha_pattern are not supported")
    tensors = load_tensors(directory / "adapter_model.safetensors")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        stem = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in stem:
                module_path = stem.split(marker)[0]
                pairs.setdefault(module_path, {})[part] = value
    if not pairs:
        raise UserError(f"{directory}: no lora_A/lora_B tensors found")
    r = int(peft_config["r"])
    config = LoRAConfig(target_modules=sorted(pairs), r=r, alpha=float(peft_config["lora_alpha"]),
                        dropout=float(peft_config.get("lora_dropout", 0.0)),
                        use_rslora=bool(peft_config.get("use_rslora", False)))
    targets = [Target(write=path, read=None) for path in sorted(pairs)]
    missing = [t.write for t in targets if not _has_module(model, t.write)]
    if missing:
        raise UserError(f"{directory}: PEFT adapter targets modules this model lacks: {missing[:5]}")
    report = add_adapter(model, config, name, targets=targets)
    with torch.no_grad():
        for path, module in adapter_modules(model, name).items():
            module.lora_A.weight.copy_(pairs[path]["lora_A"])
            module.lora_B.weight.copy_(pairs[path]["lora_B"])
    return report


def _has_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False
