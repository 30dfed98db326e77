"""Diffusion-decoded ASR (Whisfusion): frozen Whisper encoder -> cross-attention adapters -> a masked-diffusion
text decoder initialised from Whisper's decoder, beside it an optional character CTC head on the encoder
whose hypothesis gives a Mask-CTC starting canvas (``decoders/mask_ctc.py``).

With ``decoder_lora`` the decoder is Whisper's own, frozen whole: its blocks (causal mask lifted) and its
cross-attention (the cross-attention adapters, started from it and frozen) stay as Whisper trained them,
and LoRA on the blocks' linears is what trains, a few percent of the parameters.

Export: ``xattn/`` (the adapters, adapter core format; none with ``decoder_lora``, whose cross-attention is
rebuilt from Whisper), ``decoder.safetensors`` after stage 2, ``decoder_lora/`` with ``decoder_lora``,
``ctc.safetensors`` with a CTC head, ``encoder_adapter/`` with an encoder adapter folded into the frozen
encoder, ``lexicon.txt`` (the training words) and ``export.json``;
``DiffusionASRModel.load`` and ``speech-peft transcribe --model EXPORT`` read it. Training is
``tasks/diffusion_asr.py``.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from ..adapters import (
    CrossAttentionConfig,
    LoRAConfig,
    add_adapter,
    base_state_dict,
    load_adapter,
    save_adapter,
    set_active_adapters,
    set_trainable_adapters,
    sites,
)
from ..asr.hypothesis import Hypothesis
from ..decoders import (
    Candidates,
    DecodeOptions,
    canvas_lengths,
    choose,
    diffusion_decode,
    from_whisper,
    load_decoder_weights,
)
from ..decoders.ctc import CTCHead, CTCHeadConfig
from ..decoders.mask_ctc import candidate_texts, ctc_canvas, ctc_hypotheses, ctc_spellings
from ..encoders.whisper import SAMPLE_RATE, load_whisper, load_whisper_encoder
from ..errors import UserError
from ..exports import read_export_info, write_export_info
from ..fileio import write_text
from ..tensor_files import load_tensors, save_tensors
from .registry import register_model

EXPORT_KIND = "diffusion_asr"
LEXICON = "lexicon.txt"
ENCODER_ADAPTER = "encoder_adapter"  # the folded encoder adapter, as it was saved on the whole Whisper


class DiffusionASRModel(nn.Module):
    """``stage`` 1: adapters trained on the frozen Whisper decoder's weights; 2: the decoder trained too.
    ``decode``: the decoding options it transcribes with (``DecodeOptions``' fields); ``tokens_per_second``:
    the canvas follows the audio's length (None: the fixed maximum); ``ctc``: a CTC head's config (None:
    none); ``decoder_lora``: a ``LoRAConfig``'s fields for LoRA on the frozen Whisper decoder (stage 1 only;
    None: the cross-attention adapters train instead); ``encoder_adapter``: an adapter saved on the whole
    Whisper (an AR + LoRA export's ``adapter/``) whose encoder part is folded into the frozen encoder, so the
    decoder and the CTC head read the states it adapted (it never trains here; None: Whisper's own)."""

    transcribe_options = frozenset({"decode"})

    def __init__(self, encoder_name: str = "whisper-tiny.en", stage: int = 1, max_length: int = 256,
                 xattn_heads: int | None = None, init_from: str | None = None, decode: dict | None = None,
                 tokens_per_second: float | None = None, xattn_init: str = "whisper", shift: bool = False,
                 ctc: dict | None = None, gap_rate: float = 0.0, decoder_lora: dict | None = None,
                 encoder_adapter: str | None = None) -> None:
        super().__init__()
        if xattn_init not in ("whisper", "random"):
            raise UserError(f"xattn_init must be 'whisper' or 'random', not {xattn_init!r}")
        if decoder_lora is not None and (stage != 1 or xattn_init != "whisper"):
            raise UserError("decoder_lora adapts Whisper's own decoder, frozen with its own cross-attention: it needs "
                            f"stage 1 and xattn_init 'whisper' (not stage {stage}, xattn_init {xattn_init!r})")
        if decoder_lora is not None and init_from is not None and (Path(init_from) / "xattn").is_dir():
            raise UserError(f"init_from {init_from} holds trained cross-attention adapters (xattn/), which decoder_lora "
                            "would ignore (it keeps Whisper's own): give an export trained with decoder_lora, or none")
        bundle = load_whisper(encoder_name)
        if bundle.tokenizer is None:
            raise UserError(f"{encoder_name}: a diffusion decoder needs the model's tokenizer.json")
        self.encoder_name, self.stage, self.max_length, self.xattn_heads = encoder_name, stage, max_length, xattn_heads
        self.decode_options, self.tokens_per_second, self.shift, self.gap_rate = decode, tokens_per_second, shift, gap_rate
        self.decoder_lora = dict(decoder_lora) if decoder_lora is not None else None
        self.encoder_adapter = encoder_adapter
        self.tokenizer = bundle.tokenizer
        self.encoder = load_whisper_encoder(encoder_name, merged_adapter=encoder_adapter)
        self.decoder = from_whisper(bundle.model, max_length, shift=shift)
        self.ctc = CTCHead(CTCHeadConfig(**{**ctc, "input_dim": self.encoder.dim})) if ctc else None
        if init_from is None or self.decoder_lora is not None:  # heads: the Whisper decoder's own unless given
            heads = xattn_heads or bundle.model.config.decoder_attention_heads
            self.report = add_adapter(self.decoder, CrossAttentionConfig(memory_dim=self.encoder.dim,
                                                                         num_heads=heads), name="xattn")
            if xattn_init == "whisper":
                init_from_whisper_cross_attention(self.decoder, bundle.model)
        if self.decoder_lora is not None:  # Whisper's decoder and cross-attention frozen; LoRA trains
            lora_dir = Path(init_from) / "decoder_lora" if init_from is not None else None
            if lora_dir is not None and lora_dir.is_dir():
                load_adapter(self.decoder, lora_dir, name="decoder_lora")
            else:
                add_adapter(self.decoder, LoRAConfig(**self.decoder_lora), name="decoder_lora")
            set_active_adapters(self.decoder, ["xattn", "decoder_lora"])
            set_trainable_adapters(self.decoder, ["decoder_lora"])
        elif init_from is not None:  # an export: its decoder weights where it has them (stage 2), then its adapters
            if (Path(init_from) / "decoder.safetensors").exists():
                load_decoder_weights(self.decoder, load_tensors(Path(init_from) / "decoder.safetensors"))
            self.report = load_adapter(self.decoder, Path(init_from) / "xattn", name="xattn")
        if init_from is not None and self.ctc is not None and (Path(init_from) / "ctc.safetensors").exists():
            self.ctc.load_state_dict(load_tensors(Path(init_from) / "ctc.safetensors"), strict=True)
        # Every word of the training transcripts; exported, so that Mask-CTC can re-decode a CTC word
        # that was never seen in training (most often a misspelling: "seve", "thre").
        self.lexicon: set[str] = set()
        if init_from is not None and (Path(init_from) / LEXICON).is_file():
            self.lexicon = set((Path(init_from) / LEXICON).read_text(encoding="utf-8").split())

    def canvas(self, lengths: Tensor) -> Tensor | None:
        """Each utterance's canvas length from its samples, or None for the fixed maximum."""
        if self.tokens_per_second is None:
            return None
        config = self.decoder.config
        return canvas_lengths(lengths.cpu() / SAMPLE_RATE, self.tokens_per_second, config.max_length, len(config.prefix))

    def options(self, options: DecodeOptions | None = None) -> DecodeOptions:
        return options or DecodeOptions(**(self.decode_options or {}))

    @torch.no_grad()
    def decode_candidates(self, waves: Tensor, lengths: Tensor, options: DecodeOptions | None = None
                          ) -> list[Candidates]:
        """Encode, then decode K candidates per utterance on its canvas."""
        out = self.encoder(waves, lengths)
        return self.decode_states(out.hidden, out.mask, lengths, options)

    @torch.no_grad()
    def decode_states(self, hidden: Tensor, mask: Tensor, lengths: Tensor, options: DecodeOptions | None = None
                      ) -> list[Candidates]:
        """Decode K candidates per utterance from its encoder states (``lengths``: its samples)."""
        options = self.options(options)
        if options.init == "ctc":
            hypotheses = self.ctc_hypotheses(hidden, mask, options.mask_unknown_words)
            start, canvas, words = ctc_canvas(hypotheses, self.decoder.config, options.ctc_threshold)
            decoded = diffusion_decode(self.decoder, hidden, mask, options, canvas, start)
            for candidates, row, hypothesis in zip(decoded, words, hypotheses):
                candidates.words = row.expand(options.candidates, -1)
                candidates.spellings = ctc_spellings(hypothesis, self.tokenizer)
            return decoded
        return diffusion_decode(self.decoder, hidden, mask, options, self.canvas(lengths))

    def ctc_hypotheses(self, hidden: Tensor, mask: Tensor, mask_unknown_words: bool = False
                       ) -> list[tuple[list[int], list[float], list[int]]]:
        """``decoders.mask_ctc.ctc_hypotheses`` with this model's head, tokenizer and (``mask_unknown_words``)
        training lexicon."""
        if mask_unknown_words and not self.lexicon:
            raise UserError("mask_unknown_words needs the training lexicon (lexicon.txt in the export)")
        if self.ctc is None:
            raise UserError("decode.init='ctc' needs a model trained with a CTC head (ctc_weight > 0)")
        return ctc_hypotheses(self.ctc, self.tokenizer, hidden, mask, self.lexicon if mask_unknown_words else None)

    def candidate_texts(self, candidates: Candidates) -> list[str]:
        # Trained with gaps: PAD may sit inside the text.
        return candidate_texts(candidates, self.decoder.config, self.tokenizer, self.gap_rate > 0)

    def chosen_texts(self, decoded: list[Candidates], options: DecodeOptions | None = None) -> list[str]:
        """Each utterance's transcript: its candidates combined by the decoding rule."""
        rule = self.options(options).rule
        return [" ".join(choose(candidates, [t.split() for t in self.candidate_texts(candidates)], rule).words)
                for candidates in decoded]

    @torch.no_grad()
    def transcribe(self, waves: Tensor, lengths: Tensor, options: DecodeOptions | None = None) -> list[str]:
        return self.chosen_texts(self.decode_candidates(waves, lengths, options), options)

    def decoding(self, decode: dict | None = None) -> Callable[..., list[Hypothesis]]:
        """(waves, lengths, ...) -> hypotheses, for ``jobs.transcribe``; ``decode`` overrides the trained
        decoding options."""
        options = DecodeOptions(**{**(self.decode_options or {}), **(decode or {})})
        return lambda w, n, *_: [Hypothesis(t) for t in self.transcribe(w, n, options)]

    def save(self, directory: str | Path) -> Path:
        """``xattn/`` (or ``decoder_lora/``), ``decoder.safetensors`` after stage 2, ``ctc.safetensors`` with a CTC
        head, ``lexicon.txt`` and ``export.json``."""
        directory = Path(directory)
        if self.decoder_lora is not None:  # the cross-attention is Whisper's own, rebuilt at load
            save_adapter(self.decoder, directory / "decoder_lora", name="decoder_lora", base_model_name=self.encoder_name)
        else:
            save_adapter(self.decoder, directory / "xattn", name="xattn", base_model_name=self.encoder_name)
        if self.stage == 2:
            save_tensors(directory / "decoder.safetensors", base_state_dict(self.decoder))
        if self.ctc is not None:
            save_tensors(directory / "ctc.safetensors", self.ctc.state_dict())
        saved_at = directory / ENCODER_ADAPTER
        if self.encoder_adapter is not None and Path(self.encoder_adapter).resolve() != saved_at.resolve():
            shutil.copytree(self.encoder_adapter, saved_at, dirs_exist_ok=True)
        if self.lexicon:
            write_text(directory / LEXICON, "".join(f"{word}\n" for word in sorted(self.lexicon)))
        write_export_info(directory, EXPORT_KIND, {
            "encoder_name": self.encoder_name, "max_length": self.max_length, "xattn_heads": self.xattn_heads,
            "tokens_per_second": self.tokens_per_second, "stage": self.stage, "shift": self.shift,
            "ctc": None if self.ctc is None else self.ctc.config.to_dict(), "decode": _plain(self.decode_options),
            "gap_rate": self.gap_rate, "decoder_lora": self.decoder_lora,
            "encoder_adapter": self.encoder_adapter is not None})
        return directory

    @staticmethod
    def export_arguments(directory: str | Path) -> dict:
        """The constructor's arguments that rebuild an export (its weights read from ``init_from``)."""
        config = read_export_info(directory, EXPORT_KIND)["config"]
        return {"encoder_name": config["encoder_name"], "stage": config["stage"], "max_length": config["max_length"],
                "xattn_heads": config["xattn_heads"], "init_from": str(directory), "decode": config.get("decode"),
                "tokens_per_second": config.get("tokens_per_second"), "shift": config.get("shift", False),
                "gap_rate": config.get("gap_rate", 0.0), "ctc": config.get("ctc"),
                "decoder_lora": config.get("decoder_lora"),
                "encoder_adapter": str(Path(directory) / ENCODER_ADAPTER) if config.get("encoder_adapter") else None}

    @classmethod
    def load(cls, directory: str | Path) -> "DiffusionASRModel":
        return DiffusionASRModel(**cls.export_arguments(directory)).eval()


def _plain(options) -> dict | None:
    """Decoding options as plain JSON values (a Hydra config's DictConfig as a dict)."""
    return None if options is None else OmegaConf.to_container(OmegaConf.create(dict(options)))


def init_from_whisper_cross_attention(decoder: nn.Module, whisper: nn.Module) -> None:
    """Start each block's cross-attention adapter from the same Whisper decoder layer's own
    cross-attention (its norm, q/k/v/out projections; k has no bias) with the gate open
    (tanh(3) = 0.995): the decoder then begins already knowing how to look at Whisper's audio
    states, instead of learning that from a random start."""
    source, heads = whisper.model.decoder.layers, whisper.config.decoder_attention_heads
    for name, site in sites(decoder).items():
        adapter, layer = site.adapters["xattn"], source[int(name.split(".")[1])]
        if adapter.attn.num_heads != heads:
            raise UserError(f"xattn_heads must match the Whisper decoder's {heads} heads to start from its "
                             "cross-attention (or use xattn_init='random')")
        attn = layer.encoder_attn
        with torch.no_grad():
            adapter.norm.load_state_dict(layer.encoder_attn_layer_norm.state_dict())
            adapter.attn.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
            adapter.attn.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, torch.zeros_like(attn.q_proj.bias),
                                                       attn.v_proj.bias]))
            adapter.attn.out_proj.load_state_dict(attn.out_proj.state_dict())
            adapter.gate.fill_(3.0)


register_model(EXPORT_KIND, DiffusionASRModel.load)
