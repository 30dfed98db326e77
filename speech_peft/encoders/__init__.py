"""Frozen encoders behind one interface: ``encoder(waveforms, lengths) -> EncoderOutput``."""
from __future__ import annotations

from ..errors import UserError
from .base import EncoderOutput, FrozenEncoder


def build_encoder(kind: str, name_or_path: str, pad_to_30s: bool = False, max_length: int | None = None) -> FrozenEncoder:
    """``kind``: whisper (a name like whisper-tiny.en, or a directory), ast or conformer (a directory)."""
    if kind == "whisper":
        from .whisper import load_whisper_encoder

        encoder = load_whisper_encoder(name_or_path, pad_to_30s=pad_to_30s)
    elif kind == "ast":
        from .ast import load_ast_encoder

        encoder = load_ast_encoder(name_or_path, max_length)
    elif kind == "conformer":
        from .conformer import load_conformer_encoder

        encoder = load_conformer_encoder(name_or_path)
    else:
        raise UserError(f"unknown encoder kind {kind!r} (whisper, ast, conformer)")
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder.eval()


__all__ = ["EncoderOutput", "FrozenEncoder", "build_encoder"]
