"""Batch transcription of entries with Whisper (optionally adapted) or a trained ASR export."""
from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..adapters import load_adapter
from ..asr.whisper_ar import WhisperTranscriber
from ..data.dataset import AudioDataset, Batch, LengthBucketSampler, collate
from ..data.manifest import Entry
from ..encoders.whisper import load_whisper
from ..exports import INFO, read_export_info
from ..fileio import write_text
from ..tasks.asr import EXPORT_KIND as AR_EXPORT
from ..tasks.asr import WhisperARFineTune
from ..tasks.diffusion_asr import EXPORT_KIND as DIFFUSION_EXPORT
from ..tasks.diffusion_asr import DiffusionASR
from ..tasks.multitask_asr import EXPORT_KIND as FUSION_EXPORT
from ..tasks.multitask_asr import WhisperAdapterFusion
from .devices import torch_device


def load_transcriber(model: str = "whisper-tiny.en", adapter: str | None = None, beam_size: int = 1,
                     decode: dict | None = None, device: str = "cpu") -> Callable[[Batch], list[str]]:
    """``model``: a Whisper name or directory (``adapter``: a saved adapter to place on it, ``beam_size``
    1 for greedy), or an ASR export (``export.json``: AR + adapter, or diffusion with ``decode``
    options). Options that do not apply to the model are refused, never ignored."""
    target = torch_device(device)
    if (Path(model) / INFO).is_file():
        kind = read_export_info(model, (AR_EXPORT, DIFFUSION_EXPORT, FUSION_EXPORT))["kind"]
        if adapter is not None:
            raise ValueError(f"{model} is an ASR export with its own adapter: --adapter does not apply")
        if kind == DIFFUSION_EXPORT:
            if beam_size != 1:
                raise ValueError(f"{model} is a diffusion ASR export: --beam-size does not apply (use --candidates)")
            diffusion = DiffusionASR.from_export(model, decode).to(target)
            return lambda b: diffusion.transcribe(b.waveforms.to(target), b.lengths.to(target))
        if kind == FUSION_EXPORT:  # task-ID-free: each utterance routed by what it sounds like
            fused = WhisperAdapterFusion.from_export(model).to(target)
            return lambda b: fused.transcribe(b.waveforms.to(target), b.lengths.to(target), beam_size=beam_size)
        ar = WhisperARFineTune.from_export(model).to(target)
        return lambda b: ar.transcribe(b.waveforms.to(target), beam_size=beam_size)
    if decode is not None:
        raise ValueError(f"{model} is a Whisper model: diffusion decoding options (--candidates, --schedule, "
                         "--rule, --remask) do not apply")
    bundle = load_whisper(model)
    if adapter is not None or target.type != "cpu":  # the loaded model is shared: adapt or move a copy
        private = copy.deepcopy(bundle.model).to(target)
        if adapter is not None:
            load_adapter(private, adapter)
        bundle = dataclasses.replace(bundle, model=private)
    transcriber = WhisperTranscriber(bundle)
    return lambda b: transcriber.transcribe(b.waveforms.to(target), beam_size)


def transcribe_entries(entries: list[Entry], model: str = "whisper-tiny.en", adapter: str | None = None,
                       batch_size: int = 8, beam_size: int = 1, skip_bad: bool = False,
                       rejects_path: str | None = None, progress: bool = True, decode: dict | None = None,
                       device: str = "cpu") -> dict[str, str]:
    """Transcripts by id, in the entries' order (skipped inputs are listed in ``rejects_path``)."""
    transcribe = load_transcriber(model, adapter, beam_size, decode, device)
    data = AudioDataset(entries, 16000, skip_bad=skip_bad, rejects_path=rejects_path)
    sampler = LengthBucketSampler([e.duration for e in entries], batch_size, shuffle=False)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=collate)
    results: dict[str, str] = {}
    with torch.inference_mode():
        for batch in tqdm(loader, desc="transcribe", unit="batch", disable=not progress):
            if batch is None:
                continue
            for uid, text in zip(batch.ids, transcribe(batch)):
                results[uid] = text
    return {e.id: results[e.id] for e in entries if e.id in results}


def write_tsv(rows: dict[str, str], out: str | os.PathLike) -> Path:
    return write_text(out, "".join(f"{k}\t{' '.join(v.split())}\n" for k, v in rows.items()))
