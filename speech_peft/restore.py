"""``speech-peft restore IN OUT --checkpoint DIR``: batch restoration that scales out with Lightning.

A restorer directory holds ``restorer.json`` (encoder, tap layer, vocoder config), ``cleaner/`` (the
cleaner's adapters in the adapter core's format) and ``vocoder.safetensors``.

Runs as Lightning ``predict``; with ``--devices N`` (and ``--num-nodes``) it uses the DDP strategy
and each process takes its own shard of the inputs (``entries[rank::world]``), so every input is
restored exactly once. Each output is written to a temporary name and renamed; outputs that already
exist are skipped, so a killed run resumes; unreadable inputs go to ``OUT/rejects.tsv``; output
names and relative layout mirror the input; OUT may not be inside the input.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .adapters import load_adapter, save_adapter, set_active_adapters
from .data.audio import AudioError, load_audio, save_audio
from .data.builders import from_folder
from .data.manifest import Entry, read_manifest
from .data.rejects import Rejects
from .encoders.whisper import load_whisper_encoder
from .vocoders.wavefit import WaveFit, WaveFitConfig


class Restorer(nn.Module):
    def __init__(self, encoder: nn.Module, vocoder: WaveFit, meta: dict):
        super().__init__()
        self.encoder, self.vocoder, self.meta = encoder, vocoder, meta

    @torch.inference_mode()
    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        hop = self.vocoder.config.hop
        feats = self.encoder(waves, lengths).hidden
        torch.manual_seed(0)  # the vocoder starts from noise: fixed, so a file restores the same every time
        return self.vocoder(feats, return_all=False)[-1][:, : waves.shape[-1] // hop * hop]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_adapter(self.encoder, directory / "cleaner", name="cleaner", base_model_name=self.meta["encoder_name"])
        save_file({k: v.contiguous() for k, v in self.vocoder.state_dict().items()}, directory / "vocoder.safetensors")
        (directory / "restorer.json").write_text(json.dumps(self.meta, indent=2))
        return directory


def build_restorer(encoder_name: str, tap_layer: int, vocoder: WaveFit, cleaner_encoder: nn.Module | None = None) -> Restorer:
    encoder = cleaner_encoder if cleaner_encoder is not None else load_whisper_encoder(encoder_name, tap_layer=tap_layer)
    meta = {"encoder_name": encoder_name, "tap_layer": tap_layer, "vocoder": vocoder.config.to_dict()}
    return Restorer(encoder.eval(), vocoder.eval(), meta)


def load_restorer(directory: str | Path) -> Restorer:
    directory = Path(directory)
    for name in ("restorer.json", "vocoder.safetensors", "cleaner"):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory} is not a restorer checkpoint: {name} is missing")
    meta = json.loads((directory / "restorer.json").read_text())
    encoder = load_whisper_encoder(meta["encoder_name"], tap_layer=meta["tap_layer"])
    load_adapter(encoder, directory / "cleaner")
    vocoder = WaveFit(WaveFitConfig(**meta["vocoder"]))
    vocoder.load_state_dict(load_file(directory / "vocoder.safetensors"), strict=True)
    return Restorer(encoder.eval(), vocoder.eval(), meta)


def plan(inputs: str, out_dir: str) -> tuple[list[Entry], Path]:
    """Entries to restore (ids: paths relative to the input folder) and the output root."""
    src, out = Path(inputs).resolve(), Path(out_dir).resolve()
    guard = src if src.is_dir() else src.parent
    if out == guard or guard in out.parents:
        raise ValueError(f"output folder {out} lies inside the input {guard}: restore never writes into its input")
    # Every DDP process plans the same list; only the first lists unreadable inputs in the rejects file.
    first = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    rejects = out / "rejects.tsv" if first else None
    if src.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        entries = from_folder(src, skip_bad=True, rejects_path=rejects)  # ids: relative paths, no suffix
    elif src.suffix == ".jsonl":
        entries = read_manifest(src)
    else:
        raise ValueError(f"{inputs}: give a folder of audio or a .jsonl manifest")
    for entry in entries:
        if Path(entry.audio).resolve().parent == out or out in Path(entry.audio).resolve().parents:
            raise ValueError(f"input {entry.audio} lies inside the output folder {out}")
    return entries, out


class _Shard(Dataset):
    def __init__(self, entries: list[Entry], out: Path, rejects: Rejects):
        self.entries, self.out, self.rejects = entries, out, rejects

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int):
        entry = self.entries[index]
        try:
            return entry, load_audio(entry.audio, 16000)
        except AudioError as err:
            self.rejects.add(err.path, err.problem)
            return entry, None


class RestoreTask(L.LightningModule):
    """Lightning ``predict``: restores and writes each file; the model itself is a loaded Restorer."""

    def __init__(self, checkpoint: str, out_dir: str, ledger: bool = False, copy_synthesis: bool = False):
        super().__init__()
        self.restorer = load_restorer(checkpoint)
        if copy_synthesis:  # the encoder's own features, uncleaned: the vocoder's ceiling on clean input
            set_active_adapters(self.restorer.encoder, [])
        self.out, self.ledger = Path(out_dir), ledger

    def on_predict_start(self) -> None:
        for stale in self.out.rglob(f".*.{self.global_rank}.tmp.wav"):  # left by a killed run of this rank
            stale.unlink()

    def predict_step(self, batch, batch_idx: int) -> int:
        written = 0
        for entry, wave in batch:
            if wave is None:
                continue
            target = self.out / f"{entry.id}.wav"
            restored = self.restorer(wave[None].to(self.device))[0].cpu()
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{self.global_rank}.tmp.wav")
            save_audio(tmp, restored.clamp(-1, 1), 16000)
            os.replace(tmp, target)
            if self.ledger:  # which process wrote what (used to check each input is restored once)
                with open(self.out / f".ledger.{self.global_rank}", "a") as handle:
                    handle.write(f"{entry.id}\n")
            written += 1
        return written


def restore(inputs: str, out_dir: str, checkpoint: str, devices: int = 1, num_nodes: int = 1,
            ledger: bool = False, progress: bool = True, copy_synthesis: bool = False) -> dict[str, int]:
    entries, out = plan(inputs, out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = [e for e in entries if not (out / f"{e.id}.wav").exists()]  # resume: finished outputs stay
    rejects = Rejects(out / "rejects.tsv")
    task = RestoreTask(checkpoint, str(out), ledger, copy_synthesis)
    strategy = "ddp" if devices * num_nodes > 1 else "auto"
    trainer = L.Trainer(accelerator="cpu", devices=devices, num_nodes=num_nodes, strategy=strategy, logger=False,
                        enable_progress_bar=progress, use_distributed_sampler=False, enable_checkpointing=False)
    shard = todo[trainer.global_rank::trainer.world_size]
    loader = DataLoader(_Shard(shard, out, rejects), batch_size=1, collate_fn=list)
    written = trainer.predict(task, loader, return_predictions=True) or []
    return {"inputs": len(entries), "skipped_existing": len(entries) - len(todo), "restored_here": sum(written)}
