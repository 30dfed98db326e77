"""Run by test_adapter_family_routed.py (not collected): ``speech-peft fit``'s own code path under Lightning's
DDP on 2 CPU processes, recording every merge of the rank-parallel adapter on each rank.

    python tests/ddp_rank_parallel.py hd_pissa|lte TINY_WHISPER_DIR FOLDS OUT
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import torch

from speech_peft.adapters import rank_parallel
from speech_peft.commands.train import compose_config, run

history: dict[str, list] = {"locals": [], "totals": []}


class Recorder(L.Callback):
    """What each rank holds when training ends (before the best checkpoint is read back)."""

    def on_train_start(self, trainer, module) -> None:
        history["first_A"] = rank_parallel.rank_parallel_layers(module)[0][1].lora_A.weight.detach().clone()
        history["ignored"] = sorted(trainer.strategy.model.parameters_to_ignore)

    def on_train_end(self, trainer, module) -> None:
        history["merged"] = rank_parallel.rank_parallel_layers(module)[0][1].merged.detach().clone()
        history["head"] = module.head.weight.detach().clone()


def _recording(merge):
    def recorded(model):
        pairs = merge(model)
        history["locals"].append(pairs[0][0].clone())
        history["totals"].append(pairs[0][1].clone())
        return pairs
    return recorded


if __name__ == "__main__":
    method, whisper_dir, folds, out = sys.argv[1:5]
    rank_parallel.merge_rank_updates = _recording(rank_parallel.merge_rank_updates)
    torch.set_num_threads(1)
    cfg = compose_config([
        f"encoder.name={whisper_dir}", "data.labels=[0,1,2]", f"adapter={method}", "adapter.r=2",
        f"data.train={folds}/fold_theo/train.jsonl", f"data.val={folds}/fold_theo/val.jsonl",
        f"data.test={folds}/fold_theo/test.jsonl", f"exp_dir={out}/exp", "data.batch_size=4",
        "trainer.max_epochs=2", "trainer.devices=2", "trainer.strategy=ddp", "trainer.enable_progress_bar=false",
        "+callbacks.recorder._target_=__main__.Recorder", *(["adapter.merge_every=2"] if method == "lte" else [])])
    run(cfg, "fit")
    torch.save(history, Path(out) / f"rank{int(os.environ.get('LOCAL_RANK', 0))}.pt")
