"""Batch restoration (``speech-peft restore IN OUT --checkpoint RESTORER_EXPORT``), scaled out with Lightning.

Runs as Lightning ``predict``; with ``devices`` > 1 (and ``num_nodes``) it uses the DDP strategy and
each process takes its own shard of the inputs (``entries[rank::world]``), so every input is
restored exactly once. Outputs are written atomically; outputs that already exist are skipped, so a
killed run resumes. An input that cannot be restored (corrupt, empty, too short, absurdly long: found
from its header before anything is written; NaN samples: found when it is read) is an error naming
it, or with ``skip_bad`` goes to ``OUT/rejects.tsv`` with the reason. Output names and relative
layout mirror the input; OUT may not be inside the input.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from ..adapters import set_active_adapters
from ..data.audio import AudioError, load_audio, probe, save_audio
from ..data.builders import from_folder
from ..data.manifest import Entry, read_manifest
from ..data.rejects import Rejects
from ..fileio import folder_digest, remove_stale_temporaries, write_json
from ..vocoders.restorer import Restorer
from .devices import accelerator_for

SHIPPED_RESTORER = Path(__file__).resolve().parents[1] / "pretrained" / "restorer-whisper-tiny.en"
MARKER = "restorer.json"  # in the output folder: which restorer wrote it


def plan(inputs: str, out_dir: str, skip_bad: bool = False) -> tuple[list[Entry], Path]:
    """Entries to restore (ids: paths relative to the input folder) and the output root."""
    src, out = Path(inputs).resolve(), Path(out_dir).resolve()
    guard = src if src.is_dir() else src.parent
    if out == guard or guard in out.parents:
        raise ValueError(f"output folder {out} lies inside the input {guard}: restore never writes into its input")
    # Every DDP process plans the same list; only the first lists unreadable inputs in the rejects file.
    rejects = out / "rejects.tsv" if _first_process() else None
    if src.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        entries = from_folder(src, skip_bad=skip_bad, rejects_path=rejects)  # ids: relative paths, no suffix
    elif src.suffix == ".jsonl":
        entries = read_manifest(src)
    else:
        raise ValueError(f"{inputs}: give a folder of audio or a .jsonl manifest")
    entries = _restorable(entries, skip_bad, rejects)
    for entry in entries:
        if Path(entry.audio).resolve().parent == out or out in Path(entry.audio).resolve().parents:
            raise ValueError(f"input {entry.audio} lies inside the output folder {out}")
    return entries, out


def _restorable(entries: list[Entry], skip_bad: bool, rejects_path: Path | None) -> list[Entry]:
    """The entries whose audio can be read and is long enough to restore (from the header, so a bad file
    fails the job before it writes anything); without ``skip_bad`` the first bad one is an error naming it."""
    rejects, kept = Rejects(rejects_path), []
    for entry in entries:
        try:
            probe(entry.audio)  # unreadable, empty, too short or absurdly long
        except AudioError as err:
            rejects.skip_or_raise(err, skip_bad)
            continue
        kept.append(entry)
    return kept


class _Shard(Dataset):
    def __init__(self, entries: list[Entry], rejects: Rejects, skip_bad: bool):
        self.entries, self.rejects, self.skip_bad = entries, rejects, skip_bad

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int):
        entry = self.entries[index]
        try:
            return entry, load_audio(entry.audio, 16000)
        except AudioError as err:  # a header that passed but samples that do not (NaN, infinite)
            self.rejects.skip_or_raise(err, self.skip_bad)
            return entry, None


class RestoreTask(L.LightningModule):
    """Lightning ``predict``: restores and writes each file; the model itself is a loaded Restorer."""

    def __init__(self, checkpoint: str, out_dir: str, ledger: bool = False, copy_synthesis: bool = False,
                 student: str | None = None):
        super().__init__()
        self.restorer = Restorer.from_export(checkpoint, student)
        if copy_synthesis:  # the encoder's own features, uncleaned: the vocoder's ceiling on clean input
            set_active_adapters(self.restorer.encoder, [])
        self.out, self.ledger = Path(out_dir), ledger

    def predict_step(self, batch, batch_idx: int) -> int:
        written = 0
        for entry, wave in batch:
            if wave is None:
                continue
            restored = self.restorer(wave[None].to(self.device))[0].cpu()
            save_audio(self.out / f"{entry.id}.wav", restored.clamp(-1, 1), 16000)
            if self.ledger:  # which process wrote what (used to check each input is restored once)
                with open(self.out / f".ledger.{self.global_rank}", "a") as handle:
                    handle.write(f"{entry.id}\n")
            written += 1
        return written


def restore(inputs: str, out_dir: str, checkpoint: str, devices: int = 1, num_nodes: int = 1,
            ledger: bool = False, progress: bool = True, copy_synthesis: bool = False,
            device: str = "cpu", skip_bad: bool = False, student: str | None = None) -> dict[str, int]:
    """``device``: cpu, cuda or auto; ``devices`` processes (DDP when more than one) on each of ``num_nodes``;
    ``skip_bad``: list unreadable inputs in ``OUT/rejects.tsv`` and restore the rest; ``student``: a
    distilled student vocoder in place of HiFi-GAN V1."""
    accelerator = accelerator_for(device)
    target = Path(out_dir).resolve()
    for model_dir in filter(None, (checkpoint, student)):
        root = Path(model_dir).resolve()
        if target == root or root in target.parents:
            raise ValueError(f"output folder {target} lies inside the model folder {root}: outputs there would "
                             "change the files that identify the model; choose another place")
    entries, out = plan(inputs, out_dir, skip_bad)
    out.mkdir(parents=True, exist_ok=True)
    if _first_process():  # before any other process starts: temporaries of a killed run go
        _claim(out, checkpoint, copy_synthesis, student)
        remove_stale_temporaries(out)
    todo = [e for e in entries if not (out / f"{e.id}.wav").exists()]  # resume: finished outputs stay
    rejects = Rejects(out / "rejects.tsv")
    task = RestoreTask(checkpoint, str(out), ledger, copy_synthesis, student)
    strategy = "ddp" if devices * num_nodes > 1 else "auto"
    trainer = L.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy, logger=False,
                        enable_progress_bar=progress, use_distributed_sampler=False, enable_checkpointing=False)
    shard = todo[trainer.global_rank::trainer.world_size]
    loader = DataLoader(_Shard(shard, rejects, skip_bad), batch_size=1, collate_fn=list)
    written = trainer.predict(task, loader, return_predictions=True) or []
    return {"inputs": len(entries), "skipped_existing": len(entries) - len(todo), "restored_here": sum(written)}


def restorer_identity(checkpoint: str | Path, copy_synthesis: bool, student: str | Path | None = None) -> str:
    """A hash of the restorer's files (and the student's), and the mode: outputs of one identity never
    mix with another's."""
    return folder_digest([checkpoint, student] if student is not None else [checkpoint], str(copy_synthesis).encode())


def _claim(out: Path, checkpoint: str, copy_synthesis: bool, student: str | None = None) -> None:
    """Record which restorer writes ``out``; a resumed run must be the same one, so a folder never holds
    the outputs of two restorers (kept outputs are skipped, so they would silently stay)."""
    marker = out / MARKER
    identity = {"restorer": restorer_identity(checkpoint, copy_synthesis, student),
                "checkpoint": str(Path(checkpoint).resolve()), "copy_synthesis": copy_synthesis,
                "student": str(Path(student).resolve()) if student else None}
    if marker.exists():
        before = json.loads(marker.read_text())
        if before.get("restorer") != identity["restorer"]:
            raise ValueError(f"{out} holds outputs of another restorer ({before.get('checkpoint')}"
                             f"{', copy-synthesis' if before.get('copy_synthesis') else ''}): "
                             "choose a new output folder, or move that one away")
        return
    write_json(marker, identity)


def shipped_restorer() -> Path:
    """The restorer that ships with the package (trained by ``recipes/speech_samples/restore``)."""
    if not (SHIPPED_RESTORER / "export.json").is_file():
        raise FileNotFoundError(f"no shipped restorer at {SHIPPED_RESTORER}: give --checkpoint RESTORER_EXPORT")
    return SHIPPED_RESTORER


def _first_process() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
