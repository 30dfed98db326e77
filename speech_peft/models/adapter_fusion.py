"""Task-ID-free multi-task ASR (Audio-AdapterFusion): single-task adapters on a frozen Whisper, combined per
utterance by a fusion (``adapters/fusion.py``) that reads what the utterance sounds like.

Export: ``adapters/<task>/`` (adapter core format; the joint copies under their task names),
``fusion.safetensors`` (the combiners) and ``export.json``; ``speech-peft transcribe --model EXPORT``
runs it (without task IDs, except an oracle export, which needs them and refuses to run without).
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..adapters import adapter_modules, count_parameters, load_adapter, save_adapter
from ..adapters.fusion import FusionConfig, add_fusion, average_adapters, combiners, fusion_weights, set_mask, set_routing
from ..asr.hypothesis import Hypothesis
from ..asr.whisper_ar import WhisperTranscriber
from ..encoders.whisper import load_whisper
from ..errors import UserError, dataclass_options
from ..exports import read_export_info, write_export_info
from ..tensor_files import load_tensors, save_tensors
from .registry import register_model

EXPORT_KIND = "whisper_adapter_fusion"
ALGORITHMS = ("two_stage", "joint")
SAMPLES_PER_FRAME = 320  # 16 kHz samples per Whisper encoder frame (hop 160, stride-2 convolution)


class AdapterFusionASR(nn.Module):
    """``algorithm``: ``two_stage`` fuses the single-task adapters as they are; ``joint`` fuses trainable
    copies of them (``<task>_joint``), the originals kept unchanged."""

    transcribe_options = frozenset({"beam_size", "compute_type"})

    def __init__(self, adapters: dict[str, str], model_name: str = "whisper-tiny.en", fusion: dict | None = None,
                 algorithm: str = "two_stage") -> None:
        """``adapters``: task name -> a saved single-task adapter (e.g. an AR export's ``adapter/``)."""
        super().__init__()
        if algorithm not in ALGORITHMS:
            raise UserError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        if len(adapters) < 2:
            raise UserError("adapter fusion needs at least two single-task adapters")
        self.tasks, self.model_name = list(adapters), model_name
        bundle = load_whisper(model_name)
        self.model = copy.deepcopy(bundle.model)
        for task, directory in adapters.items():
            load_adapter(self.model, directory, name=task)
        fused = self.tasks
        if algorithm == "joint":  # trainable copies; the single-task adapters themselves stay as they are
            fused = [f"{task}_joint" for task in self.tasks]
            for task, copy_name in zip(self.tasks, fused):
                average_adapters(self.model, [task], copy_name)
        self.fused = fused
        self.fusion_config = dataclass_options(FusionConfig, fusion or {}, "fusion")
        self.combiner_params = add_fusion(self.model, fused, self.fusion_config)
        if algorithm == "joint":
            for name in fused:
                for module in adapter_modules(self.model, name).values():
                    for p in module.parameters():
                        p.requires_grad_(True)
        self.transcriber = WhisperTranscriber(dataclasses.replace(bundle, model=self.model))

    def route(self, lengths: Tensor | None, tasks: list[str | None] | None, batch_size: int) -> None:
        """Tell the fusion which encoder frames are speech (the rest is Whisper's 30 s padding) and, for
        oracle routing, each utterance's task."""
        frames = self.model.config.max_source_positions
        if lengths is None:
            set_mask(self.model, None)
        else:
            real = torch.clamp(torch.ceil(lengths.float() / SAMPLES_PER_FRAME), 1, frames).long()
            set_mask(self.model, torch.arange(frames, device=real.device)[None] < real[:, None])
        if self.fusion_config.kind == "oracle":
            set_routing(self.model, self.one_hot(tasks, batch_size))

    def one_hot(self, tasks: list[str | None] | None, batch_size: int) -> Tensor:
        """Each utterance's task as a one-hot row (oracle routing; the task router's training target)."""
        if tasks is None or len(tasks) != batch_size or any(t not in self.tasks for t in tasks):
            raise UserError(f"{self.fusion_config.kind} routing needs each utterance's task (the manifest's "
                             f"'task' field), one of {self.tasks}; got {tasks}")
        return F.one_hot(torch.tensor([self.tasks.index(t) for t in tasks]), len(self.tasks)).float()

    def transcribe(self, waveforms: Tensor, lengths: Tensor | None = None,
                   tasks: list[str | None] | None = None, beam_size: int = 1) -> list[str]:
        """Per-utterance routing: a batch may mix tasks (and, for oracle routing, must name them)."""
        return [h.text for h in self.decode(waveforms, lengths, tasks, beam_size)]

    def decode(self, waveforms: Tensor, lengths: Tensor | None = None,
               tasks: list[str | None] | None = None, beam_size: int = 1) -> list[Hypothesis]:
        """Scored hypotheses (no-speech probability, average log-probability), routed per utterance."""
        self.route(lengths, tasks, waveforms.shape[0])
        return self.transcriber.decode(waveforms, beam_size)

    def decoding(self, beam_size: int = 1, compute_type: str = "float32") -> Callable[..., list[Hypothesis]]:
        """(waves, lengths, ...) -> scored hypotheses, for ``jobs.transcribe``."""
        if compute_type != self.transcriber.compute_type:
            self.transcriber = WhisperTranscriber(self.transcriber.bundle, compute_type=compute_type)
        return lambda w, n, *_: self.decode(w, n, beam_size=beam_size)

    def routing_weights(self) -> dict[str, Tensor]:
        """Per layer, the (B, tasks) weights of the last forward (for plots)."""
        return fusion_weights(self.model)

    def trainable_fraction(self) -> float:
        trainable, total = count_parameters(self.model)
        return trainable / total

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        for task, name in zip(self.tasks, self.fused):
            save_adapter(self.model, directory / "adapters" / task, name=name, base_model_name=self.model_name)
        state = {f"{path}.{key}": value
                 for path, combiner in combiners(self.model).items() for key, value in combiner.state_dict().items()}
        save_tensors(directory / "fusion.safetensors", state)
        write_export_info(directory, EXPORT_KIND, {"model_name": self.model_name, "tasks": self.tasks,
                                                   "fusion": self.fusion_config.to_dict()})
        return directory

    @classmethod
    def load(cls, directory: str | Path, hard: bool | None = None) -> "AdapterFusionASR":
        """``hard``: override the export's choice of top-1 routing at inference (router and task kinds)."""
        directory = Path(directory)
        config = read_export_info(directory, EXPORT_KIND)["config"]
        adapters = {task: str(directory / "adapters" / task) for task in config["tasks"]}
        fusion = {**config["fusion"], **({} if hard is None else {"hard": hard})}
        module = cls(adapters, config["model_name"], fusion)
        state = load_tensors(directory / "fusion.safetensors")
        expected = {f"{path}.{key}": value.shape for path, combiner in combiners(module.model).items()
                    for key, value in combiner.state_dict().items()}
        if {key: value.shape for key, value in state.items()} != expected:
            raise UserError(f"{directory}: fusion.safetensors does not hold the combiners of the "
                             f"{module.fusion_config.kind} fusion of {config['tasks']} on {config['model_name']}")
        for path, combiner in combiners(module.model).items():
            combiner.load_state_dict({key[len(path) + 1:]: value for key, value in state.items()
                                      if key.startswith(f"{path}.")}, strict=True)
        return module.eval()


register_model(EXPORT_KIND, AdapterFusionASR.load)
