"""The classification task: frozen encoder + adapter + head, trained by Lightning, driven by Hydra."""
from __future__ import annotations

import csv
import inspect
import json
import os
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from speech_peft.commands.train import CONF_DIR, build_data, build_task, build_trainer, compose_config, run
from speech_peft.data.manifest import read_manifest
from speech_peft.tasks.classification import AudioClassifier

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["0", "1", "2"]


def _cfg(tiny_whisper_dir, folds, tmp_path, *overrides):
    return compose_config([
        f"encoder.name={tiny_whisper_dir}", f"data.labels=[{','.join(LABELS)}]",
        f"data.train={folds}/fold_theo/train.jsonl", f"data.val={folds}/fold_theo/val.jsonl",
        f"data.test={folds}/fold_theo/test.jsonl", f"exp_dir={tmp_path}/exp", "data.batch_size=8",
        "trainer.enable_progress_bar=false", "logger=csv", *overrides])


def test_frozen_encoder_stays_in_eval_mode_and_unchanged_while_the_adapter_trains(tiny_whisper_dir, fsdd_folds, tmp_path):
    cfg = _cfg(tiny_whisper_dir, fsdd_folds, tmp_path, "trainer.max_epochs=1", "adapter=parallel")
    module = build_task(cfg)
    before = {k: v.clone() for k, v in module.encoder.state_dict().items() if ".adapters." not in k}
    module.train()
    assert not module.encoder.encoder.layers[0].fc1.training
    assert module.encoder.encoder.layers[0].fc2.adapters.training
    trainer = build_trainer(cfg)
    trainer.fit(module, build_data(cfg))
    after = module.encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    adapter = [v for k, v in after.items() if ".adapters." in k and "up.weight" in k]
    assert adapter and all(v.abs().sum() > 0 for v in adapter)


def test_checkpoint_holds_only_the_trained_part_and_test_and_predict_agree_on_the_best_epoch(
        tiny_whisper_dir, fsdd_folds, tmp_path):
    test_manifest = fsdd_folds / "fold_theo" / "test.jsonl"
    cfg = _cfg(tiny_whisper_dir, fsdd_folds, tmp_path, "trainer.max_epochs=3", "adapter=lora",
               f"data.predict={test_manifest}")
    fit = run(cfg, "fit")
    state = torch.load(fit["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert set(state) == {k for k in state if "lora_" in k or k.startswith("head.")}
    assert fit["trainable_params"] == sum(v.numel() for v in state.values())

    # The checkpoint kept is the epoch with the lowest validation loss (first one on ties), not the last.
    with open(Path(cfg.exp_dir) / "logs" / "metrics.csv") as handle:
        val = [(int(r["epoch"]), float(r["val/loss"])) for r in csv.DictReader(handle) if r.get("val/loss")]
    best_epoch = min(val, key=lambda item: (item[1], item[0]))[0]
    assert f"best-epoch{best_epoch:02d}.ckpt" in fit["best_checkpoint"]

    # test from the checkpoint and predict from the export see the same model: the accuracy of the
    # exported classifier's predictions is the checkpoint's test accuracy.
    result = run(OmegaConf.merge(cfg, {"ckpt_path": fit["best_checkpoint"]}), "test")
    export = Path(cfg.exp_dir) / "export"
    predicted = run(OmegaConf.merge(cfg, {"ckpt_path": str(export)}), "predict")
    rows = [json.loads(line) for line in Path(predicted["predictions"]).read_text().splitlines()]
    truth = {e.id: e.label for e in read_manifest(test_manifest)}
    assert sorted(r["id"] for r in rows) == sorted(truth)
    accuracy = sum(r["label"] == truth[r["id"]] for r in rows) / len(rows)
    assert result["test/acc"] == pytest.approx(accuracy)


def test_checkpoint_from_another_encoder_or_another_adapter_is_refused(tiny_whisper_dir, fsdd_folds, tmp_path):
    from speech_peft.tasks.common import load_checkpoint_weights

    cfg = _cfg(tiny_whisper_dir, fsdd_folds, tmp_path, "trainer.max_epochs=1", "adapter=lora")
    best = run(cfg, "fit")["best_checkpoint"]
    same = AudioClassifier(LABELS, "whisper", tiny_whisper_dir, {"method": "lora"})
    load_checkpoint_weights(same, best)  # strict: every tensor accounted for
    other_base = AudioClassifier(LABELS, "whisper", tiny_whisper_dir, {"method": "lora"})
    with torch.no_grad():
        other_base.encoder.encoder.layers[0].fc1.weight.add_(1.0)
    with pytest.raises(ValueError, match="another base model"):
        load_checkpoint_weights(other_base, best)
    other_adapter = AudioClassifier(LABELS, "whisper", tiny_whisper_dir, {"method": "parallel"})
    with pytest.raises(ValueError, match="missing .*parallel|unexpected .*lora"):
        load_checkpoint_weights(other_adapter, best)


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


def _keyword_arguments(target: str) -> set[str]:
    return set(inspect.signature(get_class(target)).parameters)


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_composes_and_names_only_arguments_its_classes_take(path):
    conf_root = next(p for p in path.parents if p.name == "conf")
    rel = path.relative_to(conf_root).with_suffix("")
    overrides = [] if rel.parent == Path(".") else [f"{rel.parent}={rel.name}"]
    cfg = compose_config(overrides, None if conf_root == CONF_DIR else conf_root)
    if rel.parent.name == "adapter":
        from speech_peft.adapters import config_from_dict
        if cfg.adapter.method != "full":
            config_from_dict(OmegaConf.to_container(cfg.adapter))
    for group in ("task", "data"):
        keys = set(cfg[group]) - {"_target_"}
        assert keys <= _keyword_arguments(cfg[group]._target_), f"{group}: {keys - _keyword_arguments(cfg[group]._target_)}"
    for callback in cfg.callbacks.values():
        assert set(callback) - {"_target_"} <= _keyword_arguments(callback._target_)
    import lightning
    assert set(cfg.trainer) <= set(inspect.signature(lightning.Trainer).parameters)


def test_the_trainer_overrides_recipes_document_are_accepted():
    cfg = compose_config(["trainer.limit_train_batches=0.5", "trainer.accumulate_grad_batches=4",
                          "trainer.precision=bf16-mixed", "trainer.strategy=ddp", "trainer.devices=2", "trainer=gpu"])
    assert cfg.trainer.limit_train_batches == 0.5 and cfg.trainer.accumulate_grad_batches == 4
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.strategy == "ddp"


def test_a_sweep_over_adapters_gives_each_member_its_own_folder():
    folders = {compose_config([f"adapter={name}"]).exp_dir for name in ("lora", "pissa", "lora_all", "series", "houlsby")}
    assert len(folders) == 5 and "exp/fsdd/classification/pissa" in folders


def test_both_front_ends_train_one_config_to_the_same_export_and_fit_result(tiny_whisper_dir, fsdd_folds, tmp_path):
    """``speech-peft fit`` (Hydra) and ``speech-peft lightning fit`` (Lightning's CLI, the same config as YAML)
    run the same callbacks: the best checkpoint on val/loss, epoch seeds and times, the export and
    fit_result.json."""
    import yaml
    from safetensors.torch import load_file

    from speech_peft.commands.lightning import main
    from speech_peft.commands.train import compose_config, run

    fold = fsdd_folds / "fold_theo"
    cfg = compose_config([f"encoder.name={tiny_whisper_dir}", 'data.labels=["0","1","2"]', "adapter=lora", "adapter.r=2",
                          f"data.train={fold}/train.jsonl", f"data.val={fold}/val.jsonl", "data.batch_size=4",
                          "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "logger=none",
                          f"exp_dir={tmp_path}/hydra"])
    hydra = run(cfg, "fit")
    plain = OmegaConf.to_container(cfg, resolve=True)
    arguments = lambda node: {k: v for k, v in node.items() if k not in ("_target_", "name")}  # noqa: E731
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "seed_everything": cfg.seed,
        "model": {"class_path": plain["task"]["_target_"], "init_args": arguments(plain["task"])},
        "data": {"class_path": plain["data"]["_target_"], "init_args": {**arguments(plain["data"]),
                                                                         "rejects_path": None}},
        "trainer": {**plain["trainer"], "logger": False, "default_root_dir": str(tmp_path / "lightning")}}))
    main(["fit", "--config", str(config)])
    cli = json.loads((tmp_path / "lightning" / "fit_result.json").read_text())
    assert cli["epochs"] == hydra["epochs"] == 2 and cli["monitor"] == hydra["monitor"] == "val/loss"
    assert cli["best_score"] == pytest.approx(hydra["best_score"], rel=1e-5)
    assert Path(cli["best_checkpoint"]).name == Path(hydra["best_checkpoint"]).name
    for part in ("head.safetensors", "adapter/adapter.safetensors"):
        ours, theirs = load_file(tmp_path / "hydra" / "export" / part), load_file(tmp_path / "lightning" / "export" / part)
        assert ours.keys() == theirs.keys() and ours
        for key in ours:
            torch.testing.assert_close(theirs[key], ours[key], rtol=0, atol=1e-6)
    assert AudioClassifier.from_export(tmp_path / "lightning" / "export").labels == ["0", "1", "2"]


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


@pytest.mark.parametrize("adapter", [{"method": "lora", "r": 2}, {"method": "full"}, {"method": "linear_probe"}],
                         ids=lambda a: a["method"])
def test_an_exported_classifier_reloads_to_the_same_outputs(tiny_whisper_dir, tmp_path, adapter):
    torch.manual_seed(0)
    trained = AudioClassifier(LABELS, "whisper", tiny_whisper_dir, adapter).eval()
    with torch.no_grad():  # trained weights that differ from any fresh start
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    trained.export(tmp_path / "export")
    again = AudioClassifier.from_export(tmp_path / "export")
    wave, lengths = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    with torch.no_grad():
        assert torch.allclose(again(wave, lengths), trained(wave, lengths), atol=1e-6)
    assert again.labels == trained.labels


def test_a_fit_resumed_from_its_last_checkpoint_logs_afresh_and_reports_every_epochs_time(
        tiny_whisper_dir, fsdd_folds, tmp_path):
    """A kill before the first epoch's end leaves a metrics file whose header lacks what is logged
    later; the resumed fit must not append to it, and must still count the epochs before the kill."""
    first = _cfg(tiny_whisper_dir, fsdd_folds, tmp_path, "trainer.max_epochs=1", "adapter=lora",
                 "callbacks.checkpoint.save_last=true")
    run(first, "fit")
    logs = tmp_path / "exp" / "logs"
    (logs / "metrics.csv").write_text("epoch,step,train/loss\n0,0,1.0\n")  # as a killed run leaves it
    resumed = _cfg(tiny_whisper_dir, fsdd_folds, tmp_path, "trainer.max_epochs=2", "adapter=lora",
                   "callbacks.checkpoint.save_last=true", f"ckpt_path={tmp_path}/exp/checkpoints/last.ckpt")
    result = run(resumed, "fit")
    assert result["epochs"] == 2 and len(result["epoch_times_s"]) == 2
    assert (logs / "resumed_1" / "metrics.csv").read_text().startswith("epoch")
    assert (logs / "metrics.csv").read_text() == "epoch,step,train/loss\n0,0,1.0\n"  # never overwritten


def test_a_dense_teacher_trains_both_paths_of_a_coda_adapter_and_pulls_the_routed_one_toward_the_dense_one(
        tiny_whisper_dir):
    from speech_peft.adapters.coda import every_token
    from speech_peft.data.dataset import Batch

    coda = {"method": "coda", "target_roles": ["block"], "bottleneck_dim": 4, "reduction": 2, "skipped": "interpolate",
            "attend": "all"}
    torch.manual_seed(0)
    model = AudioClassifier(LABELS, "whisper", tiny_whisper_dir, coda, dense_teacher=0.5)
    model.log = lambda *args, **kwargs: None
    waves = torch.randn(2, 8000)
    batch = Batch(ids=["a", "b"], waveforms=waves, lengths=torch.tensor([8000, 6000]), texts=[None, None],
                  labels=[LABELS[0], LABELS[1]])
    routed = model(batch.waveforms, batch.lengths)
    with every_token(model.encoder):
        dense = model(batch.waveforms, batch.lengths)
    assert not torch.allclose(routed, dense)  # two different paths, one set of weights
    assert torch.allclose(model(batch.waveforms, batch.lengths), routed)  # the routing came back
    targets = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy
    pull = (dense.softmax(-1) * (dense.log_softmax(-1) - routed.log_softmax(-1))).sum(-1).mean()
    expected = (ce(routed, targets) + ce(dense, targets)) / 2 + 0.5 * pull
    torch.testing.assert_close(model._step(batch, "train"), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="routes nothing"):
        AudioClassifier(LABELS, "whisper", tiny_whisper_dir, {"method": "lora"}, dense_teacher=0.5)


@pytest.mark.slow
def test_a_non_editable_install_fits_from_the_configs_it_carries(tiny_whisper_dir, fsdd_folds, tmp_path):
    """The wheel carries ``conf/`` as package data: installed into a folder of its own (not this checkout) and
    run from elsewhere, ``speech-peft fit`` composes its config and trains."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(ROOT)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    *map(str, (tmp_path / "wheel").glob("speech_peft-*.whl"))], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    where = subprocess.run([sys.executable, "-c", "import speech_peft; print(speech_peft.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(tmp_path / "site"))
    fold = fsdd_folds / "fold_theo"
    subprocess.run([sys.executable, "-m", "speech_peft.cli", "fit", f"encoder.name={tiny_whisper_dir}",
                    'data.labels=["0","1","2"]', "adapter=lora", "adapter.r=2", f"data.train={fold}/train.jsonl",
                    f"data.val={fold}/val.jsonl", "data.batch_size=4", "trainer.max_epochs=1",
                    "trainer.enable_progress_bar=false", "logger=none", f"exp_dir={tmp_path}/exp"],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    assert (tmp_path / "exp" / "fit_result.json").is_file() and (tmp_path / "exp" / "export" / "export.json").is_file()
