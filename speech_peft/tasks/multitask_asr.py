"""Task-ID-free multi-task ASR (Audio-AdapterFusion): single-task adapters on a frozen Whisper, combined
by a fusion (``adapters/fusion.py``) trained on a task-balanced mixture.

Algorithms: ``two_stage`` trains the combiners alone, the single-task adapters frozen; ``joint`` trains
the combiners together with trainable copies of the adapters (``<task>_joint``), the originals kept
unchanged. Manifest entries carry their ``task``: the predicted-task router learns from it and oracle
routing reads it; the other combiners never see it.

Export: ``adapters/<task>/`` (adapter core format; the joint copies under their task names),
``fusion.safetensors`` (the combiners) and ``export.json``; ``speech-peft transcribe --model EXPORT``
runs it (without task IDs, except an oracle export, which needs them and refuses to run without).
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from ..adapters import adapter_modules, count_parameters, load_adapter, save_adapter
from ..adapters.fusion import (FusionConfig, add_fusion, average_adapters, combiners, fusion_weights, set_mask,
                               set_routing, set_temperature, task_logits, value_regulariser)
from ..asr.hypothesis import Hypothesis
from ..asr.whisper_ar import WhisperTranscriber
from ..data.datamodule import ManifestDataModule
from ..data.dataset import Batch
from ..encoders.whisper import load_whisper
from ..exports import read_export_info, write_export_info
from ..fileio import atomic_write
from .asr import ASRTask, teacher_forced_loss
from .common import keep_frozen_parts_in_eval

EXPORT_KIND = "whisper_adapter_fusion"
ALGORITHMS = ("two_stage", "joint")
SAMPLES_PER_FRAME = 320  # 16 kHz samples per Whisper encoder frame (hop 160, stride-2 convolution)


class WhisperAdapterFusion(ASRTask):
    datamodule: ClassVar[type] = ManifestDataModule

    def __init__(self, adapters: dict[str, str], model_name: str = "whisper-tiny.en", fusion: dict | None = None,
                 algorithm: str = "two_stage", lr: float = 1e-3, weight_decay: float = 0.0,
                 value_regulariser: float = 1e-3, task_loss_weight: float = 1.0,
                 temperature_start: float | None = None) -> None:
        """``adapters``: task name -> a saved single-task adapter (e.g. an AR export's ``adapter/``);
        ``temperature_start``: attention fusion anneals its softmax temperature linearly from this to
        ``fusion.temperature`` over training (None: constant)."""
        super().__init__()
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        if len(adapters) < 2:
            raise ValueError("adapter fusion needs at least two single-task adapters")
        self.save_hyperparameters()
        self.tasks = list(adapters)
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
        self.fusion_config = FusionConfig(**(fusion or {}))
        self.combiner_params = add_fusion(self.model, fused, self.fusion_config)
        if algorithm == "joint":
            for name in fused:
                for module in adapter_modules(self.model, name).values():
                    for p in module.parameters():
                        p.requires_grad_(True)
        self.transcriber = WhisperTranscriber(dataclasses.replace(bundle, model=self.model))

    def train(self, mode: bool = True):
        super().train(mode)
        keep_frozen_parts_in_eval(self.model, mode)
        return self

    def _route(self, lengths: torch.Tensor | None, tasks: list[str | None] | None, batch_size: int) -> None:
        """Tell the fusion which encoder frames are speech (the rest is Whisper's 30 s padding) and, for
        oracle routing, each utterance's task."""
        frames = self.model.config.max_source_positions
        if lengths is None:
            set_mask(self.model, None)
        else:
            real = torch.clamp(torch.ceil(lengths.float() / SAMPLES_PER_FRAME), 1, frames).long()
            set_mask(self.model, torch.arange(frames, device=real.device)[None] < real[:, None])
        if self.fusion_config.kind == "oracle":
            set_routing(self.model, self._one_hot(tasks, batch_size))

    def _one_hot(self, tasks: list[str | None] | None, batch_size: int) -> torch.Tensor:
        """Each utterance's task as a one-hot row (oracle routing; the task router's training target)."""
        if tasks is None or len(tasks) != batch_size or any(t not in self.tasks for t in tasks):
            raise ValueError(f"{self.fusion_config.kind} routing needs each utterance's task (the manifest's "
                             f"'task' field), one of {self.tasks}; got {tasks}")
        return F.one_hot(torch.tensor([self.tasks.index(t) for t in tasks]), len(self.tasks)).float()

    def training_loss(self, batch: Batch) -> torch.Tensor:
        self._route(batch.lengths, batch.tasks, len(batch))
        loss = teacher_forced_loss(self.model, self.transcriber, batch)
        if self.fusion_config.kind == "attention" and self.hparams.value_regulariser:
            loss = loss + self.hparams.value_regulariser * value_regulariser(self.model)
        if self.fusion_config.kind == "task" and self.training:
            target = self._one_hot(batch.tasks, len(batch)).argmax(-1).to(loss.device)
            loss = loss + self.hparams.task_loss_weight * F.cross_entropy(task_logits(self.model), target)
        return loss

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        start = self.hparams.temperature_start
        if start is not None and self.fusion_config.kind == "attention":
            progress = self.global_step / max(1, self.trainer.estimated_stepping_batches)
            set_temperature(self.model, start + (self.fusion_config.temperature - start) * min(1.0, progress))

    def test_transcripts(self, batch: Batch) -> list[str]:
        return self.transcribe(batch.waveforms, batch.lengths, batch.tasks)

    def transcribe(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None,
                   tasks: list[str | None] | None = None, beam_size: int = 1) -> list[str]:
        """Per-utterance routing: a batch may mix tasks (and, for oracle routing, must name them)."""
        return [h.text for h in self.decode(waveforms, lengths, tasks, beam_size)]

    def decode(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None,
               tasks: list[str | None] | None = None, beam_size: int = 1) -> list[Hypothesis]:
        """Scored hypotheses (no-speech probability, average log-probability), routed per utterance."""
        self._route(lengths, tasks, waveforms.shape[0])
        return self.transcriber.decode(waveforms, beam_size)

    def routing_weights(self) -> dict[str, torch.Tensor]:
        """Per layer, the (B, tasks) weights of the last forward (for plots)."""
        return fusion_weights(self.model)

    def trainable_fraction(self) -> float:
        trainable, total = count_parameters(self.model)
        return trainable / total

    def configure_optimizers(self):
        return torch.optim.AdamW(self.adapter_optimizer_groups(self.hparams.lr, self.hparams.weight_decay))

    def export(self, directory: str | Path) -> Path:
        directory = Path(directory)
        for task, name in zip(self.tasks, self.fused):
            save_adapter(self.model, directory / "adapters" / task, name=name,
                         base_model_name=self.hparams.model_name)
        state = {f"{path}.{key}": value.detach().contiguous().cpu()
                 for path, combiner in combiners(self.model).items() for key, value in combiner.state_dict().items()}
        atomic_write(directory / "fusion.safetensors", lambda tmp: save_file(state, tmp))
        write_export_info(directory, EXPORT_KIND, {"model_name": self.hparams.model_name, "tasks": self.tasks,
                                                   "fusion": self.fusion_config.to_dict()})
        return directory

    @classmethod
    def from_export(cls, directory: str | Path, hard: bool | None = None) -> "WhisperAdapterFusion":
        """``hard``: override the export's choice of top-1 routing at inference (router and task kinds)."""
        directory = Path(directory)
        config = read_export_info(directory, EXPORT_KIND)["config"]
        adapters = {task: str(directory / "adapters" / task) for task in config["tasks"]}
        fusion = {**config["fusion"], **({} if hard is None else {"hard": hard})}
        module = cls(adapters, config["model_name"], fusion)
        state = load_file(directory / "fusion.safetensors")
        expected = {f"{path}.{key}": value.shape for path, combiner in combiners(module.model).items()
                    for key, value in combiner.state_dict().items()}
        if {key: value.shape for key, value in state.items()} != expected:
            raise ValueError(f"{directory}: fusion.safetensors does not hold the combiners of the "
                             f"{module.fusion_config.kind} fusion of {config['tasks']} on {config['model_name']}")
        for path, combiner in combiners(module.model).items():
            combiner.load_state_dict({key[len(path) + 1:]: value for key, value in state.items()
                                      if key.startswith(f"{path}.")}, strict=True)
        return module.eval()

