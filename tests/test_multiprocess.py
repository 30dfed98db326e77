"""Data-parallel training on 2 CPU processes (Lightning DDP, gloo) for classification, restoration and
diffusion ASR: each process takes its slice of the global batches a single process would take, so the
two-process run follows the one-process run at the same global batch; a checkpoint resumes on another
process count."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}


def _fit(task: str, processes: int, batch: int, epochs: int, tiny: str, folds: Path, out: Path, *extra: str) -> list:
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_fit.py"), task, str(processes), str(batch),
                           str(epochs), tiny, str(folds), str(out), *extra], capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(processes)]


def _trained(state: dict) -> dict:
    return {k: v for k, v in state.items() if ".adapters." in k or k.startswith(("head.", "ctc.", "decoder."))}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "restoration"])
def test_two_processes_at_half_the_batch_follow_one_process_step_for_step(task, tiny_whisper_dir, fsdd_folds, tmp_path):
    # Training sets of 12 (restoration) and 6 items (classification), global batch 2: no short last batch.
    one = _fit(task, 1, 2, 2, tiny_whisper_dir, fsdd_folds, tmp_path / "one")[0]
    two = _fit(task, 2, 1, 2, tiny_whisper_dir, fsdd_folds, tmp_path / "two")
    steps = len(one["ids"])
    assert steps >= 4 and all(len(rank["ids"]) == steps for rank in two)
    for step in range(steps):  # each global batch is split between the processes
        assert sorted(two[0]["ids"][step] + two[1]["ids"][step]) == sorted(one["ids"][step])
        assert not set(two[0]["ids"][step]) & set(two[1]["ids"][step])
        mean = (two[0]["loss"][step] + two[1]["loss"][step]) / 2
        assert mean == pytest.approx(one["loss"][step], rel=1e-4, abs=1e-5)
    for key in _trained(one["state"]):
        torch.testing.assert_close(two[0]["state"][key], two[1]["state"][key], rtol=0, atol=0)  # replicas equal


@pytest.mark.slow
def test_diffusion_asr_on_two_processes_keeps_replicas_equal_and_its_loss_near_one_process(
        whisper_with_tokenizer, fsdd_folds, tmp_path):
    one = _fit("diffusion", 1, 2, 2, whisper_with_tokenizer, fsdd_folds, tmp_path / "one")[0]
    two = _fit("diffusion", 2, 1, 2, whisper_with_tokenizer, fsdd_folds, tmp_path / "two")
    for step in range(len(one["ids"])):
        assert sorted(two[0]["ids"][step] + two[1]["ids"][step]) == sorted(one["ids"][step])
    for key in _trained(one["state"]):
        torch.testing.assert_close(two[0]["state"][key], two[1]["state"][key], rtol=0, atol=0)
    # Masks are drawn per process, so the curves differ by the draw, not by the data or the step size.
    single, pair = sum(one["loss"]) / len(one["loss"]), sum(a + b for a, b in zip(two[0]["loss"], two[1]["loss"])) / 2 / len(one["loss"])
    assert pair == pytest.approx(single, rel=0.25)


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_on_one_process_where_one_process_would_be(tiny_whisper_dir, fsdd_folds,
                                                                                     tmp_path):
    whole = _fit("classification", 1, 2, 3, tiny_whisper_dir, fsdd_folds, tmp_path / "whole")[0]
    moved = _fit("classification", 2, 1, 2, tiny_whisper_dir, fsdd_folds, tmp_path / "moved")
    last = tmp_path / "moved" / "exp" / "checkpoints" / "last.ckpt"
    resumed = _fit("classification", 1, 2, 3, tiny_whisper_dir, fsdd_folds, tmp_path / "moved", f"ckpt_path={last}")[0]
    per_epoch = len(whole["ids"]) // 3
    assert resumed["ids"] == whole["ids"][2 * per_epoch:]  # the third epoch's batches, as one process draws them
    pairs = [(a + b) / 2 for a, b in zip(moved[0]["loss"], moved[1]["loss"])]
    assert pairs + resumed["loss"] == pytest.approx(whole["loss"], rel=1e-3, abs=1e-4)


@pytest.mark.slow
def test_gradient_accumulation_over_two_half_batches_follows_the_full_batch(tiny_whisper_dir, fsdd_folds, tmp_path):
    full = _fit("classification", 1, 2, 2, tiny_whisper_dir, fsdd_folds, tmp_path / "full")[0]
    halves = _fit("classification", 1, 1, 2, tiny_whisper_dir, fsdd_folds, tmp_path / "halves",
                  "trainer.accumulate_grad_batches=2")[0]
    assert len(halves["ids"]) == 2 * len(full["ids"])
    for step, batch in enumerate(full["ids"]):  # one optimiser step: the full batch's items, in two halves
        assert sorted(halves["ids"][2 * step] + halves["ids"][2 * step + 1]) == sorted(batch)
        accumulated = halves["loss"][2 * step] + halves["loss"][2 * step + 1]  # Lightning reports each / 2
        assert accumulated == pytest.approx(full["loss"][step], rel=1e-4, abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "restoration"])
def test_fully_sharded_processes_each_hold_half_the_model_and_follow_one_process_step_for_step(
        task, tiny_whisper_dir, fsdd_folds, tmp_path):
    one = _fit(task, 1, 2, 2, tiny_whisper_dir, fsdd_folds, tmp_path / "one")[0]
    two = _fit(task, 2, 1, 2, tiny_whisper_dir, fsdd_folds, tmp_path / "two", "trainer.strategy=fsdp")
    for rank in two:  # every parameter, frozen or trained, is split between the processes
        assert rank["held"] == pytest.approx(rank["total"] / 2, rel=0.01)
    for step in range(len(one["ids"])):
        assert sorted(two[0]["ids"][step] + two[1]["ids"][step]) == sorted(one["ids"][step])
        mean = (two[0]["loss"][step] + two[1]["loss"][step]) / 2
        assert mean == pytest.approx(one["loss"][step], rel=1e-4, abs=1e-5)
    for key in _trained(one["state"]):
        torch.testing.assert_close(two[0]["state"][key], one["state"][key], rtol=0, atol=1e-3)  # Adam: rounding


@pytest.mark.slow
def test_fully_sharded_diffusion_asr_trains_on_two_processes_near_one_process(whisper_with_tokenizer, fsdd_folds,
                                                                              tmp_path):
    one = _fit("diffusion", 1, 2, 2, whisper_with_tokenizer, fsdd_folds, tmp_path / "one")[0]
    two = _fit("diffusion", 2, 1, 2, whisper_with_tokenizer, fsdd_folds, tmp_path / "two", "trainer.strategy=fsdp")
    assert all(rank["held"] == pytest.approx(rank["total"] / 2, rel=0.01) for rank in two)
    for step in range(len(one["ids"])):
        assert sorted(two[0]["ids"][step] + two[1]["ids"][step]) == sorted(one["ids"][step])
    # Masks are drawn per process, as under DDP: the curves differ by the draw only.
    single, pair = sum(one["loss"]) / len(one["loss"]), sum(a + b for a, b in zip(two[0]["loss"], two[1]["loss"])) / 2 / len(one["loss"])
    assert pair == pytest.approx(single, rel=0.25)
    assert (tmp_path / "two" / "exp" / "export").is_dir()


@pytest.mark.slow
def test_a_fully_sharded_checkpoint_resumes_on_one_process_where_one_process_would_be(tiny_whisper_dir, fsdd_folds,
                                                                                      tmp_path):
    whole = _fit("classification", 1, 2, 3, tiny_whisper_dir, fsdd_folds, tmp_path / "whole")[0]
    sharded = _fit("classification", 2, 1, 2, tiny_whisper_dir, fsdd_folds, tmp_path / "moved", "trainer.strategy=fsdp")
    last = tmp_path / "moved" / "exp" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert set(saved["state_dict"]) == set(_trained(whole["state"]))  # whole trained tensors, nothing frozen
    resumed = _fit("classification", 1, 2, 3, tiny_whisper_dir, fsdd_folds, tmp_path / "moved", f"ckpt_path={last}")[0]
    per_epoch = len(whole["ids"]) // 3
    assert resumed["ids"] == whole["ids"][2 * per_epoch:]
    pairs = [(a + b) / 2 for a, b in zip(sharded[0]["loss"], sharded[1]["loss"])]
    assert pairs + resumed["loss"] == pytest.approx(whole["loss"], rel=1e-3, abs=1e-4)


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_fully_sharded_on_two_processes(tiny_whisper_dir, fsdd_folds, tmp_path):
    whole = _fit("classification", 1, 2, 3, tiny_whisper_dir, fsdd_folds, tmp_path / "whole")[0]
    _fit("classification", 1, 2, 2, tiny_whisper_dir, fsdd_folds, tmp_path / "moved")
    last = tmp_path / "moved" / "exp" / "checkpoints" / "last.ckpt"
    resumed = _fit("classification", 2, 1, 3, tiny_whisper_dir, fsdd_folds, tmp_path / "moved", "trainer.strategy=fsdp",
                   f"ckpt_path={last}")
    per_epoch = len(whole["ids"]) // 3
    pairs = [(a + b) / 2 for a, b in zip(resumed[0]["loss"], resumed[1]["loss"])]
    assert pairs == pytest.approx(whole["loss"][2 * per_epoch:], rel=1e-3, abs=1e-4)  # Adam moments came along


def _one_process_mesh():
    import socket

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    return init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))


def test_sharding_keeps_the_whole_weights_fingerprint_and_refuses_rank_parallel_adapters(tiny_whisper_dir):
    import torch.distributed as dist

    from speech_peft.tasks.classification import AudioClassifier
    from speech_peft.tasks.sharding import is_sharded, shard_module

    try:
        mesh = _one_process_mesh()
        plain = AudioClassifier(["0", "1"], "whisper", tiny_whisper_dir, {"method": "lora"})
        plain._device_mesh = mesh
        shard_module(plain)
        assert is_sharded(plain) and plain.frozen_fingerprint  # taken from the whole weights, before sharding
        ranked = AudioClassifier(["0", "1"], "whisper", tiny_whisper_dir,
                                 {"method": "hd_pissa", "r": 2, "target_roles": ["attn.q"]})
        ranked._device_mesh = mesh
        with pytest.raises(ValueError, match="strategy=ddp"):
            shard_module(ranked)
    finally:
        dist.destroy_process_group()


def test_a_task_that_holds_its_layer_list_itself_shards_each_layer_once():
    import lightning as L
    import torch.distributed as dist
    from torch import nn

    from speech_peft.tasks.sharding import is_sharded, shard_module

    class Stack(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
            self.head = nn.Linear(4, 2)

    try:
        task = Stack()
        task._device_mesh = _one_process_mesh()
        shard_module(task)  # the list's layers are units and parts both: sharded twice, fully_shard refuses
        assert is_sharded(task)
    finally:
        dist.destroy_process_group()
