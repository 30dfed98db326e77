"""``speech-peft export``: a Whisper model with its adapter merged into the weights, for another engine.

``ctranslate2``: the format CTranslate2 and faster-whisper load (int8 at load time). The source model must
be a CTranslate2 Whisper (as ``whisper-tiny.en`` is): its file gives the layout and dtypes written back.
Only adapters that fold exactly into the weights (LoRA and the other linear ones) can be merged.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from ..errors import UserError

FORMATS = ("ctranslate2",)


def export_whisper(model: str, out_dir: str | os.PathLike, adapter: str | None = None,
                   fmt: str = "ctranslate2") -> Path:
    """``model``: a Whisper name or directory (``adapter``: a saved adapter to merge) or an AR export."""
    from ..adapters import load_adapter
    from ..adapters.injection import active_adapters, merge_adapter
    from ..encoders.ctranslate2 import export_ctranslate2
    from ..encoders.whisper import load_whisper, resolve_model_dir
    from ..exports import INFO, read_export_info
    from ..models import load_model
    from ..models.whisper_ar import EXPORT_KIND as AR_EXPORT

    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    if (out / "model.bin").exists():
        raise UserError(f"{out} already holds a model.bin: export never overwrites one; choose another folder")
    if (Path(model) / INFO).is_file():
        base = read_export_info(model, (AR_EXPORT,))["config"]["model_name"]
        if adapter is not None:
            raise UserError(f"{model} is an ASR export with its own adapter: --adapter does not apply")
        whisper = load_model(model, AR_EXPORT).model
    else:
        base = model
        whisper = copy.deepcopy(load_whisper(model).model)
        if adapter is not None:
            load_adapter(whisper, adapter)
    source = resolve_model_dir(base)
    if not (source / "model.bin").is_file():
        raise UserError(f"{base} is not a CTranslate2 Whisper (no model.bin): export needs one as its layout")
    for name in active_adapters(whisper):
        merge_adapter(whisper, name)
    return export_ctranslate2(whisper, source, out).parent
