"""Lightning's own CLI over the same tasks and data modules: ``speech-peft lightning fit --config run.yaml``.

The classes are the ones ``conf/task`` and ``conf/data`` name by ``_target_`` (that folder is the task
registry), so ``--model AudioClassifier`` and ``--data ManifestDataModule`` resolve by their short
names; ``--print_config`` writes a complete YAML to start from.
"""
from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from hydra.utils import get_class
from omegaconf import OmegaConf

from .train import CONF_DIR

GROUPS = ("task", "data")


def registered_classes() -> dict[str, type]:
    """Every LightningModule and LightningDataModule a ``conf/task`` or ``conf/data`` file names."""
    found = {}
    for group in GROUPS:
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            target = OmegaConf.load(path).get("_target_")
            if target:
                found[target] = get_class(target)
    return found


def main(args: list[str] | None = None) -> None:
    """``args``: what follows ``speech-peft lightning`` (default: the process's own arguments)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from ..tasks.callbacks import EpochSeed, EpochTimer, FitReport, RankParallelSync

    registered_classes()  # imported, so jsonargparse knows them by their short names
    if args is not None:  # LightningCLI reads sys.argv (and warns when given both)
        sys.argv = ["speech-peft lightning", *args]
    # The callbacks speech-peft fit runs (conf/callbacks/default.yaml), so both front ends train and leave
    # behind the same things: the best checkpoint on val/loss, each epoch's seed, epoch times, rank-parallel
    # merges, and the export with fit_result.json in default_root_dir.
    callbacks = [ModelCheckpoint(monitor="val/loss", mode="min", save_top_k=1, filename="best-epoch{epoch:02d}",
                                 auto_insert_metric_name=False),
                 EpochSeed(seed=None), EpochTimer(), RankParallelSync(), FitReport()]
    LightningCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                 save_config_kwargs={"overwrite": True}, seed_everything_default=0,
                 trainer_defaults={"default_root_dir": str(Path("exp") / "lightning"), "callbacks": callbacks})
