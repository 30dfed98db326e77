"""Whisper with a trained adapter (LoRA by default) or fully fine-tuned weights, decoded autoregressively.

Export: ``adapter/`` (adapter core format, also usable alone: ``speech-peft transcribe --adapter
EXPORT/adapter``), or after full fine-tuning the whole model's weights (``model.safetensors``), and
``export.json``. ``WhisperAR.load`` and ``speech-peft transcribe --model EXPORT`` read it.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Callable

from torch import Tensor, nn

from ..adapters import FULL_FINETUNE, attach_adapter, finalize_adapter, load_adapter, save_adapter
from ..asr.hypothesis import Hypothesis
from ..asr.whisper_ar import WhisperTranscriber
from ..encoders.whisper import load_whisper
from ..errors import UserError
from ..exports import read_export_info, write_export_info
from ..tensor_files import load_tensors, save_tensors
from .registry import register_model

EXPORT_KIND = "whisper_ar"
FULL_WEIGHTS = "model.safetensors"
DEFAULT_ADAPTER = {"method": "lora", "r": 8, "target_roles": ["attn.q", "attn.v"]}


class WhisperAR(nn.Module):
    """``model``: the Whisper carrying the adapter; ``transcriber``: its decoding (greedy with Whisper's
    fallback, or beam search)."""

    transcribe_options = frozenset({"beam_size", "compute_type", "language"})

    def __init__(self, model_name: str = "whisper-tiny.en", adapter: dict | None = None,
                 adapter_dir: str | None = None, language: str = "en") -> None:
        """``adapter``: a method's config (``{"method": "full"}``: every weight trains); ``adapter_dir``: a saved
        adapter to place instead; ``language``: the prompt's language where an utterance names none
        (``auto``: detected)."""
        super().__init__()
        bundle = load_whisper(model_name)
        self.model_name, self.language = model_name, language
        self.model = copy.deepcopy(bundle.model)
        self.full_finetune = (adapter or {}).get("method") == FULL_FINETUNE
        self.report = load_adapter(self.model, adapter_dir) if adapter_dir else \
            attach_adapter(self.model, adapter or DEFAULT_ADAPTER)
        if not any(p.requires_grad for p in self.model.parameters()):
            raise UserError(f"adapter {(adapter or DEFAULT_ADAPTER).get('method')!r} trains nothing in Whisper: a linear "
                             "probe trains a classifier's head (task=classification); choose a method that adapts "
                             "the model (lora, parallel, ...)")
        self.transcriber = WhisperTranscriber(dataclasses.replace(bundle, model=self.model), language=language)
        self.tokenizer = bundle.tokenizer

    def transcribe(self, waveforms: Tensor, lengths: Tensor | None = None, beam_size: int = 1) -> list[str]:
        return self.transcriber.transcribe(waveforms, beam_size)

    def decoding(self, beam_size: int = 1, compute_type: str = "float32", language: str | None = None
                ) -> Callable[..., list[Hypothesis]]:
        """(waves, lengths, row adapters, row languages) -> scored hypotheses, for ``jobs.transcribe``."""
        transcriber = self.transcriber
        if compute_type != "float32" or language not in (None, transcriber.language):
            transcriber = WhisperTranscriber(transcriber.bundle, compute_type=compute_type,
                                             language=language or transcriber.language)
        return lambda w, n, _, languages=None: transcriber.decode(w, beam_size, languages=languages)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        if self.full_finetune:
            state = dict(self.model.state_dict())
            state.pop("proj_out.weight", None)  # tied to the token embedding
            save_tensors(directory / FULL_WEIGHTS, state)
        else:
            finalize_adapter(self.model, "default")  # e.g. MoSA's sub-adapters become the one they sum to
            save_adapter(self.model, directory / "adapter", base_model_name=self.model_name)
        write_export_info(directory, EXPORT_KIND, {"model_name": self.model_name, "full_finetune": self.full_finetune,
                                                   "language": self.language})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "WhisperAR":
        config = read_export_info(directory, EXPORT_KIND)["config"]
        language = config.get("language", "en")
        if not config.get("full_finetune"):
            return cls(config["model_name"], adapter_dir=str(Path(directory) / "adapter"), language=language).eval()
        module = cls(config["model_name"], adapter={"method": FULL_FINETUNE}, language=language)
        missing, unexpected = module.model.load_state_dict(load_tensors(Path(directory) / FULL_WEIGHTS), strict=False)
        if unexpected or set(missing) - {"proj_out.weight"}:
            raise UserError(f"{directory}: {FULL_WEIGHTS} does not match {config['model_name']} "
                             f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
        for p in module.model.parameters():
            p.requires_grad_(False)
        return module.eval()


register_model(EXPORT_KIND, WhisperAR.load)
