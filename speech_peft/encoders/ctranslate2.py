"""Read Whisper models saved in CTranslate2's ``model.bin`` (format version 6), as faster-whisper keeps them.

The file holds named arrays; this maps them onto ``whisper_model.WhisperForConditionalGeneration``:
fused q/k/v self-attention rows are split in that order, fused k/v cross-attention likewise, and the
key projections, which carry no bias in Whisper, drop theirs. Loading is strict: a missing or extra
tensor is an error, never a silently random weight. Nothing in the file is executed.
"""
from __future__ import annotations

import dataclasses
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..fileio import atomic_write
from .whisper_model import WhisperConfig, WhisperForConditionalGeneration, build_whisper

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 6: np.int64}


class CTranslate2FormatError(UserError):
    """The file is not a CTranslate2 Whisper model this reader understands."""


@dataclass
class ModelFile:
    """A ``model.bin`` as stored: its variables in file order (stored dtypes), aliases and spec revision."""
    revision: int
    variables: dict[str, np.ndarray]
    aliases: list[tuple[str, str]]


def read_model_file(path: str | Path) -> ModelFile:
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
        (revision,) = take("<I")
        (count,) = take("<I")
        variables: dict[str, np.ndarray] = {}
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
            variables[name] = array.reshape(shape)
        (count,) = take("<I")
        aliases = [(string(), string()) for _ in range(count)]
    except (struct.error, ValueError) as err:
        if isinstance(err, CTranslate2FormatError):
            raise
        raise CTranslate2FormatError(f"{path}: truncated or corrupt model.bin ({err})") from None
    return ModelFile(revision, variables, aliases)


def read_model_bin(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable by name, aliases resolved."""
    model = read_model_file(path)
    arrays = dict(model.variables)
    for alias, target in model.aliases:
        arrays[alias] = arrays[target]
    return arrays


def write_model_file(path: str | Path, model: ModelFile) -> Path:
    """The inverse of ``read_model_file`` (bfloat16 variables are written as float32)."""
    ids = {np.dtype(v): k for k, v in _DTYPES.items()}

    def string(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", model.revision, len(model.variables)))
            for name, array in model.variables.items():
                array = np.asarray(array).copy(order="C")  # ascontiguousarray would turn a scalar into rank 1
                handle.write(string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape))
                handle.write(struct.pack("<BI", ids[array.dtype], array.nbytes) + array.tobytes())
            handle.write(struct.pack("<I", len(model.aliases)))
            for alias, target in model.aliases:
                handle.write(string(alias) + string(target))

    return atomic_write(path, write)


def _scalar(arrays: dict[str, np.ndarray], name: str, default: int) -> int:
    return int(arrays[name].reshape(-1)[0]) if name in arrays else default


def whisper_config_from_arrays(arrays: dict[str, np.ndarray]) -> WhisperConfig:
    d_model, n_mels, _ = arrays["encoder/conv1/weight"].shape
    enc_layers = len({m.group(1) for k in arrays if (m := re.match(r"encoder/layer_(\d+)/", k))})
    dec_layers = len({m.group(1) for k in arrays if (m := re.match(r"decoder/layer_(\d+)/", k))})
    vocab = arrays["decoder/embeddings/weight"].shape[0]
    end = 50256 if vocab < 51865 else 50257  # multilingual vocabularies add a token before the specials
    return WhisperConfig(
        vocab_size=vocab, num_mel_bins=n_mels, d_model=d_model,
        encoder_layers=enc_layers, decoder_layers=dec_layers,
        encoder_attention_heads=_scalar(arrays, "encoder/num_heads", d_model // 64),
        decoder_attention_heads=_scalar(arrays, "decoder/num_heads", d_model // 64),
        encoder_ffn_dim=arrays["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=arrays["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=arrays["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=arrays["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=end, eos_token_id=end, decoder_start_token_id=end + 1,
    )


def _layout(config) -> dict[str, list[str | None]]:
    """Each CTranslate2 variable and the model's tensors it holds, in row order: fused attention
    projections hold several (q, k, v); a None part is the zero bias stored for a key projection, which
    has none in Whisper. The one table both reading and writing go by."""
    table: dict[str, list[str | None]] = {}

    def linear(dst: str, src: str) -> None:
        table[f"{src}/weight"], table[f"{src}/bias"] = [f"{dst}.weight"], [f"{dst}.bias"]

    def norm(dst: str, src: str) -> None:
        table[f"{src}/gamma"], table[f"{src}/beta"] = [f"{dst}.weight"], [f"{dst}.bias"]

    def fused(dst: str, src: str, names: list[str]) -> None:
        table[f"{src}/weight"] = [f"{dst}.{n}.weight" for n in names]
        table[f"{src}/bias"] = [None if n == "k_proj" else f"{dst}.{n}.bias" for n in names]

    for side in ("encoder", "decoder"):
        layers = config.encoder_layers if side == "encoder" else config.decoder_layers
        table[f"{side}/position_encodings/encodings"] = [f"model.{side}.embed_positions.weight"]
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        for i in range(layers):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            fused(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            if side == "decoder":
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                fused(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ["k_proj", "v_proj"])
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    table["decoder/embeddings/weight"] = ["model.decoder.embed_tokens.weight"]
    return table


def _state_dict(arrays: dict[str, np.ndarray], config) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, parts in _layout(config).items():
        if name not in arrays:
            continue  # a linear stored without bias
        tensor = torch.from_numpy(np.array(arrays[name], dtype=np.float32))
        for part, piece in zip(parts, tensor.chunk(len(parts))):
            if part is not None:
                out[part] = piece
    out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]
    return out


def export_ctranslate2(model, source: str | Path, out_dir: str | Path) -> Path:
    """Write ``model`` (a Whisper, adapters merged into its weights) as a CTranslate2 model
    that ``ctranslate2`` and faster-whisper load: ``source``'s model.bin with every weight replaced,
    stored in its dtypes, beside copies of its tokenizer and config files."""
    import shutil

    from ..adapters.site import AdapterSite, base_state_dict

    source, out_dir = Path(source), Path(out_dir)
    live = {name for module in model.modules() if isinstance(module, AdapterSite)
            for name in module.active if name not in module.merged}
    if live:
        raise UserError(f"adapters {sorted(live)} are not merged into the weights: merge them first")
    state = base_state_dict(model)
    stored = read_model_file(source / "model.bin")
    variables = dict(stored.variables)
    for name, parts in _layout(model.config).items():
        if name not in variables:
            continue
        rows = [state[p].detach().float().cpu() if p is not None else None for p in parts]
        like = next(r for r in rows if r is not None)
        merged = torch.cat([r if r is not None else torch.zeros_like(like) for r in rows]).numpy()
        if merged.shape != variables[name].shape:
            raise CTranslate2FormatError(f"{name}: the model holds {merged.shape}, {source} stores {variables[name].shape}")
        variables[name] = merged.astype(variables[name].dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    for extra in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json"):
        if (source / extra).is_file():
            shutil.copyfile(source / extra, out_dir / extra)
    return write_model_file(out_dir / "model.bin", ModelFile(stored.revision, variables, stored.aliases))


def load_ctranslate2_whisper(directory: str | Path) -> tuple[WhisperForConditionalGeneration, object, dict]:
    """``(Whisper, tokenizer, extra)`` from a CTranslate2 Whisper directory.

    ``extra`` is the directory's ``config.json`` (suppressed token ids, alignment heads). The converted
    float32 weights are kept in the cache (safetensors, keyed by the file's size and time) on first use.
    """
    from tokenizers import Tokenizer

    directory = Path(directory)
    for name in ("model.bin", "tokenizer.json"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a CTranslate2 Whisper model: {name} is missing")
    state, config_dict = _converted(directory / "model.bin")
    config = dataclasses.replace(WhisperConfig.from_dict(config_dict), name_or_path=str(directory))
    extra = json.loads((directory / "config.json").read_text()) if (directory / "config.json").is_file() else {}
    try:
        model = build_whisper(config, state)
    except ValueError as err:
        raise CTranslate2FormatError(f"{directory}: {err}") from None
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    return model, tokenizer, extra


def _converted(model_bin: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict (published names) and config of ``model_bin``, from the cache when it was converted before."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ..weights import cache_dir

    stat = model_bin.stat()
    cached = cache_dir() / "ctranslate2" / f"{model_bin.parent.name}-{stat.st_size}-{stat.st_mtime_ns}.safetensors"
    if cached.is_file():
        try:
            with safe_open(str(cached), framework="pt") as handle:
                return {k: handle.get_tensor(k) for k in handle.keys()}, json.loads(handle.metadata()["config"])
        except Exception:  # noqa: BLE001 - a damaged cache entry is rebuilt, never trusted
            pass
    arrays = read_model_bin(model_bin)
    config = whisper_config_from_arrays(arrays)
    state = _state_dict(arrays, config)
    stored = {k: v.contiguous() for k, v in state.items() if k != "proj_out.weight"}  # tied to the embeddings
    atomic_write(cached, lambda tmp: save_file(stored, tmp, metadata={"config": json.dumps(config.to_dict())}))
    return state, config.to_dict()
