"""Block layouts: where the parts of one transformer block live, named by role.

An adapter that targets a role ("attn.q", "ffn", "block") is placed through the layout of the block
that holds it, so the same config works on Whisper, AST, the Conformer and our own decoder blocks.

A *sublayer* role names two modules: the one whose output is the sublayer's input (its pre-norm)
and the one whose output is the sublayer's result before the residual addition. Parallel adapters
read the first and write the second; series adapters read and write the second.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from ..errors import UserError


@dataclass(frozen=True)
class Sublayer:
    write: str
    read: str | None  # None: the written module's own input


@dataclass(frozen=True)
class BlockLayout:
    linears: dict[str, str]
    sublayers: dict[str, Sublayer]
    # Names of the attention's frozen q/k/v/o linears and head count, for prompt and prefix tuning.
    attention: dict[str, str] = field(default_factory=dict)
    num_heads_attr: str | None = None
    # Roles whose tensors run (time, batch, features): adapters see them batch-first all the same.
    time_first_roles: tuple[str, ...] = ()

    def num_heads(self, block: nn.Module) -> int:
        if self.num_heads_attr is None:
            raise UserError(f"the layout of {type(block).__name__} does not name its head count")
        return int(_get(block, self.num_heads_attr))


def _get(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _pre_norm_transformer(attention: str, projections: tuple[str, str, str, str], mlp: tuple[str, str],
                          norms: tuple[str, str], num_heads_attr: str) -> BlockLayout:
    """The layout of a pre-norm transformer block: ``attention`` (the module holding the q, k, v, o
    ``projections``), the two linears of its ``mlp``, and the ``norms`` read before each sublayer."""
    q, k, v, o = (f"{attention}.{name}" for name in projections)
    return BlockLayout(
        linears={"attn.q": q, "attn.k": k, "attn.v": v, "attn.o": o, "ffn.up": mlp[0], "ffn.down": mlp[1]},
        sublayers={"attn": Sublayer(write=o, read=norms[0]), "ffn": Sublayer(write=mlp[1], read=norms[1]),
                   "block": Sublayer(write="", read=None)},
        attention={"q": q, "k": k, "v": v, "o": o},
        num_heads_attr=num_heads_attr,
    )


_WHISPER = _pre_norm_transformer("self_attn", ("q_proj", "k_proj", "v_proj", "out_proj"), ("fc1", "fc2"),
                                 ("self_attn_layer_norm", "final_layer_norm"), "self_attn.num_heads")

_WHISPER_DECODER = BlockLayout(
    linears={**_WHISPER.linears, "xattn.q": "encoder_attn.q_proj", "xattn.k": "encoder_attn.k_proj",
             "xattn.v": "encoder_attn.v_proj", "xattn.o": "encoder_attn.out_proj"},
    sublayers={**_WHISPER.sublayers,
               "xattn": Sublayer(write="encoder_attn.out_proj", read="encoder_attn_layer_norm")},
    attention=_WHISPER.attention,
    num_heads_attr="self_attn.num_heads",
)

_AST = _pre_norm_transformer("attention", ("q_proj", "k_proj", "v_proj", "o_proj"), ("mlp.fc1", "mlp.fc2"),
                             ("layernorm_before", "layernorm_after"), "attention.num_attention_heads")

# torchaudio's ConformerLayer: macaron feed-forwards (ffn1, ffn2), fused-qkv MultiheadAttention, conv module.
_CONFORMER = BlockLayout(
    linears={"ffn.up": "ffn2.sequential.1", "ffn.down": "ffn2.sequential.4",
             "ffn1.up": "ffn1.sequential.1", "ffn1.down": "ffn1.sequential.4"},
    sublayers={"attn": Sublayer(write="self_attn", read="self_attn_layer_norm"),
               "ffn": Sublayer(write="ffn2.sequential.4", read="ffn2.sequential.0"),
               "ffn1": Sublayer(write="ffn1.sequential.4", read="ffn1.sequential.0"),
               "conv": Sublayer(write="conv_module", read=None),
               "block": Sublayer(write="", read=None)},
    # The layer runs time-first; only its convolution module is handed batch-first tensors.
    time_first_roles=("ffn.up", "ffn.down", "ffn1.up", "ffn1.down", "attn", "ffn", "ffn1", "block"),
)

LAYOUTS: dict[str, BlockLayout] = {
    "WhisperEncoderLayer": _WHISPER,
    "WhisperDecoderLayer": _WHISPER_DECODER,
    "ASTLayer": _AST,
    "ConformerLayer": _CONFORMER,
}


def register_layout(block_class_name: str, layout: BlockLayout) -> None:
    """Teach role targeting a new block type (e.g. a user's own transformer layer)."""
    LAYOUTS[block_class_name] = layout


def layout_of(block: nn.Module) -> BlockLayout | None:
    return LAYOUTS.get(type(block).__name__)


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    return root if path == "" else root.get_submodule(path)
