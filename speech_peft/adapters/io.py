"""Save and load one adapter alone: safetensors weights, its config, and a manifest of the base model.

A directory holds ``adapter.safetensors`` (only the adapter's tensors), ``adapter_config.json``
(the method's config) and ``manifest.json`` (name, method, targets, base model name, a fingerprint
of the targeted base modules, package version). Loading checks the fingerprint module by module and
refuses an adapter saved for another base model, naming what differs. Tensors are stored as
``storage.py`` encodes them: sparse ones as mask + kept values, and with ``bits`` in 1, 2, 4 or 8 bits.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import UnknownNameError, UserError
from ..fileio import write_json
from ..tensor_files import load_tensors_and_metadata, save_tensors
from .injection import AdapterReport, adapter_modules, add_adapter, records
from .registry import config_from_dict
from .site import unwrap
from .storage import decode, encode
from .targeting import Target

WEIGHTS, CONFIG, MANIFEST = "adapter.safetensors", "adapter_config.json", "manifest.json"
_SAMPLE = 64


class AdapterMismatchError(UserError):
    """The saved adapter was trained on a different base model than the one it is loaded into."""


def module_fingerprint(module: nn.Module) -> dict:
    """Shapes of a module's own parameters and a hash of an evenly spaced sample of their values.

    Values pass through float16 so that the same weights held in float32 or float16 agree.
    """
    module = unwrap(module)
    digest = hashlib.sha256()
    shapes = {}
    for name, param in sorted(module.named_parameters()):
        flat = param.detach().reshape(-1)
        # float32 linspace can round the last index up to numel on large tensors: clamp it back
        idx = torch.linspace(0, flat.numel() - 1, min(_SAMPLE, flat.numel())).long().clamp(max=flat.numel() - 1)
        digest.update(name.encode())
        digest.update(flat[idx].to(torch.float16).cpu().numpy().tobytes())
        shapes[name] = list(param.shape)
    return {"shapes": shapes, "values": digest.hexdigest()[:16]}


def frozen_fingerprint(model: nn.Module) -> dict[str, str]:
    """A fingerprint of every frozen linear and convolution of ``model`` outside its adapters, by module
    name (adapter sites are looked through): checkpoints and caches store it to refuse another base."""
    parts = {}
    for name, module in model.named_modules():
        trained = any(p.requires_grad for p in module.parameters(recurse=False))
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and ".adapters." not in f".{name}." and not trained:
            parts[name.replace(".base", "")] = module_fingerprint(module)["values"]
    return parts


def base_fingerprint(model: nn.Module, targets: list[Target]) -> dict[str, dict]:
    return {t.write: module_fingerprint(model.get_submodule(t.write) if t.write else model)
            for t in targets}


def save_adapter(model: nn.Module, directory: str | os.PathLike, name: str = "default",
                 base_model_name: str | None = None, bits: int | None = None, group: int = 256) -> Path:
    """Write adapter ``name`` (its tensors only) to ``directory``; returns the directory. ``bits``: store its
    matrices in 1, 2, 4 or 8 bits (one float16 scale per ``group`` values), read back on load."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = records(model).get(name)
    if record is None:
        raise UnknownNameError(f"no adapter named {name!r}; the model has {sorted(records(model))}")
    tensors = {f"{path}.{key}" if path else key: value.detach().contiguous().cpu()
               for path, module in adapter_modules(model, name).items()
               for key, value in module.state_dict().items()}
    manifest = {
        "name": name,
        "method": record.config.method,
        "targets": [t.to_dict() for t in record.targets],
        "base_model": base_model_name or getattr(getattr(model, "config", None), "name_or_path", None)
        or type(model).__name__,
        "base_fingerprint": base_fingerprint(model, record.targets),
        "model_class": type(model).__name__,  # what it was placed on: a whole Whisper, an encoder alone, ...
    }
    return write_adapter_files(directory, tensors, record.config.to_dict(), manifest, bits, group)


def write_adapter_files(directory: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict,
                        manifest: dict, bits: int | None = None, group: int = 256) -> Path:
    """The three files of a saved adapter (weights stored as ``storage.encode`` says, config, manifest)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {**manifest, "speech_peft_version": __version__, "num_tensors": len(tensors),
                "num_parameters": sum(v.numel() for v in tensors.values()), "storage_bits": bits}
    stored, layout = encode(tensors, bits, group)
    save_tensors(directory / WEIGHTS, stored, {"storage": json.dumps(layout)})
    write_json(directory / CONFIG, config)
    write_json(directory / MANIFEST, manifest)
    return directory


def read_manifest(directory: str | os.PathLike) -> dict:
    directory = Path(directory)
    if (directory / "export.json").is_file() and not (directory / WEIGHTS).is_file():
        kind = json.loads((directory / "export.json").read_text()).get("kind", "model")
        raise UserError(f"{directory} is a {kind} export, not a saved adapter")
    for file in (WEIGHTS, CONFIG, MANIFEST):
        if not (directory / file).is_file():
            raise FileNotFoundError(f"{directory} is not a saved adapter: {file} is missing")
    return json.loads((directory / MANIFEST).read_text())


def check_base(model: nn.Module, manifest: dict, directory: Path) -> None:
    saved_for = manifest.get("base_model")
    for path, saved in manifest["base_fingerprint"].items():
        try:
            module = model.get_submodule(path) if path else model
        except AttributeError:
            raise AdapterMismatchError(f"adapter {directory} (saved for {saved_for!r}{_placed_on(manifest)}) "
                                       f"targets module {path!r}, which this {type(model).__name__} does not "
                                       "have") from None
        here = module_fingerprint(module)
        if here["shapes"] != saved["shapes"]:
            raise AdapterMismatchError(f"adapter {directory} was saved for {saved_for!r}: module {path!r} "
                                       f"has parameter shapes {here['shapes']} here but {saved['shapes']} there")
        if here["values"] != saved["values"]:
            raise AdapterMismatchError(f"adapter {directory} was saved for {saved_for!r}: the weights of "
                                       f"module {path!r} differ from the ones it was trained on")


def _placed_on(manifest: dict) -> str:
    """What the adapter was trained on, when that tells why its modules are missing here."""
    placed = manifest.get("model_class")
    if placed is None and all(t.get("write", "").startswith("encoder.") for t in manifest.get("targets", [])):
        placed = "an encoder alone"
    if placed is None:
        return ""
    alone = placed.endswith("EncoderModel") or placed == "an encoder alone"
    return f" on {placed}" + (", as a classifier's adapter is" if alone else "")


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """An adapter file's tensors as the adapter holds them (decoded from sparse or low-bit storage), checked
    against the hash saved with them."""
    stored, metadata = load_tensors_and_metadata(path)
    layout = metadata.get("storage")
    return decode(stored, json.loads(layout)) if layout else stored


def load_adapter(model: nn.Module, directory: str | os.PathLike, name: str | None = None,
                 check_base_model: bool = True) -> AdapterReport:
    """Place a saved adapter on ``model`` exactly where it was, with its trained weights."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if check_base_model:
        check_base(model, manifest, directory)
    config = config_from_dict(json.loads((directory / CONFIG).read_text()))
    name = name or manifest["name"]
    targets = [Target(**t) for t in manifest["targets"]]
    report = add_adapter(model, config, name, targets=targets)
    tensors = read_tensors(directory / WEIGHTS)
    expected = set()
    for path, module in adapter_modules(model, name).items():
        prefix = f"{path}." if path else ""
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict({k: state[k] for k in module.state_dict() if k in state}, strict=True)
        expected.update(prefix + k for k in module.state_dict())
    if expected != set(tensors):
        raise AdapterMismatchError(f"adapter {directory}: tensors {sorted(set(tensors) ^ expected)[:5]} "
                                   "do not match the placed adapter")
    return report
