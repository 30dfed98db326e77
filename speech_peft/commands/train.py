"""Lightning's verbs over Hydra configs: ``speech-peft fit|validate|test|predict [overrides]``.

The config names everything a run is built from: ``task`` (the LightningModule, by ``_target_``, with
its keyword arguments), ``data`` (the LightningDataModule, likewise), ``trainer`` (Trainer keyword
arguments), ``callbacks`` and ``logger``. Adding a task is one module plus one ``conf/task/*.yaml``.

Each run writes into ``exp_dir``: the resolved ``config.<verb>.yaml``, ``checkpoints/`` (what was
trained, nothing else), ``export/`` (the task's export, which its ``from_export`` reads back), and
``<verb>_result.json``; ``predict`` writes ``predictions.jsonl``.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import UserError
from ..fileio import write_json, write_text
from ..jobs.devices import first_process
from ..tasks.callbacks import FitReport
from ..tasks.base import check_data
from ..tasks.sharding import resolve_strategy
from . import VERBS
from .errors import exit_status

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # package data (the checkout's top-level conf/ links here)


def _adapter_folder(choice: str, *, _root_: DictConfig) -> str:
    """``exp_dir``'s last part: the adapter chosen, for the tasks that take one (their config has ``adapter``)."""
    return f"/{choice}" if "adapter" in _root_.task else ""


OmegaConf.register_new_resolver("adapter_folder", _adapter_folder, replace=True)


def compose_config(overrides: list[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """The config ``speech-peft VERB OVERRIDES`` runs with (``config_dir``: a recipe's own ``conf/``,
    searched before the package's). Also sets Hydra's runtime, which ``exp_dir`` reads."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    search = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]"] if config_dir else []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, *search], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    _refuse_an_adapter_the_task_ignores(cfg, overrides)
    check_values(cfg)
    return cfg


# (key, kind, test, what it must be): values Lightning or a task would take without a word (lr=-0.01 trains
# away from the minimum) or fail on deep inside (max_epochs=abc). Keys a config does not have are not checked.
_CHECKS = (
    ("trainer.max_epochs", int, lambda v: v >= 1 or v == -1, "a whole number of epochs, 1 or more (-1: no limit)"),
    ("trainer.max_steps", int, lambda v: v >= 1 or v == -1, "a whole number of steps, 1 or more (-1: no limit)"),
    ("trainer.accumulate_grad_batches", int, lambda v: v >= 1, "a whole number, 1 or more"),
    ("trainer.gradient_clip_val", float, lambda v: v >= 0, "a number, 0 or more"),
    ("trainer.log_every_n_steps", int, lambda v: v >= 1, "a whole number, 1 or more"),
    ("task.lr", float, lambda v: v > 0, "a learning rate above 0"),
    ("task.ctc_lr", float, lambda v: v > 0, "a learning rate above 0"),
    ("task.weight_decay", float, lambda v: v >= 0, "a number, 0 or more"),
    ("task.warmup_steps", int, lambda v: v >= 0, "a whole number, 0 or more"),
    ("data.batch_size", int, lambda v: v >= 1, "a whole number, 1 or more"),
    ("data.seconds", float, lambda v: v > 0, "seconds above 0"),
    ("data.repeats", int, lambda v: v >= 1, "a whole number, 1 or more"),
    ("seed", int, lambda v: True, "a whole number"),
)


def check_values(cfg: DictConfig) -> None:
    """Each training setting of the composed config has the type and range it needs, or one line naming it."""
    for key, kind, valid, meaning in _CHECKS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or not valid(value):
            raise UserError(f"{key}={value!r}: must be {meaning}")


def _refuse_an_adapter_the_task_ignores(cfg: DictConfig, overrides: list[str]) -> None:
    """An ``adapter=``/``adapter.*`` override for a task whose config takes no ``adapter`` would be dropped."""
    keys = [o.partition("=")[0].lstrip("+~") for o in overrides]
    asked = [k for k in keys if k == "adapter" or k.startswith("adapter.")]
    if asked and "adapter" not in cfg.task:
        task = cfg.task._target_.rsplit(".", 1)[-1]
        raise UserError(f"{task} takes no adapter= (its task config has no adapter key; its own options are "
                         f"task.*): drop {', '.join(asked)}")


def build(node: DictConfig) -> Any:
    """The object a config node names by ``_target_``, built with its other keys as keyword arguments.
    What the constructor raised is raised as is (Hydra would wrap it)."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        if err.__cause__ is None:
            raise
        raise err.__cause__.with_traceback(err.__cause__.__traceback__) from None


def build_task(cfg: DictConfig) -> L.LightningModule:
    return build(cfg.task)


def build_data(cfg: DictConfig) -> L.LightningDataModule:
    """The data module, checked against the one the task trains on (its ``datamodule`` attribute)."""
    data = build(cfg.data)
    check_data(get_class(cfg.task._target_), data)  # before the task is built (the same check runs in its setup)
    return data


def build_trainer(cfg: DictConfig, resuming: bool = False) -> L.Trainer:
    """``resuming``: a fit that continues from a checkpoint logs to a fresh CSV file beside the old
    one (logs/resumed_<n>), since the old file's header lacks the metrics first logged later."""
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values()]
    logger = build(cfg.logger) if cfg.get("logger") else False
    if resuming and isinstance(logger, CSVLogger) and Path(logger.log_dir, "metrics.csv").exists():
        taken = {p.name for p in Path(logger.root_dir).glob("resumed_*")}
        version = next(f"resumed_{n}" for n in range(1, len(taken) + 2) if f"resumed_{n}" not in taken)
        logger = CSVLogger(logger.save_dir, name=logger.name, version=version)
    trainer = resolve_strategy(OmegaConf.to_container(cfg.trainer, resolve=True))
    return L.Trainer(**trainer, callbacks=[*callbacks, FitReport(cfg.exp_dir)], logger=logger)


def trained_module(cfg: DictConfig, verb: str) -> tuple[L.LightningModule, str | None]:
    """The module a validate/test/predict run scores, and the checkpoint Lightning should load into it:
    ``ckpt_path`` is a checkpoint written by fit, or an export folder (read by the task's ``from_export``)."""
    path = cfg.get("ckpt_path")
    if path and Path(path).is_dir():
        task_class = get_class(cfg.task._target_)
        if not hasattr(task_class, "from_export"):
            raise UserError(f"{task_class.__name__} cannot be rebuilt from an export; give a .ckpt")
        return task_class.from_export(path), None
    if verb != "validate" and not path:
        raise UserError(f"{verb} needs ckpt_path=... (a checkpoint written by fit, or its export folder)")
    if path and not Path(path).is_file():
        raise FileNotFoundError(f"ckpt_path {path}: no such checkpoint or export folder")
    return build_task(cfg), path


def run(cfg: DictConfig, verb: str) -> dict[str, Any]:
    if verb not in VERBS:
        raise UserError(f"unknown verb {verb!r} ({', '.join(VERBS)})")
    check_values(cfg)  # a sweep's configs are composed by Hydra, not compose_config
    L.seed_everything(cfg.seed, workers=True)
    exp_dir = Path(cfg.exp_dir)
    if verb == "fit":  # before anything is written there
        _resume_or_start_over(cfg)
    write_text(exp_dir / f"config.{verb}.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if verb == "fit":
        module = build_task(cfg)
        data, trainer = build_data(cfg), build_trainer(cfg, resuming=cfg.ckpt_path is not None)
        trainer.fit(module, data, ckpt_path=cfg.ckpt_path)
        if not trainer.is_global_zero:  # data-parallel: the first process exports and reports
            return {}
        result = next(c for c in trainer.callbacks if isinstance(c, FitReport)).result  # fit_result.json
        print(json.dumps(result, indent=2))
        return result
    else:
        task_class = get_class(cfg.task._target_)
        if verb == "predict" and hasattr(task_class, "predict_instead"):
            raise UserError(f"{task_class.__name__} does not predict through Lightning: "
                             f"use `{task_class.predict_instead}`")
        module, ckpt = trained_module(cfg, verb)
        data, trainer = build_data(cfg), build_trainer(cfg, resuming=cfg.ckpt_path is not None)
        if verb == "predict":
            rows = [row for batch in trainer.predict(module, data, ckpt_path=ckpt) for row in batch]
            out = write_text(exp_dir / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                                  for r in rows))
            result = {"checkpoint": cfg.ckpt_path, "predictions": str(out), "count": len(rows)}
        else:
            scores = (trainer.validate if verb == "validate" else trainer.test)(module, data, ckpt_path=ckpt)[0]
            result = {"checkpoint": cfg.ckpt_path, **{k: float(v) for k, v in scores.items()}}
    write_json(exp_dir / f"{verb}_result.json", result)
    print(json.dumps(result, indent=2))
    return result


def _resume_or_start_over(cfg: DictConfig) -> None:
    """A fit into an ``exp_dir`` that holds an unfinished fit (checkpoints, no ``fit_result.json``) says which
    checkpoint and epoch it resumes from (``ckpt_path``), or moves the old checkpoints aside when asked to
    start over (``start_over=true``), or refuses naming both overrides: never a silent restart beside the old
    run's checkpoints."""
    exp_dir = Path(cfg.exp_dir)
    if cfg.ckpt_path is not None:
        import torch

        state = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=True, mmap=True)
        log.info("resuming the fit from %s: %d epoch(s) done, step %d", cfg.ckpt_path, state.get("epoch", -1) + 1,
                 state.get("global_step", 0))
        return
    old = sorted((exp_dir / "checkpoints").glob("*.ckpt"))
    if not old or (exp_dir / "fit_result.json").exists() or not first_process():  # the others start once it decided
        return
    if cfg.get("start_over"):
        aside = next(p for n in range(1, 10_000) if not (p := exp_dir / f"checkpoints.abandoned-{n}").exists())
        (exp_dir / "checkpoints").rename(aside)
        log.info("start_over=true: the unfinished fit's checkpoints moved to %s; training from epoch 0", aside)
        return
    last = exp_dir / "checkpoints" / "last.ckpt"
    resume = last if last.exists() else old[-1]
    raise UserError(f"{exp_dir} holds an unfinished fit ({', '.join(p.name for p in old)}): resume it with "
                    f"ckpt_path={resume}, or train afresh with start_over=true (its checkpoints are kept aside)")


def run_verb(verb: str, overrides: list[str]) -> int:
    """Run a verb through Hydra's own entry point, so -m sweeps, --cfg and --config-dir work as usual;
    user errors are one line on stderr (exit status 2), like every other command's. A plain run's
    config is composed first, so a bad override or config name is reported the same way."""
    import hydra

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        status = exit_status(verb, lambda: run(cfg, verb))
        if status:
            sys.exit(status)

    plain = _plain_run(overrides)
    if plain is not None:
        status = exit_status(verb, lambda: compose_config(*plain))
        if status:
            return status
    relaunch = Path(__file__).resolve().parents[1] / "launch" / f"{verb}.py"  # data-parallel fit's other processes
    sys.argv = [str(relaunch) if relaunch.is_file() else f"speech-peft {verb}", *overrides]
    _main()
    return 0


def _plain_run(overrides: list[str]) -> tuple[list[str], str | None] | None:
    """(overrides, config dir) of a plain run; None for sweeps and Hydra's own flags (--cfg, --help, -m)."""
    config_dir, plain = None, []
    items = iter(overrides)
    for item in items:
        if item == "--config-dir":
            config_dir = next(items, None)
        elif item.startswith("--config-dir="):
            config_dir = item.partition("=")[2]
        elif item.startswith("-"):
            return None
        else:
            plain.append(item)
    return plain, config_dir
