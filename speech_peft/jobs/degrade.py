"""Degraded copies of clean audio on disk (``speech-peft degrade``), and a manifest pairing them.

Each output keeps the input's relative path and is written atomically, so a killed run leaves no
half-written file, and existing outputs are kept (a rerun resumes). The output folder may not be the
input folder or inside it. A bad input (unreadable, empty, too short, NaN, absurdly long) stops the run
naming it, or with ``skip_bad`` goes to ``OUT/rejects.tsv`` with the reason and the rest are degraded.
"""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from ..data.audio import AudioError, load_audio, save_audio
from ..data.degrade import DegradeConfig, Degrader
from ..data.inputs import gather_inputs
from ..data.manifest import Entry, write_manifest
from ..data.rejects import Rejects
from ..errors import UserError


def degrade_to_disk(inputs: list[str], out_dir: str, config: DegradeConfig, seed: int = 0,
                    sample_rate: int = 16000, skip_bad: bool = False) -> Path:
    out = Path(out_dir).resolve()
    for item in inputs:
        src = Path(item).resolve()
        root = src if src.is_dir() else src.parent
        if out == root or root in out.parents:
            raise UserError(f"output folder {out} lies inside the input {root}; choose another place")
    rejects = Rejects(out / "rejects.tsv" if skip_bad else None)
    entries = gather_inputs(inputs, skip_bad, rejects.path)
    degrader = Degrader(config, sample_rate, seed)
    written = []
    for index, entry in enumerate(tqdm(entries, desc="degrade", unit="file")):
        target = out / f"{entry.id}.wav"
        if not target.exists():
            try:
                wave = load_audio(entry.audio, sample_rate)
            except AudioError as err:
                rejects.skip_or_raise(err, skip_bad)
                continue
            save_audio(target, degrader(wave, index), sample_rate)
        written.append(Entry(entry.id, str(target), entry.duration, sample_rate, text=entry.text,
                             label=entry.label, speaker=entry.speaker, clean_audio=str(Path(entry.audio).resolve())))
    return write_manifest(written, out / "degraded.jsonl")
