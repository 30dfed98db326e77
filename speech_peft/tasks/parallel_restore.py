"""``speech-peft restore --devices N [--num-nodes M]``: the batch restoration of ``jobs/restore.py`` in
several processes, started and joined by Lightning's DDP strategy; each process restores its own shard of
the inputs (``todo[rank::world]``)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.manifest import Entry
from ..data.rejects import Rejects
from ..jobs.devices import accelerator_for
from ..jobs.restore import RestorerChoice, prepare, read_input, restore_one


class _Shard(Dataset):
    """One process's inputs; a process left without any (fewer inputs than processes) gets one empty item,
    as Lightning refuses a rank whose loader is empty."""

    def __init__(self, entries: list[Entry], rejects: Rejects, skip_bad: bool):
        self.entries, self.rejects, self.skip_bad = entries, rejects, skip_bad

    def __len__(self) -> int:
        return max(1, len(self.entries))

    def __getitem__(self, index: int):
        if not self.entries:
            return None, None
        entry = self.entries[index]
        return entry, read_input(entry, self.rejects, self.skip_bad)


class RestorePrediction(L.LightningModule):
    """Lightning ``predict``: restores and writes each input of this process's shard."""

    def __init__(self, restorer: nn.Module, out_dir: str, ledger: bool = False):
        super().__init__()
        self.restorer, self.out, self.ledger = restorer, Path(out_dir), ledger

    def predict_step(self, batch, batch_idx: int) -> int:
        written = 0
        for entry, wave in batch:
            if wave is not None:
                restore_one(self.restorer, entry, wave, self.out, self.global_rank if self.ledger else None)
                written += 1
        return written


def restore_in_processes(inputs: str, out_dir: str, choice: RestorerChoice, devices: int = 2, num_nodes: int = 1,
                         ledger: bool = False, progress: bool = True, device: str = "cpu",
                         skip_bad: bool = False) -> dict[str, int]:
    """``devices`` processes on each of ``num_nodes``; the other arguments as ``jobs.restore.restore``'s."""
    restorer = choice.load()  # refused options claim no folder
    entries, todo, out = prepare(inputs, out_dir, choice, skip_bad)
    task = RestorePrediction(restorer, str(out), ledger)
    trainer = L.Trainer(accelerator=accelerator_for(device), devices=devices, num_nodes=num_nodes, strategy="ddp",
                        logger=False, enable_progress_bar=progress, use_distributed_sampler=False,
                        enable_checkpointing=False)
    shard = todo[trainer.global_rank::trainer.world_size]
    loader = DataLoader(_Shard(shard, Rejects(out / "rejects.tsv"), skip_bad), batch_size=1, collate_fn=list)
    written = trainer.predict(task, loader, return_predictions=True) or []
    return {"inputs": len(entries), "skipped_existing": len(entries) - len(todo), "restored_here": sum(written)}
