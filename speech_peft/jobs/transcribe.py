"""Batch transcription of recordings of any length with Whisper (optionally adapted, one adapter per
utterance if the manifest says so), a trained ASR export, or Whisper served by CTranslate2.

Each recording is planned (``asr.longform``: one window up to 30 s, voice-activity windows beyond), windows
of many recordings are decoded together in batches of similar length, and each recording's transcript is
assembled from its windows. Bad inputs stop the run naming the file, or with ``skip_bad`` go to the rejects
file with the reason while the rest are transcribed. The module loads torch only for a torch decoder.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from ..asr.hypothesis import Hypothesis
from ..asr.longform import Plan, Transcript, assemble, plan_recording
from ..asr.vad import VADConfig
from ..data.audio import AudioError, read_audio
from ..data.manifest import Entry
from ..data.rejects import Rejects
from ..decoding import flags as decode_flags
from ..errors import UserError
from ..exports import INFO, read_export_info
from ..fileio import write_text

MAX_SECONDS = 4 * 3600.0  # a recording this long is read whole into memory (about 0.9 GB)
BACKENDS = ("torch", "ctranslate2")
# (waves (B, samples) float32, lengths (B,), each row's adapter or None[, each row's language or None])
# -> one scored hypothesis per row
Decoder = Callable[..., list[Hypothesis]]


def load_decoder(model: str = "whisper-tiny.en", adapter: str | None = None, beam_size: int = 1,
                 decode: dict | None = None, device: str = "cpu", compute_type: str = "float32",
                 row_adapters: list[str] = (), backend: str = "torch", language: str | None = None,
                 row_languages: list[str] = ()) -> Decoder:
    """``model``: a Whisper name or directory (``adapter``: a saved adapter to place on it; ``row_adapters``:
    saved adapters that utterances may name one by one), or an ASR export (``export.json``); with
    ``backend="ctranslate2"`` a CTranslate2 Whisper directory (a base model or ``speech-peft export``'s
    output). ``language``: a code, ``auto`` (detected per window), or None: detected by multilingual Whisper
    models, English for English-only ones, an AR export's own language; a row's language (the manifest's
    ``language`` field) comes first; ``row_languages``: the languages utterances may name, checked here.
    Diffusion and fusion exports and the CTranslate2 backend transcribe English. Options that do not apply
    to the model are refused, never ignored."""
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    foreign = sorted({code for code in (language, *row_languages) if code not in (None, "en")})
    if backend == "ctranslate2":
        if foreign:
            raise UserError(f"--backend ctranslate2 transcribes English: languages {foreign} (--language or the "
                             "manifest's language field) do not apply")
        return _ctranslate2_decoder(model, adapter, beam_size, decode, device, compute_type, row_adapters)
    import copy

    import torch

    from ..adapters import load_adapter
    from ..adapters.mixed_batch import set_row_adapters
    from ..asr.specials import MULTILINGUAL_VOCAB
    from ..asr.whisper_ar import WhisperTranscriber
    from ..encoders.whisper import load_whisper
    from .devices import torch_device

    target = torch_device(device)
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(target)  # noqa: E731
    if (Path(model) / INFO).is_file():  # a trained model: its kind says which options apply
        return _export_decoder(model, adapter, row_adapters, tensor, target, language, row_languages, foreign,
                               beam_size=beam_size, decode=decode, compute_type=compute_type)
    if decode is not None:
        raise UserError(f"{model} is a Whisper model: diffusion decoding options ({decode_flags()}) do not apply")
    bundle = load_whisper(model)
    # Per-utterance adapters are loaded under their own names; --adapter, if given, serves the rest.
    named = {path: f"utterance_adapter_{k}" for k, path in enumerate(dict.fromkeys([*row_adapters, adapter]))
             if path is not None} if row_adapters else {}
    if adapter is not None or named or target.type != "cpu":  # the loaded model is shared: adapt a copy
        private = copy.deepcopy(bundle.model).to(target)
        for path, name in named.items():
            load_adapter(private, path, name=name)
        if adapter is not None and not named:
            load_adapter(private, adapter)
        bundle = dataclasses.replace(bundle, model=private)
    if language is None:
        language = "auto" if bundle.model.config.vocab_size >= MULTILINGUAL_VOCAB else "en"
    transcriber = WhisperTranscriber(bundle, compute_type=compute_type, language=language)
    transcriber.check_languages(row_languages)
    if not named:
        return lambda w, n, _, languages=None: transcriber.decode(tensor(w), beam_size, languages=languages)

    def mixed(waves: np.ndarray, lengths: np.ndarray, paths: list, languages: list | None = None) -> list[Hypothesis]:
        set_row_adapters(bundle.model, [named.get(path or adapter) for path in paths])
        try:
            return transcriber.decode(tensor(waves), beam_size, languages=languages)
        finally:
            set_row_adapters(bundle.model, None)

    return mixed


_EXPORT_OPTIONS = {  # option: (its default, how the user gave it)
    "beam_size": (1, "--beam-size"), "compute_type": ("float32", "--compute-type"),
    "decode": (None, f"diffusion decoding options ({decode_flags()})"),
}


def _export_decoder(model: str, adapter: str | None, row_adapters: list[str], tensor: Callable, target,
                    language: str | None, row_languages: list[str], foreign: list[str], **options) -> Decoder:
    """An export's decoder; options its kind does not take (``transcribe_options``) are refused in one line.
    ``foreign``: the languages other than English asked for (``--language`` or utterances)."""
    from ..models import load_model

    if adapter is not None or row_adapters:
        raise UserError(f"{model} is an ASR export with its own adapter: per-utterance or --adapter "
                         "adapters do not apply")
    net = load_model(model)
    kind = read_export_info(model)["kind"]
    if foreign and "language" not in net.transcribe_options:
        raise UserError(f"{model} is a {kind} export trained on English: languages {foreign} (--language or "
                         "the manifest's language field) do not apply")
    given = {name: value for name, value in options.items() if value != _EXPORT_OPTIONS[name][0]}
    refused = [name for name in given if name not in net.transcribe_options]
    if refused:
        said = [_EXPORT_OPTIONS[name][1] + ("" if name == "decode" else f" {given[name]}") for name in refused]
        verb = "does" if refused in (["beam_size"], ["compute_type"]) else "do"
        raise UserError(f"{model} is a {kind} export: {', '.join(said)} {verb} not apply")
    if "language" in net.transcribe_options:
        given["language"] = language
    decode = net.to(target).decoding(**given)
    if "language" in net.transcribe_options:
        net.transcriber.check_languages(row_languages)
    return lambda w, n, *rest: decode(tensor(w), tensor(n), *rest)


def _ctranslate2_decoder(model: str, adapter: str | None, beam_size: int, decode: dict | None, device: str,
                         compute_type: str, row_adapters: list[str]) -> Decoder:
    from ..asr.ctranslate2_backend import CTranslate2Whisper
    from ..weights import resolve_model_dir

    refused = {"--adapter": adapter, "per-utterance adapters": list(row_adapters), "diffusion options": decode,
               "--beam-size": beam_size != 1, "--device": device != "cpu"}
    given = [name for name, value in refused.items() if value]
    if given:
        raise UserError(f"--backend ctranslate2 serves one merged model on the CPU, greedy: {', '.join(given)} "
                         "do not apply (merge an adapter with speech-peft export --format ctranslate2)")
    directory = resolve_model_dir(model)
    if (directory / INFO).is_file():
        raise UserError(f"{model} is a speech-peft export: write it for CTranslate2 with "
                         "speech-peft export --format ctranslate2 --model EXPORT --out DIR")
    whisper = CTranslate2Whisper(directory, compute_type="int8" if compute_type == "int8" else "float32")
    return lambda w, n, *_: whisper.decode(w)


def transcribe_files(entries: list[Entry], model: str = "whisper-tiny.en", adapter: str | None = None,
                     batch_size: int = 8, beam_size: int = 1, skip_bad: bool = False,
                     rejects_path: str | os.PathLike | None = None, progress: bool = True,
                     decode: dict | None = None, device: str = "cpu", vad: bool = True,
                     compute_type: str = "float32", max_seconds: float = MAX_SECONDS,
                     backend: str = "torch", language: str | None = None) -> list[Transcript]:
    """Transcripts in the entries' order (skipped inputs are listed in ``rejects_path``). Entries whose
    ``adapter`` field names a saved adapter are decoded with it, in the same batches as the rest; an entry's
    ``language`` field is the language it is transcribed in unless ``language`` is given."""
    if language is not None:  # asked for explicitly (a code or auto): it overrides the manifest's languages
        entries = [dataclasses.replace(e, language=None) for e in entries]
    row_adapters = list(dict.fromkeys(e.adapter for e in entries if e.adapter))
    row_languages = sorted({e.language for e in entries if e.language})
    decoder = load_decoder(model, adapter, beam_size, decode, device, compute_type, row_adapters, backend, language,
                           row_languages)
    return transcribe_with(decoder, entries, batch_size, skip_bad, rejects_path, progress, vad, max_seconds, backend)


def transcribe_with(decoder: Decoder, entries: list[Entry], batch_size: int = 8, skip_bad: bool = False,
                    rejects_path: str | os.PathLike | None = None, progress: bool = True, vad: bool = True,
                    max_seconds: float = MAX_SECONDS, backend: str = "torch") -> list[Transcript]:
    """``transcribe_files`` with a decoder already loaded (a server, a benchmark)."""
    rejects, vad_config = Rejects(rejects_path), VADConfig() if vad else None
    done: dict[str, Transcript] = {}
    pending: list[tuple[Entry, np.ndarray, Plan]] = []
    with _inference(backend), tqdm(total=len(entries), desc="transcribe", unit="file", disable=not progress) as bar:
        for entry in entries:
            try:
                wave = read_audio(entry.audio, 16000, max_seconds)
            except AudioError as err:
                rejects.skip_or_raise(err, skip_bad)
                bar.update(1)
                continue
            pending.append((entry, wave, plan_recording(wave, vad_config)))
            if sum(len(p.windows) for _, _, p in pending) >= 4 * batch_size:
                _flush(pending, decoder, batch_size, done, bar)
        _flush(pending, decoder, batch_size, done, bar)
    return [done[e.id] for e in entries if e.id in done]


def _inference(backend: str):
    import contextlib

    if backend != "torch":
        return contextlib.nullcontext()
    import torch

    return torch.inference_mode()


def _flush(pending: list, decoder: Decoder, batch_size: int, done: dict[str, Transcript], bar) -> None:
    """Decode every pending window, longest first in batches of similar length, and assemble."""
    jobs = [(f, w) for f, (_, _, plan) in enumerate(pending) for w in range(len(plan.windows))]
    span = lambda job: pending[job[0]][2].windows[job[1]]  # noqa: E731
    jobs.sort(key=lambda job: span(job)[1] - span(job)[0], reverse=True)
    results: dict[tuple[int, int], Hypothesis] = {}
    for start in range(0, len(jobs), batch_size):
        group = jobs[start:start + batch_size]
        pieces = [pending[f][1][slice(*span((f, w)))] for f, w in group]
        lengths = np.array([len(p) for p in pieces])
        waves = np.zeros((len(pieces), int(lengths.max())), dtype=np.float32)
        for row, piece in enumerate(pieces):
            waves[row, : len(piece)] = piece
        entries = [pending[f][0] for f, _ in group]
        results.update(zip(group, decoder(waves, lengths, [e.adapter for e in entries], [e.language for e in entries])))
    for f, (entry, wave, plan) in enumerate(pending):
        hyps = [results[(f, w)] for w in range(len(plan.windows))]
        done[entry.id] = assemble(entry.id, entry.audio, len(wave), plan, hyps)
    bar.update(len(pending))
    pending.clear()


def transcribe_entries(entries: list[Entry], model: str = "whisper-tiny.en", adapter: str | None = None,
                       batch_size: int = 8, beam_size: int = 1, skip_bad: bool = False,
                       rejects_path: str | None = None, progress: bool = True, decode: dict | None = None,
                       device: str = "cpu", **options) -> dict[str, str]:
    """Transcripts by id, in the entries' order."""
    transcripts = transcribe_files(entries, model, adapter, batch_size, beam_size, skip_bad, rejects_path,
                                   progress, decode, device, **options)
    return {t.id: t.text for t in transcripts}


def format_transcripts(transcripts: list[Transcript], fmt: str, timestamps: bool = False) -> str:
    """``tsv``: id<TAB>text (with ``timestamps``: id<TAB>start<TAB>end<TAB>text per segment); ``jsonl``: one
    object per recording, segments and the speech decision included. What is written and what is printed."""
    if fmt == "jsonl":
        return "".join(json.dumps(t.to_json(), ensure_ascii=False) + "\n" for t in transcripts)
    if fmt != "tsv":
        raise UserError(f"output format {fmt!r}: choose tsv or jsonl (srt is one file per recording)")
    for t in transcripts:  # a TSV row cannot hold these ids: it would be lost or split when read back
        if not t.id.strip() or any(c in t.id for c in "\t\n\r"):
            raise UserError(f"id {t.id!r} ({t.audio}) cannot be written to a TSV (empty, or holds a tab or line "
                             "break): rename the file, or use --format jsonl")
    if timestamps:
        return "".join(f"{t.id}\t{s.start:.2f}\t{s.end:.2f}\t{' '.join(s.text.split())}\n"
                       for t in transcripts for s in t.segments)
    return "".join(f"{t.id}\t{' '.join(t.text.split())}\n" for t in transcripts)


def write_transcripts(transcripts: list[Transcript], out: str | os.PathLike, fmt: str,
                      timestamps: bool = False) -> list[Path]:
    """``format_transcripts`` into the file ``out``; ``srt``: one subtitle file per recording in the folder ``out``."""
    if fmt == "srt":
        return [write_text(Path(out) / f"{t.id}.srt", _srt(t)) for t in transcripts]
    return [write_text(out, format_transcripts(transcripts, fmt, timestamps))]


def _srt(transcript: Transcript) -> str:
    def clock(seconds: float) -> str:
        ms = round(seconds * 1000)
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    blocks = [f"{i}\n{clock(s.start)} --> {clock(s.end)}\n{s.text}\n" for i, s in enumerate(transcript.segments, 1)]
    return "\n".join(blocks)

