"""Callbacks the trainer config group ``callbacks`` names (``conf/callbacks/*.yaml``)."""
from __future__ import annotations

import time

import lightning as L


class EpochTimer(L.Callback):
    """Seconds per training epoch (``times``), logged as ``epoch_time_s``; ``speech-peft fit`` stores them
    (those before a resume too: the times travel in the checkpoint)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._start)
        module.log("epoch_time_s", self.times[-1])

    def state_dict(self) -> dict:  # kept in checkpoints, so a resumed fit reports every epoch's time
        return {"times": list(self.times)}

    def load_state_dict(self, state: dict) -> None:
        self.times = list(state.get("times", []))
