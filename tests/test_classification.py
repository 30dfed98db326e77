"""The classification task: frozen encoder + adapter + head, trained by Lightning, driven by Hydra."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from speech_peft.data.manifest import read_manifest
from speech_peft.tasks.classification import AudioClassifier
from speech_peft.train import CONF_DIR, run

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["0", "1", "2"]


def _cfg(tiny_whisper_dir, folds, tmp_path, *overrides):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"encoder.name={tiny_whisper_dir}", f"data.labels=[{','.join(LABELS)}]",
            f"data.train={folds}/fold_theo/train.jsonl", f"data.val={folds}/fold_theo/val.jsonl",
            f"data.test={folds}/fold_theo/test.jsonl", f"exp_dir={tmp_path}/exp", "data.batch_size=8",
            "trainer.progress_bar=false", "logger=csv", *overrides])
    return cfg


def test_frozen_encoder_stays_in_eval_mode_and_unchanged_while_the_adapter_trains(tiny_whisper_dir, fsdd_folds, tmp_path):
    cfg = _cfg(tiny_whisper_dir, fsdd_folds, tmp_path, "trainer.max_epochs=1", "adapter=parallel")
    from speech_peft.train import build_data, build_module, build_trainer
    module = build_module(cfg)
    before = {k: v.clone() for k, v in module.encoder.state_dict().items() if ".adapters." not in k}
    module.train()
    assert not module.encoder.encoder.layers[0].fc1.training
    assert module.encoder.encoder.layers[0].fc2.adapters.training
    trainer = build_trainer(cfg, Path(cfg.exp_dir))
    trainer.fit(module, build_data(cfg))
    after = module.encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    adapter = [v for k, v in after.items() if ".adapters." in k and "up.weight" in k]
    assert adapter and all(v.abs().sum() > 0 for v in adapter)


def test_checkpoint_holds_only_the_trained_part_and_test_uses_the_best_epoch(tiny_whisper_dir, fsdd_folds, tmp_path):
    cfg = _cfg(tiny_whisper_dir, fsdd_folds, tmp_path, "trainer.max_epochs=3", "adapter=lora")
    fit = run(cfg, "fit")
    state = torch.load(fit["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert set(state) == {k for k in state if "lora_" in k or k.startswith("head.")}
    assert fit["trainable_params"] == sum(v.numel() for v in state.values())

    # The checkpoint kept is the epoch with the lowest validation loss (first one on ties), not the last.
    with open(Path(cfg.exp_dir) / "logs" / "metrics.csv") as handle:
        val = [(int(r["epoch"]), float(r["val/loss"])) for r in csv.DictReader(handle) if r.get("val/loss")]
    best_epoch = min(val, key=lambda item: (item[1], item[0]))[0]
    assert f"best-epoch{best_epoch:02d}.ckpt" in fit["best_checkpoint"]

    test_cfg = OmegaConf.merge(cfg, {"ckpt_path": fit["best_checkpoint"]})
    result = run(test_cfg, "test")
    assert result["checkpoint"] == fit["best_checkpoint"] and 0.0 <= result["test/acc"] <= 1.0
    assert (Path(cfg.exp_dir) / "export" / "adapter" / "adapter.safetensors").is_file()


def test_checkpoint_from_another_encoder_is_refused(tiny_whisper_dir, fsdd_folds, tmp_path):
    cfg = _cfg(tiny_whisper_dir, fsdd_folds, tmp_path, "trainer.max_epochs=1", "adapter=lora")
    fit = run(cfg, "fit")
    module = AudioClassifier(LABELS, "whisper", tiny_whisper_dir, {"method": "lora"})
    with torch.no_grad():
        module.encoder.encoder.layers[0].fc1.weight.add_(1.0)
    module.fingerprint = __import__("speech_peft.tasks.common", fromlist=["x"]).encoder_fingerprint(module.encoder)
    checkpoint = torch.load(fit["best_checkpoint"], map_location="cpu", weights_only=True)
    with pytest.raises(ValueError, match="another"):
        module.on_load_checkpoint(checkpoint)


def test_validation_never_holds_the_test_speaker(fsdd_folds):
    for fold in fsdd_folds.glob("fold_*"):
        speaker = fold.name.removeprefix("fold_")
        test = read_manifest(fold / "test.jsonl")
        assert {e.speaker for e in test} == {speaker}
        for split in ("train", "val"):
            assert speaker not in {e.speaker for e in read_manifest(fold / f"{split}.jsonl")}


def test_whisper_pads_to_30s_only_when_asked(tiny_whisper_dir):
    short = AudioClassifier(LABELS, "whisper", tiny_whisper_dir, {"method": "linear_probe"})
    padded = AudioClassifier(LABELS, "whisper", tiny_whisper_dir, {"method": "linear_probe"}, pad_to_30s=True)
    wave = torch.randn(1, 16000)
    assert short.encoder(wave).hidden.shape[1] == 50
    assert padded.encoder(wave).hidden.shape[1] == 1500
    assert padded.encoder(wave).mask.sum() == 50  # pooling still averages the clip's own frames only


def _config_files():
    files = sorted((ROOT / "conf").rglob("*.yaml"))
    files += sorted(ROOT.glob("recipes/*/*/conf/**/*.yaml"))
    return files


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_composes(path):
    conf_root = next(p for p in path.parents if p.name == "conf")
    rel = path.relative_to(conf_root).with_suffix("")
    overrides = [] if rel.parent == Path(".") else [f"{rel.parent}={rel.name}"]
    search = [] if conf_root == CONF_DIR else [f"hydra.searchpath=[file://{conf_root}]"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides + search, return_hydra_config=bool(search))
    if rel.parent.name == "adapter":
        from speech_peft.adapters import config_from_dict
        if cfg.adapter.method != "full":
            config_from_dict(OmegaConf.to_container(cfg.adapter))
    assert cfg.task.name and (cfg.data.get("labels") or cfg.data.get("degrade") is not None or cfg.data.get("require_text"))


def test_lightning_cli_prints_the_classifier_config(capsys):
    from lightning.pytorch.cli import LightningCLI
    with pytest.raises(SystemExit) as exit_info:
        LightningCLI(AudioClassifier, run=False, save_config_callback=None,
                     args=["--print_config", "--model.labels=[a,b]"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "encoder_name: whisper-tiny.en" in out and "labels:" in out


def test_full_fine_tuning_exports_the_encoder_it_trained_and_adapters_export_only_themselves(tiny_whisper_dir, tmp_path):
    from safetensors.torch import load_file

    full = AudioClassifier(LABELS, "whisper", tiny_whisper_dir, {"method": "full"})
    full.export(tmp_path / "full")
    saved = load_file(tmp_path / "full" / "encoder.safetensors")
    assert saved.keys() == full.encoder.state_dict().keys()
    assert all(torch.equal(v, full.encoder.state_dict()[k]) for k, v in saved.items())
    lora = AudioClassifier(LABELS, "whisper", tiny_whisper_dir, {"method": "lora", "target_roles": ["attn.q"]})
    lora.export(tmp_path / "lora")
    assert not (tmp_path / "lora" / "encoder.safetensors").exists() and (tmp_path / "lora" / "adapter").is_dir()
