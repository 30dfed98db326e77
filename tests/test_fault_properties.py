"""Property-based fault tests of the data path: on arbitrary bytes, shapes and strings the manifest reader,
audio loader, degradation pipeline and the TSV/JSONL writers give a right value or a clear error naming
the file; never a crash of another kind, never a silently wrong value."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speech_peft.asr.longform import Transcript
from speech_peft.data import AudioError, read_manifest, write_manifest
from speech_peft.data.audio import read_audio
from speech_peft.data.degrade import DegradeConfig, Degrader
from speech_peft.data.manifest import Entry
from speech_peft.jobs.transcribe import format_transcripts
from speech_peft.metrics.wer import read_tsv

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _file(data: bytes, suffix: str) -> Path:
    handle = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    handle.write(data)
    handle.close()
    return Path(handle.name)


def _json_values():
    return st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                        max_leaves=5)


def _check_entries(entries: list[Entry]) -> None:
    for e in entries:
        assert isinstance(e.id, str) and e.id and isinstance(e.audio, str) and e.audio
        assert isinstance(e.duration, float) and math.isfinite(e.duration) and e.duration >= 0
        assert isinstance(e.sample_rate, int) and not isinstance(e.sample_rate, bool) and e.sample_rate >= 0
        for name in ("text", "label", "task", "clean_audio", "speaker", "adapter"):
            assert getattr(e, name) is None or isinstance(getattr(e, name), str), name


@SETTINGS
@given(st.binary(max_size=400))
def test_manifest_reader_on_arbitrary_bytes_returns_well_typed_entries_or_an_error_naming_the_file(data):
    path = _file(data, ".jsonl")
    try:
        _check_entries(read_manifest(path))
    except ValueError as err:
        assert str(path) in str(err)


@SETTINGS
@given(st.lists(st.dictionaries(st.sampled_from(["id", "audio", "duration", "sample_rate", "text", "speaker",
                                                 "task", "label", "clean_audio", "adapter", "other"]),
                                _json_values(), max_size=6), max_size=4))
def test_manifest_reader_on_arbitrary_json_objects_never_accepts_a_wrong_type(rows):
    path = _file("".join(json.dumps(row) + "\n" for row in rows).encode(), ".jsonl")
    try:
        _check_entries(read_manifest(path))
    except ValueError as err:
        assert str(path) in str(err)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@SETTINGS
@given(st.lists(st.tuples(_text.filter(str.strip), _text, st.floats(0, 1e4), st.integers(0, 192000)),
                min_size=1, max_size=5, unique_by=lambda row: row[0]))
def test_manifest_written_and_read_back_is_the_same_for_any_text(rows):
    entries = [Entry(id=uid, audio=f"/data/{i}.wav", duration=duration, sample_rate=rate, text=text or None)
               for i, (uid, text, duration, rate) in enumerate(rows)]
    with tempfile.TemporaryDirectory() as folder:
        path = write_manifest(entries, Path(folder) / "m.jsonl")
        assert read_manifest(path) == entries


@SETTINGS
@given(st.lists(st.tuples(_text, _text), max_size=5, unique_by=lambda row: row[0]))
def test_tsv_of_transcripts_reads_back_to_the_same_ids_and_texts_or_refuses_an_id_it_cannot_hold(rows):
    transcripts = [Transcript(id=uid, audio="a.wav", duration=1.0, text=text) for uid, text in rows]
    try:
        tsv = format_transcripts(transcripts, "tsv")
    except ValueError as err:
        bad = [uid for uid, _ in rows if not uid.strip() or any(c in uid for c in "\t\n\r")]
        assert bad and repr(bad[0]) in str(err)
        return
    path = _file(tsv.encode(), ".tsv")
    assert read_tsv(str(path)) == {uid: " ".join(text.split()) for uid, text in rows}
    jsonl = [json.loads(line) for line in format_transcripts(transcripts, "jsonl").split("\n") if line]
    assert [(row["id"], row["text"]) for row in jsonl] == rows


@SETTINGS
@given(st.binary(max_size=2000), st.sampled_from([".wav", ".flac", ".mp3", ".ogg"]))
def test_audio_loader_on_arbitrary_bytes_returns_finite_mono_or_an_error_naming_the_file(data, suffix):
    path = _file(data, suffix)
    try:
        wave = read_audio(path)
    except AudioError as err:
        assert str(path) in str(err) and err.problem
        return
    assert wave.dtype == np.float32 and wave.ndim == 1 and np.isfinite(wave).all()


_samples = st.floats(-4, 4, width=32) | st.sampled_from([math.nan, math.inf, -math.inf])


@SETTINGS
@given(st.integers(1, 3), st.sampled_from([8000, 16000, 22050, 44100]), st.integers(0, 12000),
       st.lists(_samples, min_size=1, max_size=8), st.booleans())
def test_audio_loader_on_any_shape_rate_and_values_returns_16k_mono_or_names_the_problem(channels, rate, frames,
                                                                                          pattern, poison):
    data = np.resize(np.asarray(pattern, np.float32), (frames, channels))
    if poison and frames:
        data[frames // 2, 0] = np.nan
    path = Path(tempfile.mkdtemp()) / "clip.wav"
    if frames:
        sf.write(path, data, rate, subtype="FLOAT")
    else:
        sf.write(path, np.zeros((0, channels), np.float32), rate, subtype="FLOAT")
    finite = bool(np.isfinite(data).all())
    try:
        wave = read_audio(path)
    except AudioError as err:
        assert str(path) in str(err)
        assert frames / rate < 0.1 or not finite, err.problem  # rejected only when too short or not finite
        return
    assert finite and frames / rate >= 0.1
    assert wave.ndim == 1 and abs(len(wave) - round(frames * 16000 / rate)) <= 1
    if rate == 16000:
        assert np.allclose(wave, data.mean(1), atol=1e-6)  # no resampling: the channels' mean, sample for sample


@pytest.fixture(scope="module")
def degrader():
    return Degrader(DegradeConfig(effects=("noise", "reverb", "band_limit", "clip"), max_effects=4, p_clean=0.0))


@SETTINGS
@given(st.integers(1600, 8000), st.floats(0, 1), st.sampled_from(["tone", "silence", "impulse", "square"]),
       st.integers(0, 10_000))
def test_degradation_of_any_finite_wave_is_finite_bounded_and_the_same_length_and_reproducible(
        degrader, length, amplitude, kind, index):
    t = torch.arange(length, dtype=torch.float32)
    wave = {"tone": torch.sin(t * 0.05), "silence": torch.zeros(length), "square": torch.sign(torch.sin(t * 0.01)),
            "impulse": torch.nn.functional.one_hot(torch.tensor(length // 2), length).float()}[kind] * amplitude
    out = degrader(wave, index)
    assert out.shape == wave.shape and torch.isfinite(out).all() and out.abs().max() <= 1.0
    assert torch.equal(out, degrader(wave, index))
