"""Lightning's verbs over Hydra configs: ``speech-peft fit|validate|test|predict [overrides]``.

Each run writes into ``exp_dir``: the resolved ``config.yaml``, ``checkpoints/`` (adapter + head
only), ``export/`` (the adapter in the adapter core's format), and a JSON of the verb's metrics.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from .tasks.common import EpochTimer

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def build_module(cfg: DictConfig) -> L.LightningModule:
    task = cfg.task.name
    if task == "classification":
        from .tasks.classification import AudioClassifier

        return AudioClassifier(
            labels=[str(l) for l in cfg.data.labels], encoder_kind=cfg.encoder.kind, encoder_name=cfg.encoder.name,
            adapter=OmegaConf.to_container(cfg.adapter, resolve=True), pooling=cfg.task.pooling,
            pad_to_30s=cfg.encoder.get("pad_to_30s", False), max_length=cfg.encoder.get("max_length"),
            lr=cfg.task.lr, weight_decay=cfg.task.weight_decay, warmup_steps=cfg.task.warmup_steps)
    if task == "whisper_ar":
        from .tasks.asr import WhisperARFineTune

        return WhisperARFineTune(cfg.encoder.name, OmegaConf.to_container(cfg.adapter, resolve=True), cfg.task.lr,
                                 cfg.task.weight_decay)
    if task == "diffusion_asr":
        from .tasks.diffusion_asr import DiffusionASR

        t = cfg.task
        return DiffusionASR(cfg.encoder.name, t.stage, t.max_length, t.xattn_heads, t.lr, t.weight_decay,
                            t.layer_decay, t.ema_decay, t.get("init_from"), t.get("cache_dir"),
                            OmegaConf.to_container(t.decode, resolve=True), t.get("tokens_per_second"),
                            t.get("xattn_init", "whisper"))
    if task == "restore_cleaner":
        from .tasks.restoration import FeatureCleaner

        t = cfg.task
        return FeatureCleaner(cfg.encoder.name, t.tap_layer, t.bottleneck_dim, t.scale, t.lr, t.get("adapter_dir"))
    if task == "restore_vocoder":
        from .tasks.restoration import VocoderTraining

        t = cfg.task
        return VocoderTraining(OmegaConf.to_container(t.vocoder, resolve=True), t.stage, t.get("cleaner_dir"),
                               t.get("init_vocoder"), cfg.encoder.name, t.tap_layer, t.bottleneck_dim, t.lr,
                               t.adversarial, t.feature_matching_weight)
    raise ValueError(f"unknown task {task!r}")


def build_data(cfg: DictConfig):
    from .data.datamodule import ManifestDataModule

    d = cfg.data
    if cfg.task.name.startswith("restore_"):
        from .tasks.restoration import RestorationData

        return RestorationData(d.train, d.get("val"), OmegaConf.to_container(d.degrade, resolve=True),
                               d.seconds, d.batch_size, cfg.seed, d.get("repeats", 1))
    return ManifestDataModule(train=d.get("train"), val=d.get("val"), test=d.get("test"), predict=d.get("predict"),
                              batch_size=d.batch_size, num_workers=d.num_workers, seed=cfg.seed,
                              skip_bad=d.get("skip_bad", False), rejects_path=str(Path(cfg.exp_dir) / "rejects.tsv"),
                              cache_audio=d.get("cache_audio", False), require_text=d.get("require_text", False),
                              augment=OmegaConf.to_container(d.augment) if d.get("augment") else None)


def build_trainer(cfg: DictConfig, exp_dir: Path) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    checkpoint = ModelCheckpoint(dirpath=exp_dir / "checkpoints", monitor=cfg.trainer.monitor,
                                 mode=cfg.trainer.monitor_mode, save_top_k=1, save_last=False,
                                 # no "=" in the name: ckpt_path=... must parse as a Hydra override
                                 filename="best-epoch{epoch:02d}", auto_insert_metric_name=False)
    logger = CSVLogger(str(exp_dir), name="logs", version="") if cfg.logger.name == "csv" else False
    return L.Trainer(max_epochs=cfg.trainer.max_epochs, accelerator=cfg.trainer.accelerator,
                     devices=cfg.trainer.devices, precision=cfg.trainer.precision,
                     gradient_clip_val=cfg.trainer.gradient_clip_val, log_every_n_steps=cfg.trainer.log_every_n_steps,
                     enable_progress_bar=cfg.trainer.progress_bar, callbacks=[checkpoint, EpochTimer()], logger=logger,
                     deterministic=cfg.trainer.deterministic, num_sanity_val_steps=0,
                     limit_train_batches=cfg.trainer.get("limit_train_batches", 1.0),
                     limit_val_batches=cfg.trainer.get("limit_val_batches", 1.0))


def training_table(exp: Path, runs: list[tuple[str, str]], first_column: str) -> str:
    """A results table of the fits under ``exp`` (``(folder, label)`` each; folders without a
    ``fit_result.json`` are left out): trainable parameters, epochs, mean seconds per epoch, best score."""
    rows = [f"| {first_column} | trainable params | epochs | s / epoch | best validation |", "|---|---|---|---|---|"]
    for folder, label in runs:
        path = exp / folder / "fit_result.json"
        if path.exists():
            fit = json.loads(path.read_text())
            times = fit["epoch_times_s"]
            rows.append(f"| {label} | {fit['trainable_params']:,} | {fit.get('epochs', len(times))} | "
                        f"{sum(times) / len(times):.1f} | {fit['monitor']} {fit['best_score']:.4f} |")
    return "\n".join(rows)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run(cfg: DictConfig, verb: str) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    exp_dir = Path(cfg.exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / f"config.{verb}.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    module, data = build_module(cfg), build_data(cfg)
    trainer = build_trainer(cfg, exp_dir)
    if verb == "fit":
        trainer.fit(module, data, ckpt_path=cfg.ckpt_path)
        best = trainer.checkpoint_callback.best_model_path
        module.load_state_dict(_load_state(best), strict=False)
        module.export(exp_dir / "export")
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        total = sum(p.numel() for p in module.parameters())
        result = {"best_checkpoint": best, "best_score": float(trainer.checkpoint_callback.best_model_score),
                  "monitor": cfg.trainer.monitor, "trainable_params": trainable, "total_params": total,
                  "epochs": trainer.current_epoch,  # all of them, also when resumed from ckpt_path
                  "epoch_times_s": next(c.times for c in trainer.callbacks if isinstance(c, EpochTimer)),
                  "export_bytes": _dir_size(exp_dir / "export"),
                  "checkpoint_bytes": Path(best).stat().st_size}
    else:
        if verb == "predict" and cfg.task.name.startswith("restore_"):
            raise ValueError("restoration predicts with `speech-peft restore IN OUT --checkpoint RESTORER_DIR`")
        if verb != "validate" and not cfg.ckpt_path:
            raise ValueError(f"{verb} needs ckpt_path=... (a checkpoint written by fit)")
        if verb == "predict":
            rows = [r for batch in trainer.predict(module, data, ckpt_path=cfg.ckpt_path) for r in batch]
            out = exp_dir / "predictions.tsv"
            tmp = out.with_name(f".{out.name}.tmp")
            tmp.write_text("".join(f"{r['id']}\t{r['label']}\t{r['score']:.4f}\n" for r in rows))
            os.replace(tmp, out)
            result = {"predictions": str(out), "count": len(rows)}
        else:
            run_fn = trainer.validate if verb == "validate" else trainer.test
            metrics = run_fn(module, data, ckpt_path=cfg.ckpt_path)[0]
            result = {"checkpoint": cfg.ckpt_path, **{k: float(v) for k, v in metrics.items()}}
    _write_json(exp_dir / f"{verb}_result.json", result)
    print(json.dumps(result, indent=2))
    return result


def _load_state(path: str) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def run_verb(verb: str, overrides: list[str]) -> int:
    """Run a verb through Hydra's own entry point, so -m sweeps and --cfg work as usual."""

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        run(cfg, verb)

    sys.argv = [f"speech-peft {verb}", *overrides]
    _main()
    return 0
