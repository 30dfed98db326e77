"""Manifests, corpus layouts and bad input: every problem names the file, or is skipped on request."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speech_peft.data import AudioError, load_audio, read_manifest, write_manifest
from speech_peft.data import builders
from speech_peft.data.dataset import AudioDataset, LengthBucketSampler, collate
from speech_peft.data.manifest import Entry


def _wav(path, seconds=0.5, rate=16000, channels=1, value=None):
    n = int(seconds * rate)
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (n, channels)).astype(np.float32)
    if value is not None:
        data[:] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data if channels > 1 else data[:, 0], rate, subtype="FLOAT")
    return path


@pytest.fixture
def bad_files(tmp_path):
    files = {
        "corrupt": tmp_path / "corrupt.wav",
        "empty": tmp_path / "empty.wav",
        "nan": _wav(tmp_path / "nan.wav", value=np.nan),
        "long": tmp_path / "long.wav",
        "missing": tmp_path / "missing.wav",
    }
    files["corrupt"].write_bytes(b"RIFF....WAVEfmt garbage")
    sf.write(files["empty"], np.zeros(0, dtype=np.float32), 16000)
    sf.write(files["long"], np.zeros(8000 * 700, dtype=np.int16), 8000)
    return files


PROBLEMS = {"corrupt": "corrupt", "empty": "empty", "nan": "NaN", "long": "absurd length", "missing": "not found"}


@pytest.mark.parametrize("kind", PROBLEMS)
def test_each_bad_file_raises_an_error_naming_the_file_and_the_problem(bad_files, kind):
    with pytest.raises(AudioError, match=PROBLEMS[kind]) as err:
        load_audio(bad_files[kind])
    assert str(bad_files[kind]) in str(err.value)


def test_skip_bad_writes_every_bad_input_to_the_rejects_file_and_keeps_the_good(bad_files, tmp_path):
    good = _wav(tmp_path / "good.wav")
    entries = [Entry(k, str(p), 0.5, 16000, text="x") for k, p in bad_files.items()]
    entries += [Entry("good", str(good), 0.5, 16000, text="x"), Entry("notext", str(good), 0.5, 16000)]
    rejects = tmp_path / "rejects.tsv"
    data = AudioDataset(entries, require_text=True, skip_bad=True, rejects_path=rejects)
    batch = collate([data[i] for i in range(len(data))])
    assert batch.ids == ["good"]
    lines = rejects.read_text().splitlines()
    assert len(lines) == 6
    assert any("no transcript" in line for line in lines)
    for kind, path in bad_files.items():
        assert any(line.startswith(str(path)) and PROBLEMS[kind] in line for line in lines)


def test_without_skip_bad_a_missing_transcript_is_an_error(tmp_path):
    data = AudioDataset([Entry("u", str(_wav(tmp_path / "u.wav")), 0.5, 16000)], require_text=True)
    with pytest.raises(AudioError, match="no transcript"):
        data[0]


def test_stereo_is_mixed_down_and_any_rate_is_resampled(tmp_path):
    path = _wav(tmp_path / "st.wav", seconds=1.0, rate=8000, channels=2)
    wave = load_audio(path, 16000)
    assert wave.shape == (16000,)
    raw, _ = sf.read(path, dtype="float32")
    assert torch.allclose(load_audio(path, None), torch.from_numpy(raw.mean(1)))


def test_manifest_round_trip_keeps_fields_and_stores_relative_paths(tmp_path):
    audio = _wav(tmp_path / "a" / "x.wav")
    entries = [Entry("x", str(audio), 0.5, 16000, text="hi", label="1", speaker="s", clean_audio=str(audio))]
    path = write_manifest(entries, tmp_path / "m.jsonl")
    assert '"audio": "a/x.wav"' in path.read_text()
    assert read_manifest(path) == [Entry("x", str(tmp_path / "a" / "x.wav"), 0.5, 16000, text="hi", label="1",
                                         speaker="s", clean_audio=str(tmp_path / "a" / "x.wav"))]


def test_malformed_manifest_lines_are_errors_naming_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "audio": "a.wav"}\n{"id": "a", "audio": "b.wav"}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2: id 'a' appears twice"):
        read_manifest(path)
    path.write_text('{"id": "a"}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:1: missing field"):
        read_manifest(path)


def test_length_buckets_cover_every_item_exactly_once_and_group_similar_lengths():
    durations = [float(d) for d in np.random.default_rng(0).uniform(0.5, 20, 103)]
    sampler = LengthBucketSampler(durations, batch_size=8, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(103))
    spread = np.mean([np.ptp([durations[i] for i in b]) for b in batches])
    assert spread < 3.0
    assert list(LengthBucketSampler(durations, 8, seed=3)) == batches
    sampler.set_epoch(2)  # a training epoch draws its items as epoch * len + index
    later = list(sampler)
    assert sorted(i % 103 for b in later for i in b) == list(range(103)) and min(i for b in later for i in b) >= 206
    fixed = LengthBucketSampler(durations, 8, shuffle=False)
    fixed.set_epoch(2)  # validation and test: the plain indices, whatever the epoch
    assert sorted(i for b in fixed for i in b) == list(range(103))


def test_collate_pads_and_records_lengths(tmp_path):
    a, b = _wav(tmp_path / "a.wav", 0.25), _wav(tmp_path / "b.wav", 0.5)
    data = AudioDataset([Entry("a", str(a), 0.25, 16000), Entry("b", str(b), 0.5, 16000)])
    batch = collate([data[0], data[1]])
    assert batch.waveforms.shape == (2, 8000) and batch.lengths.tolist() == [4000, 8000]
    assert batch.waveforms[0, 4000:].abs().sum() == 0


def test_fsdd_builder_reads_labels_words_and_speakers(tmp_path):
    _wav(tmp_path / "recordings" / "7_theo_12.wav")
    (entry,) = builders.from_fsdd(tmp_path)
    assert (entry.id, entry.label, entry.text, entry.speaker) == ("7_theo_12", "7", "seven", "theo")


def test_kaldi_builder_refuses_piped_commands_and_reports_missing_transcripts(tmp_path):
    _wav(tmp_path / "a.wav")
    (tmp_path / "wav.scp").write_text(f"a {tmp_path / 'a.wav'}\nb sox x.wav -t wav - |\n")
    (tmp_path / "text").write_text("a hello world\n")
    with pytest.raises(ValueError, match="is a command"):
        builders.from_kaldi_dir(tmp_path)
    (tmp_path / "wav.scp").write_text(f"a {tmp_path / 'a.wav'}\nb {tmp_path / 'a.wav'}\n")
    with pytest.raises(ValueError, match="no transcript"):
        builders.from_kaldi_dir(tmp_path)
    entries = builders.from_kaldi_dir(tmp_path, skip_bad=True, rejects_path=tmp_path / "rej.tsv")
    assert [e.text for e in entries] == ["hello world"]
    assert "no transcript" in (tmp_path / "rej.tsv").read_text()


def test_esc50_layout_puts_the_fold_in_speaker(tmp_path):
    _wav(tmp_path / "audio" / "1-100032-A-0.wav")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("filename,fold,target,category,esc10,src_file,take\n"
                                                  "1-100032-A-0.wav,1,0,dog,True,100032,A\n")
    (entry,) = builders.from_esc50(tmp_path)
    assert (entry.label, entry.speaker) == ("dog", "fold1")


def test_speech_commands_official_split(tmp_path):
    for rel in ("yes/a_nohash_0.wav", "yes/b_nohash_0.wav", "no/c_nohash_0.wav", "_background_noise_/n.wav"):
        _wav(tmp_path / rel)
    (tmp_path / "validation_list.txt").write_text("yes/b_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("no/c_nohash_0.wav\n")
    splits = builders.from_speech_commands(tmp_path)
    assert {k: [e.id for e in v] for k, v in splits.items()} == {
        "train": ["yes/a_nohash_0"], "validation": ["yes/b_nohash_0"], "test": ["no/c_nohash_0"]}


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")),
                    reason="espeak-ng and flite are not installed (apt-get install espeak-ng flite)")
def test_synthetic_voices_read_the_sentences_and_validation_voices_are_never_trained_on(tmp_path):
    from speech_peft.data.manifest import read_manifest
    from speech_peft.data.tts_voices import make_tts_voices

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("The red boat sailed home.\nA small bird sang at dawn.\nWe ate soup by the fire.\n")
    written = make_tts_voices(sentences, tmp_path / "out", per_voice=2, max_voices=5, val_voices=2, seed=3)
    train, val = read_manifest(written["train"]), read_manifest(written["val"])
    assert len(train) == 3 * 2 and len(val) == 2 * 2
    assert not {e.speaker for e in train} & {e.speaker for e in val}
    lines = set(sentences.read_text().splitlines())
    for entry in train + val:
        wave = load_audio(entry.audio, None)
        assert entry.text in lines and entry.sample_rate == 16000 and 0.5 < entry.duration < 6
        assert wave.abs().max() > 0.01
    stamp = {e.audio: Path(e.audio).stat().st_mtime_ns for e in train}
    make_tts_voices(sentences, tmp_path / "out", per_voice=2, max_voices=5, val_voices=2, seed=3)
    assert {a: Path(a).stat().st_mtime_ns for a in stamp} == stamp  # a rerun keeps what exists


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_prepare_tts_voices_in_german_speaks_with_german_voices_and_marks_the_language(tmp_path):
    from cli_runner import speech_peft

    from speech_peft.data.manifest import read_manifest

    sentences = tmp_path / "saetze.txt"
    sentences.write_text("Der rote Hund schläft im Garten.\nWir trinken Tee am Abend.\n", encoding="utf-8")
    done = speech_peft("prepare", "tts_voices", sentences, tmp_path / "out", "--voices", "1", "3", "--language", "de")
    assert done.returncode == 0, done.stderr[-2000:]
    entries = read_manifest(tmp_path / "out" / "train.jsonl") + read_manifest(tmp_path / "out" / "val.jsonl")
    assert len(entries) == 3 and {e.language for e in entries} == {"de"}
    assert all(e.speaker.startswith("espeak-ng_de") for e in entries), [e.speaker for e in entries]
    refused = speech_peft("prepare", "fsdd", tmp_path, tmp_path / "x", "--language", "de")
    assert refused.returncode == 2 and "tts_voices layout only" in refused.stderr


def test_atomic_writes_leave_no_temporary_and_give_files_the_usual_permissions(tmp_path):
    import os

    from speech_peft.fileio import atomic_write, write_text

    mask = os.umask(0)
    os.umask(mask)
    path = write_text(tmp_path / "sub" / "out.txt", "done")
    assert path.read_text() == "done" and (path.stat().st_mode & 0o777) == 0o666 & ~mask

    def killed_halfway(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, killed_halfway)
    assert path.read_text() == "done" and sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_a_synthesiser_that_fails_is_one_line_naming_the_voice(tmp_path, monkeypatch, capsys):
    from speech_peft.commands.errors import exit_status
    from speech_peft.data import tts_voices

    broken = tts_voices.Voice("flite", "no_such_voice")
    monkeypatch.setattr(tts_voices, "available_voices", lambda language="en": [broken, broken])
    monkeypatch.setattr(tts_voices.Voice, "command", lambda self, text, wav: ["sh", "-c", "echo no voice >&2; exit 3"])
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("The red boat sailed home.\n")
    status = exit_status("prepare", lambda: tts_voices.make_tts_voices(sentences, tmp_path / "out", val_voices=1))
    err = capsys.readouterr().err
    assert status == 2 and "flite failed for voice no_such_voice (exit status 3): no voice" in err
    assert "Traceback" not in err and err.count("error:") == 1  # the progress bar aside, one line
