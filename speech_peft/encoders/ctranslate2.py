"""Read Whisper models saved in CTranslate2's ``model.bin`` (format version 6), as faster-whisper keeps them.

The file holds named arrays; this maps them onto transformers' ``WhisperForConditionalGeneration``:
fused q/k/v self-attention rows are split in that order, fused k/v cross-attention likewise, and the
key projections, which carry no bias in Whisper, drop theirs. Loading is strict: a missing or extra
tensor is an error, never a silently random weight. Nothing in the file is executed.
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import torch

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 6: np.int64}


class CTranslate2FormatError(ValueError):
    """The file is not a CTranslate2 Whisper model this reader understands."""


def read_model_bin(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values

    def string() -> str:
        nonlocal pos
        (length,) = take("<H")
        raw = data[pos:pos + length]
        pos += length
        return raw.rstrip(b"\0").decode("utf-8")

    try:
        (version,) = take("<I")
        if version != 6:
            raise CTranslate2FormatError(f"{path}: model.bin format version {version}; this reader handles 6")
        spec = string()
        if spec != "WhisperSpec":
            raise CTranslate2FormatError(f"{path}: holds a {spec!r}, not a WhisperSpec")
        take("<I")  # spec revision
        (count,) = take("<I")
        arrays: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = string()
            (rank,) = take("<B")
            shape = take(f"<{rank}I") if rank else ()
            (dtype_id,) = take("<B")
            (nbytes,) = take("<I")
            if dtype_id == 5:  # bfloat16: widen to float32 through the upper half of each word
                raw = np.frombuffer(data, np.uint16, nbytes // 2, pos).astype(np.uint32) << 16
                array = raw.view(np.float32)
            elif dtype_id in _DTYPES:
                array = np.frombuffer(data, _DTYPES[dtype_id], nbytes // np.dtype(_DTYPES[dtype_id]).itemsize, pos)
            else:
                raise CTranslate2FormatError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
            pos += nbytes
            arrays[name] = array.reshape(shape)
        (aliases,) = take("<I")
        for _ in range(aliases):
            alias, target = string(), string()
            arrays[alias] = arrays[target]
    except (struct.error, ValueError) as err:
        if isinstance(err, CTranslate2FormatError):
            raise
        raise CTranslate2FormatError(f"{path}: truncated or corrupt model.bin ({err})") from None
    return arrays


def _scalar(arrays: dict[str, np.ndarray], name: str, default: int) -> int:
    return int(arrays[name].reshape(-1)[0]) if name in arrays else default


def whisper_config_from_arrays(arrays: dict[str, np.ndarray]):
    from transformers import WhisperConfig

    d_model, n_mels, _ = arrays["encoder/conv1/weight"].shape
    enc_layers = len({m.group(1) for k in arrays if (m := re.match(r"encoder/layer_(\d+)/", k))})
    dec_layers = len({m.group(1) for k in arrays if (m := re.match(r"decoder/layer_(\d+)/", k))})
    vocab = arrays["decoder/embeddings/weight"].shape[0]
    return WhisperConfig(
        vocab_size=vocab, num_mel_bins=n_mels, d_model=d_model,
        encoder_layers=enc_layers, decoder_layers=dec_layers,
        encoder_attention_heads=_scalar(arrays, "encoder/num_heads", d_model // 64),
        decoder_attention_heads=_scalar(arrays, "decoder/num_heads", d_model // 64),
        encoder_ffn_dim=arrays["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=arrays["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=arrays["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=arrays["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=50256, bos_token_id=50257, eos_token_id=50256, decoder_start_token_id=50257,
        tie_word_embeddings=True,
    )


def _state_dict(arrays: dict[str, np.ndarray], config) -> dict[str, torch.Tensor]:
    t = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in arrays.items() if v.dtype.kind == "f"}
    d = config.d_model
    out: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = t[f"{src}/weight"]
        if f"{src}/bias" in t:
            out[f"{dst}.bias"] = t[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = t[f"{src}/gamma"], t[f"{src}/beta"]

    def split(dst: str, src: str, names: list[str]) -> None:
        weights = t[f"{src}/weight"].split(d)
        biases = t[f"{src}/bias"].split(d)
        for name, w, b in zip(names, weights, biases):
            out[f"{dst}.{name}.weight"] = w
            if name != "k_proj":  # Whisper's key projections have no bias; the fused file stores zeros
                out[f"{dst}.{name}.bias"] = b

    for side in ("encoder", "decoder"):
        layers = config.encoder_layers if side == "encoder" else config.decoder_layers
        out[f"model.{side}.embed_positions.weight"] = t[f"{side}/position_encodings/encodings"]
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        for i in range(layers):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            split(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            if side == "decoder":
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                split(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ["k_proj", "v_proj"])
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    out["model.decoder.embed_tokens.weight"] = t["decoder/embeddings/weight"]
    out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]
    return out


def load_ctranslate2_whisper(directory: str | Path):
    """``(WhisperForConditionalGeneration, tokenizer, extra)`` from a CTranslate2 Whisper directory.

    ``extra`` is the directory's ``config.json`` (suppressed token ids, alignment heads).
    """
    from tokenizers import Tokenizer
    from transformers import WhisperForConditionalGeneration

    directory = Path(directory)
    for name in ("model.bin", "tokenizer.json"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a CTranslate2 Whisper model: {name} is missing")
    arrays = read_model_bin(directory / "model.bin")
    config = whisper_config_from_arrays(arrays)
    extra = json.loads((directory / "config.json").read_text()) if (directory / "config.json").is_file() else {}
    config.suppress_tokens = extra.get("suppress_ids", [])
    config.begin_suppress_tokens = extra.get("suppress_ids_begin", [220, 50256])
    model = WhisperForConditionalGeneration(config)
    state = _state_dict(arrays, config)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k != "proj_out.weight"]
    if missing or result.unexpected_keys:
        raise CTranslate2FormatError(f"{directory}: tensors do not map onto Whisper: missing {missing[:5]}, "
                                     f"unexpected {result.unexpected_keys[:5]}")
    model.tie_weights()
    model.config._name_or_path = str(directory)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    return model.eval(), tokenizer, extra
