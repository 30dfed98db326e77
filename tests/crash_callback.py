"""A callback that kills a fit mid-epoch, as a power cut or an out-of-memory kill would."""
from __future__ import annotations

import lightning as L


class Killed(RuntimeError):
    pass


class KillAt(L.Callback):
    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise Killed(f"killed at epoch {self.epoch}, batch {self.batch}")


