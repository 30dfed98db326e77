"""Every task builds on one Lightning base (tasks/base.py), so what an adapter method asks of training
reaches every task that trains it, not the classification task alone."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speech_peft.adapters.sparse import SparseBottleneck
from speech_peft.tasks.asr import WhisperARFineTune
from speech_peft.tasks.base import AdapterTask
from speech_peft.tasks.bridge import BridgeTraining
from speech_peft.tasks.classification import AudioClassifier
from speech_peft.tasks.diffusion_asr import DiffusionASR
from speech_peft.tasks.multitask_asr import WhisperAdapterFusion
from speech_peft.tasks.restoration import FeatureCleaner, VocoderTraining


@pytest.mark.parametrize("task", [AudioClassifier, WhisperARFineTune, DiffusionASR, WhisperAdapterFusion,
                                  FeatureCleaner, BridgeTraining, VocoderTraining])
def test_every_task_is_an_adapter_task(task):
    assert issubclass(task, AdapterTask)


def test_a_batch_whose_every_input_was_skipped_as_bad_is_no_training_or_validation_step():
    module = WhisperARFineTune("whisper-tiny.en")  # the skip-bad data path hands such a batch on as None
    assert module.training_step(None, 0) is None and module.validation_step(None, 0) is None


def test_autoregressive_asr_trains_hd_pissa_at_the_smaller_step_and_without_the_decay_its_method_asks():
    module = WhisperARFineTune("whisper-tiny.en", lr=1e-3, weight_decay=0.01,
                               adapter={"method": "hd_pissa", "target_roles": ["attn.q"], "layers": "0", "r": 2})
    groups = module.configure_optimizers().param_groups
    trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups for p in g["params"]) == trained
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(pytest.approx(1e-4), 0.0)]  # lr_scale 0.1


def test_a_snip_sparse_adapter_is_pruned_on_the_first_batches_of_an_autoregressive_asr_fit(fsdd_folds, tmp_path):
    from speech_peft.commands.train import compose_config, run

    fold = fsdd_folds / "fold_theo"
    cfg = compose_config([
        "task=whisper_ar", "encoder.name=whisper-tiny.en", "data=fsdd_long", f"data.train={fold}/train.jsonl",
        f"data.val={fold}/val.jsonl", "data.batch_size=2", "adapter=sparse", "adapter.target_roles=[ffn]",
        "+adapter.layers=0", "logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", f"exp_dir={tmp_path}/exp"])
    fit = run(cfg, "fit")
    exported = WhisperARFineTune.from_export(tmp_path / "exp" / "export")
    sparse = [m for m in exported.model.modules() if isinstance(m, SparseBottleneck)]
    assert sparse and all(bool(m.pruned) for m in sparse)
    kept = torch.cat([m.down_mask.flatten() for m in sparse]).float().mean()
    assert kept == pytest.approx(0.4, abs=0.02)  # sparsity 0.6
    assert fit["trainable_params"] > 0


ADAPTER_CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "adapter").glob("*.yaml"))
NOTHING_TO_TRAIN = {"whisper_ar": {"linear_probe": "trains nothing in Whisper"}}  # refused, with the reason


@pytest.mark.slow
@pytest.mark.parametrize("method", ADAPTER_CONFIGS)
@pytest.mark.parametrize("task", ["classification", "whisper_ar"])
def test_every_shipped_adapter_config_trains_on_every_task_that_takes_one_or_is_refused_up_front(
        task, method, tiny_whisper_dir, fsdd_folds, tmp_path):
    """One optimiser step moves the trained tensors; a method the task cannot train is a one-line error
    before anything runs."""
    import lightning as L

    from speech_peft.commands.train import build_task, compose_config, run
    from speech_peft.tasks.common import trainable_state

    fold = fsdd_folds / "fold_theo"
    chosen = ([f"encoder.name={tiny_whisper_dir}", "data.labels=[0,1,2]"] if task == "classification" else
              ["task=whisper_ar", "encoder.name=whisper-tiny.en", "data=fsdd_long"])
    cfg = compose_config([*chosen, f"adapter={method}", f"data.train={fold}/train.jsonl", f"data.val={fold}/val.jsonl",
                          "data.batch_size=2", "logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                          "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", f"exp_dir={tmp_path}/exp"])
    refused = NOTHING_TO_TRAIN.get(task, {}).get(method)
    if refused:
        with pytest.raises(ValueError, match=refused):
            build_task(cfg)
        return
    L.seed_everything(cfg.seed)  # as fit seeds before it builds
    start = {k: v.clone() for k, v in trainable_state(build_task(cfg)).items()}
    fit = run(cfg, "fit")
    saved = torch.load(fit["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert saved.keys() == start.keys()
    assert any(not torch.equal(saved[k], v) for k, v in start.items()), f"{method}: one step moved nothing"
    assert (tmp_path / "exp" / "export" / "export.json").is_file()


def test_a_task_that_takes_no_adapter_refuses_adapter_options_and_its_folder_does_not_name_one():
    from speech_peft.commands.train import compose_config

    assert compose_config(["task=diffusion_asr", "data=fsdd_long"]).exp_dir == "exp/fsdd_long/diffusion_asr"
    assert compose_config(["task=whisper_ar", "data=fsdd_long", "adapter=parallel"]).exp_dir == \
        "exp/fsdd_long/whisper_ar/parallel"
    for asked in ("adapter=parallel", "++adapter.r=4"):
        with pytest.raises(ValueError, match=rf"DiffusionASR takes no adapter=.*drop {asked.lstrip('+').split('=')[0]}"):
            compose_config(["task=diffusion_asr", "data=fsdd_long", asked])


def test_a_task_given_another_tasks_data_module_is_refused_at_setup_by_either_front_end():
    """The check runs in the task's ``setup``, which ``speech-peft fit`` and ``speech-peft lightning fit`` both
    reach: the error names the module the task takes and the one it was given."""
    from types import SimpleNamespace

    from speech_peft.data.datamodule import ManifestDataModule
    from speech_peft.errors import UserError

    class Probe(AdapterTask):
        datamodule = ManifestDataModule

    class OtherData:
        pass

    probe = Probe()
    probe._trainer = SimpleNamespace(datamodule=OtherData())
    with pytest.raises(UserError, match="task Probe takes batches of ManifestDataModule, but the data config builds "
                                        "OtherData"):
        probe.setup("fit")
    probe._trainer = SimpleNamespace(datamodule=ManifestDataModule.__new__(ManifestDataModule))
    probe.setup("fit")
