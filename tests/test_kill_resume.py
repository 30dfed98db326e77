"""Kill and resume: a fit killed mid-epoch and resumed from its last checkpoint ends with the same weights
and metrics as the same seeded fit never interrupted, for every training task (classification and
diffusion ASR in the fast suite; the three fits of seconds each are slow)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from crash_callback import Killed

from speech_peft.commands.train import compose_config, run

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"
EPOCHS = 3


def _fit_killed_and_resumed(overrides: list[str], tmp_path: Path) -> tuple[dict, dict]:
    """(uninterrupted, resumed): each {'state': trained weights at the end, 'result': fit_result}."""
    common = [*overrides, f"trainer.max_epochs={EPOCHS}", "callbacks.checkpoint.save_last=true",
              "trainer.enable_progress_bar=false", "seed=7"]
    whole = run(compose_config([*common, f"exp_dir={tmp_path}/whole"]), "fit")
    kill = ["+callbacks.kill._target_=crash_callback.KillAt", "+callbacks.kill.epoch=1", "+callbacks.kill.batch=1"]
    with pytest.raises(Killed):
        run(compose_config([*common, f"exp_dir={tmp_path}/killed", *kill]), "fit")
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # epoch 1 died half-way
    resumed = run(compose_config([*common, f"exp_dir={tmp_path}/killed", f"ckpt_path={last}"]), "fit")
    states = [torch.load(Path(d) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
              for d in (tmp_path / "whole", tmp_path / "killed")]
    return {"state": states[0], "result": whole}, {"state": states[1], "result": resumed}


def _same(whole: dict, resumed: dict) -> None:
    assert whole["state"].keys() == resumed["state"].keys() and whole["state"]
    for key, value in whole["state"].items():
        torch.testing.assert_close(resumed["state"][key], value, rtol=0, atol=1e-6,
                                   msg=lambda m, key=key: f"{key}: {m}")
    assert resumed["result"]["best_score"] == pytest.approx(whole["result"]["best_score"], abs=1e-6)
    assert Path(resumed["result"]["best_checkpoint"]).name == Path(whole["result"]["best_checkpoint"]).name


def test_classification_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tiny_whisper_dir, fsdd_folds, tmp_path):
    fold = fsdd_folds / "fold_theo"
    _same(*_fit_killed_and_resumed([
        f"encoder.name={tiny_whisper_dir}", "data.labels=[0,1,2]", f"data.train={fold}/train.jsonl",
        f"data.val={fold}/val.jsonl", "data.batch_size=4", "adapter=lora", "logger=none",
        "trainer.limit_train_batches=3"], tmp_path))


@pytest.mark.slow
def test_restoration_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tiny_whisper_dir, tmp_path):
    from speech_peft.data.builders import from_folder
    from speech_peft.data.manifest import write_manifest

    manifest = write_manifest(from_folder(DATA), tmp_path / "clean.jsonl")
    _same(*_fit_killed_and_resumed([
        "task=restore_cleaner", "data=restore", f"encoder.name={tiny_whisper_dir}", f"data.train={manifest}",
        f"data.val={manifest}", "data.seconds=0.5", "data.batch_size=4", "task.tap_layer=1", "task.bottleneck_dim=8",
        "logger=none", "trainer.limit_train_batches=3"], tmp_path))


def test_diffusion_asr_killed_mid_epoch_resumes_to_the_uninterrupted_weights(whisper_with_tokenizer, fsdd_folds,
                                                                            tmp_path):
    fold = fsdd_folds / "fold_theo"
    _same(*_fit_killed_and_resumed([
        "task=diffusion_asr", f"encoder.name={whisper_with_tokenizer}", "data=fsdd_long", f"data.train={fold}/train.jsonl",
        f"data.val={fold}/val.jsonl", "data.batch_size=4", "task.max_length=8", "task.xattn_heads=4", "logger=none",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"], tmp_path))


@pytest.mark.slow
def test_autoregressive_asr_killed_mid_epoch_resumes_to_the_uninterrupted_weights(fsdd_folds, tmp_path):
    fold = fsdd_folds / "fold_theo"  # the real Whisper tiny.en: its prompt needs the real vocabulary
    _same(*_fit_killed_and_resumed([
        "task=whisper_ar", "encoder.name=whisper-tiny.en", "data=fsdd_long", f"data.train={fold}/train.jsonl",
        f"data.val={fold}/val.jsonl", "data.batch_size=2", "adapter=lora", "logger=none",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"], tmp_path))


@pytest.mark.slow
def test_adapter_fusion_killed_mid_epoch_resumes_to_the_uninterrupted_weights(fsdd_folds, tmp_path):
    from speech_peft.adapters import ParallelAdapterConfig, add_adapter, adapter_parameters, save_adapter
    from speech_peft.encoders.whisper import load_whisper

    model = copy.deepcopy(load_whisper("whisper-tiny.en").model)  # the loaded one is cached: leave it bare
    adapters = {}
    torch.manual_seed(0)
    for task in ("read", "phone"):
        add_adapter(model, ParallelAdapterConfig(bottleneck_dim=8, stack="*encoder*", scale=1.0), task)
        with torch.no_grad():
            for p in adapter_parameters(model, task):
                p.normal_(0, 0.02)
        adapters[task] = save_adapter(model, tmp_path / "adapters" / task, name=task, base_model_name="whisper-tiny.en")
    fold = fsdd_folds / "fold_theo"
    _same(*_fit_killed_and_resumed([
        "task=adapter_fusion", "encoder.name=whisper-tiny.en", f"task.adapters={{read:{adapters['read']},phone:"
        f"{adapters['phone']}}}", "data=fsdd_long", f"data.train={fold}/train.jsonl", f"data.val={fold}/val.jsonl",
        "data.batch_size=2", "logger=none", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"], tmp_path))
