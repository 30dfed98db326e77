"""Callbacks the trainer config group ``callbacks`` names (``conf/callbacks/*.yaml``)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L

from ..errors import UserError
from ..fileio import write_json
from .common import load_checkpoint_weights
from .sharding import is_sharded


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

    def __init__(self, seed: int | None = 0) -> None:
        """``seed``: None takes the seed the run was given (``seed_everything``, as Lightning's CLI does)."""
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        from ..data.dataset import training_epoch

        seed = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        L.seed_everything(seed * 1_000_003 + training_epoch(trainer), workers=True, verbose=False)


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


class FitReport(L.Callback):
    """When a fit ends, on the first process: the best checkpoint's weights are exported to
    ``exp_dir/export`` (what ``from_export`` reads) and ``fit_result.json`` is written beside it (``result``).
    ``speech-peft fit`` and ``speech-peft lightning fit`` both run it, so both front ends leave the same
    folder behind."""

    def __init__(self, exp_dir: str | None = None) -> None:
        """``exp_dir``: None writes into the trainer's ``default_root_dir``."""
        self.exp_dir = Path(exp_dir) if exp_dir is not None else None
        self.result: dict = {}

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:  # data-parallel: the first process exports and reports
            return
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or not checkpoint.best_model_path:
            raise UserError("the fit kept no checkpoint to export: keep a ModelCheckpoint callback")
        if is_sharded(module):  # strategy=fsdp: this process holds slices; export from a whole copy
            module = type(module)(**module.init_arguments())
        load_checkpoint_weights(module, checkpoint.best_model_path)
        # Counted before the export, which may turn the adapter into its ordinary form (MoSA, hyper, poly).
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        total = sum(p.numel() for p in module.parameters())
        exp_dir = self.exp_dir or Path(trainer.default_root_dir)
        export = module.export(exp_dir / "export")
        timer = next((c for c in trainer.callbacks if isinstance(c, EpochTimer)), None)
        self.result = {"best_checkpoint": checkpoint.best_model_path,
                       "best_score": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None
                       else None, "monitor": checkpoint.monitor, "trainable_params": trainable,
                       "total_params": total, "epochs": trainer.current_epoch,  # all, also when resumed
                       "epoch_times_s": timer.times if timer else [],
                       "export_bytes": sum(f.stat().st_size for f in Path(export).rglob("*") if f.is_file()),
                       "checkpoint_bytes": Path(checkpoint.best_model_path).stat().st_size}
        write_json(exp_dir / "fit_result.json", self.result)
