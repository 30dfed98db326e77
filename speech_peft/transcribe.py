"""Batch transcription of files, folders or manifests with a Whisper model (optionally adapted)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .data.builders import AUDIO_SUFFIXES, from_folder
from .data.dataset import AudioDataset, LengthBucketSampler, collate
from .data.manifest import Entry, read_manifest


def gather_inputs(inputs: list[str]) -> list[Entry]:
    """Entries from audio files, folders of audio, and ``.jsonl`` manifests, in the order given."""
    entries: list[Entry] = []
    for item in inputs:
        path = Path(item)
        if path.suffix == ".jsonl":
            entries += read_manifest(path)
        elif path.is_dir():
            entries += from_folder(path)
        elif path.suffix.lower() in AUDIO_SUFFIXES or path.exists():
            entries.append(Entry(id=path.stem, audio=str(path), duration=0.0, sample_rate=0))
        else:
            raise FileNotFoundError(f"{path}: no such file, folder or manifest")
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"the inputs hold the same id more than once: {dup[:5]}")
    return entries


def transcribe_entries(entries: list[Entry], model: str = "whisper-tiny.en", adapter: str | None = None,
                       batch_size: int = 8, beam_size: int = 1, skip_bad: bool = False,
                       rejects_path: str | None = None, progress: bool = True,
                       decode: dict | None = None) -> dict[str, str]:
    """Transcripts by id. ``model``: a Whisper name or directory, or a diffusion ASR export (then
    ``decode`` holds its decoding options: candidates, schedule, rule, remask, seed)."""
    if (Path(model) / "diffusion_asr.json").is_file():
        from .tasks.diffusion_asr import load_diffusion_asr

        diffusion = load_diffusion_asr(model, decode)
        return _run(entries, lambda b: diffusion.transcribe(b.waveforms, b.lengths), batch_size, skip_bad,
                    rejects_path, progress)

    from .asr.whisper_ar import WhisperTranscriber
    from .encoders.whisper import load_whisper

    bundle = load_whisper(model)
    if adapter is not None:
        import copy
        import dataclasses

        from .adapters import load_adapter

        adapted = copy.deepcopy(bundle.model)
        load_adapter(adapted, adapter)
        bundle = dataclasses.replace(bundle, model=adapted)
    transcriber = WhisperTranscriber(bundle)
    return _run(entries, lambda b: transcriber.transcribe(b.waveforms, beam_size), batch_size, skip_bad,
                rejects_path, progress)


def _run(entries: list[Entry], transcribe, batch_size: int, skip_bad: bool, rejects_path: str | None,
         progress: bool) -> dict[str, str]:
    data = AudioDataset(entries, 16000, skip_bad=skip_bad, rejects_path=rejects_path)
    durations = [e.duration for e in entries]
    sampler = LengthBucketSampler(durations, batch_size, shuffle=False)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=collate)
    results: dict[str, str] = {}
    with torch.inference_mode():
        for batch in tqdm(loader, desc="transcribe", unit="batch", disable=not progress):
            if batch is None:
                continue
            for uid, text in zip(batch.ids, transcribe(batch)):
                results[uid] = text
    return {e.id: results[e.id] for e in entries if e.id in results}


def write_tsv(rows: dict[str, str], out: str | os.PathLike) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("".join(f"{k}\t{' '.join(v.split())}\n" for k, v in rows.items()), encoding="utf-8")
    os.replace(tmp, out)
