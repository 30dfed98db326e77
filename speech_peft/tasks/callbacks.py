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


class EpochSeed(L.Callback):
    """Seeds Python's, NumPy's and torch's generators from (seed, epoch) when each training epoch starts, so
    that an epoch's random draws (masks, noise, dropout) depend on nothing before it: a fit killed and resumed
    from its last checkpoint trains its remaining epochs exactly as the uninterrupted fit did."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        from ..data.dataset import training_epoch

        L.seed_everything(self.seed * 1_000_003 + training_epoch(trainer), workers=True, verbose=False)


class RankParallelSync(L.Callback):
    """Runs HD-PiSSA and LTE (``adapters/rank_parallel.py``): keeps their rank-local factors out of DDP's
    averaging, gives each process its rank's factors when training starts, and merges the ranks' updates
    every ``merge_every`` steps and before every validation (so checkpoints hold merged weights). Does
    nothing for other adapters."""

    def __init__(self) -> None:
        self._pending = 0
        self._merge_every = 0  # set when training starts; 0: the model has no rank-parallel adapter

    def _layers(self, module: L.LightningModule):
        from ..adapters.rank_parallel import rank_parallel_layers

        return rank_parallel_layers(module)

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.world_size < 2 or not self._layers(module):
            return
        from torch.nn.parallel import DistributedDataParallel

        local = {id(t) for _, layer in self._layers(module) for t in [*layer.parameters(), *layer.buffers()]}
        names = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if id(t) in local]
        # The factors differ by rank by design: DDP must neither average their gradients nor broadcast them.
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        from ..adapters.rank_parallel import assign_ranks

        layers = self._layers(module)
        self._merge_every = layers[0][1].merge_every if layers else 0
        if assign_ranks(module, trainer.global_rank, trainer.world_size):
            module.print(f"rank-parallel LoRA: process {trainer.global_rank} of {trainer.world_size} holds its own factors")

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not self._merge_every:  # every step of every other adapter: no search of the model here
            return
        self._pending += 1
        if self._pending >= self._merge_every:
            self._merge(module)

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and self._pending:
            self._merge(module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._pending:
            self._merge(module)

    def _merge(self, module: L.LightningModule) -> None:
        from ..adapters.rank_parallel import merge_rank_updates

        merge_rank_updates(module)
        self._pending = 0
