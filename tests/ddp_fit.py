"""Run by test_multiprocess.py (not collected): one ``speech-peft fit`` of a tiny task on 1 or 2 CPU processes
(Lightning DDP or FSDP, gloo), saving what each rank ends with.

    python tests/ddp_fit.py TASK PROCESSES PER_PROCESS_BATCH EPOCHS TINY_WHISPER_DIR FOLDS OUT [OVERRIDE ...]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import torch

from speech_peft.commands.train import compose_config, run

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"
seen: dict[str, list] = {"ids": [], "loss": []}


class Recorder(L.Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        seen["ids"].append(list(batch[0] if isinstance(batch, (list, tuple)) else batch.ids))
        seen["loss"].append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    def on_train_end(self, trainer, module) -> None:
        from torch.distributed.tensor import DTensor

        whole = lambda v: v.full_tensor() if isinstance(v, DTensor) else v  # noqa: E731  (strategy=fsdp)
        seen["state"] = {k: whole(v).detach().clone() for k, v in module.state_dict().items()}
        local = lambda v: v.to_local() if isinstance(v, DTensor) else v  # noqa: E731
        seen["held"] = sum(local(p).numel() for p in module.parameters())  # what this process keeps
        seen["total"] = sum(p.numel() for p in module.parameters())


def overrides(task: str, whisper_dir: str, folds: str, out: str) -> list[str]:
    fold = Path(folds) / "fold_theo"
    if task == "classification":
        return [f"encoder.name={whisper_dir}", "data.labels=[0,1,2]", "adapter=lora", f"data.train={fold}/train.jsonl",
                f"data.val={fold}/val.jsonl"]
    if task == "restoration":
        from speech_peft.data.builders import from_folder
        from speech_peft.data.manifest import write_manifest

        manifest = Path(out) / "clean.jsonl"
        if not manifest.exists():
            write_manifest(from_folder(DATA), manifest)
        return ["task=restore_cleaner", "data=restore", f"encoder.name={whisper_dir}", f"data.train={manifest}",
                f"data.val={manifest}", "data.seconds=0.5", "task.tap_layer=1", "task.bottleneck_dim=8"]
    if task == "diffusion":
        return ["task=diffusion_asr", f"encoder.name={whisper_dir}", "data=fsdd_long", f"data.train={fold}/train.jsonl",
                f"data.val={fold}/val.jsonl", "task.max_length=8", "task.xattn_heads=4", "trainer.limit_val_batches=1"]
    raise ValueError(task)


if __name__ == "__main__":
    task, processes, batch, epochs, whisper_dir, folds, out, *extra = sys.argv[1:]
    torch.set_num_threads(1)
    strategy = ["trainer.devices=2", "trainer.strategy=ddp"] if processes == "2" else []
    cfg = compose_config([*overrides(task, whisper_dir, folds, out), f"data.batch_size={batch}", f"exp_dir={out}/exp",
                          f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false", "logger=none",
                          "callbacks.checkpoint.save_last=true", "+callbacks.recorder._target_=__main__.Recorder",
                          *strategy, *extra])
    run(cfg, "fit")
    torch.save(seen, Path(out) / f"rank{int(os.environ.get('LOCAL_RANK', 0))}.pt")
