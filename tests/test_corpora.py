"""Manifests from each corpus's published layout: tiny stand-ins built from the bundled real recordings in
the exact file names, transcript files and formats (FLAC, WAV, MP3) of the downloads."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from corpus_standins import CV_HEADER, recording, write

from speech_peft.data import builders
from speech_peft.data.prepare import prepare


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check(row: dict, uid: str, audio: Path, source: np.ndarray, rate: int, **fields) -> None:
    assert row["id"] == uid
    assert row["audio"] == str(audio.resolve())
    assert row["sample_rate"] == rate
    assert row["duration"] == pytest.approx(len(source) / rate, abs=1e-3)
    for key, value in fields.items():
        assert row.get(key) == value, key
    assert set(row) == {"id", "audio", "duration", "sample_rate", *fields}


def test_librispeech_one_manifest_per_subset_with_verbatim_transcripts_and_speakers(tmp_path):
    root = tmp_path / "LibriSpeech"
    made = {}
    for subset, (speaker, chapter) in {"dev-clean": ("84", "121123"), "train-clean-100": ("19", "198")}.items():
        folder = root / subset / speaker / chapter
        lines = []
        for utt in range(2):
            audio, rate, text = recording(len(made))
            uid = f"{speaker}-{chapter}-{utt:04d}"
            made[uid] = (subset, write(folder / f"{uid}.flac", audio, rate), audio, rate, text.upper())
            lines.append(f"{uid} {text.upper()}")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    (root / "SPEAKERS.TXT").write_text(";ID |SEX| SUBSET |MINUTES| NAME\n")
    written = prepare("librispeech", str(root), str(tmp_path / "out"))
    assert sorted(p.name for p in written) == ["dev-clean.jsonl", "train-clean-100.jsonl"]
    for path in written:
        for row in _manifest(path):
            subset, audio_path, audio, rate, text = made[row["id"]]
            assert path.stem == subset
            _check(row, row["id"], audio_path, audio, rate, text=text, speaker=row["id"].split("-")[0])
    # One subset given directly: its own name.
    (only,) = prepare("librispeech", str(root / "dev-clean"), str(tmp_path / "dev"))
    assert only.name == "dev-clean.jsonl" and len(_manifest(only)) == 2


def test_librispeech_audio_without_a_transcript_line_is_an_error_or_a_logged_skip(tmp_path):
    folder = tmp_path / "test-clean" / "1" / "2"
    audio, rate, _ = recording(0)
    write(folder / "1-2-0000.flac", audio, rate)
    write(folder / "1-2-0001.flac", audio, rate)
    (folder / "1-2.trans.txt").write_text("1-2-0000 HELLO\n")
    with pytest.raises(ValueError, match="1-2-0001.flac: no transcript in 1-2.trans.txt"):
        prepare("librispeech", str(tmp_path), str(tmp_path / "out"))
    (manifest,) = prepare("librispeech", str(tmp_path), str(tmp_path / "out"), skip_bad=True)
    assert [row["id"] for row in _manifest(manifest)] == ["1-2-0000"]
    assert "1-2-0001.flac\tno transcript" in (tmp_path / "out" / "rejects.tsv").read_text()


def test_libritts_reads_the_normalized_text_beside_each_wav(tmp_path):
    folder = tmp_path / "LibriTTS" / "train-clean-100" / "103" / "1241"
    made = {}
    for sentence in range(2):
        audio, rate, text = recording(sentence + 3)
        uid = f"103_1241_000000_00000{sentence}"
        made[uid] = (write(folder / f"{uid}.wav", audio, rate), audio, rate, text.capitalize() + ".")
        (folder / f"{uid}.normalized.txt").write_text(text.capitalize() + ".")
        (folder / f"{uid}.original.txt").write_text(text.upper())
    (folder / "103_1241.trans.tsv").write_text("")
    (folder / "103_1241.book.tsv").write_text("")
    (manifest,) = prepare("libritts", str(tmp_path / "LibriTTS"), str(tmp_path / "out"))
    assert manifest.name == "train-clean-100.jsonl"
    rows = _manifest(manifest)
    assert [row["id"] for row in rows] == sorted(made)
    for row in rows:
        path, audio, rate, text = made[row["id"]]
        _check(row, row["id"], path, audio, rate, text=text, speaker="103")


def test_vctk_092_uses_microphone_1_holds_out_voicebank_test_speakers_and_keeps_untranscribed_audio(tmp_path):
    root = tmp_path / "VCTK-Corpus-0.92"
    made = {}
    for index, (speaker, number) in enumerate([("p225", 1), ("p225", 20), ("p232", 3), ("p315", 4)]):
        audio, rate, text = recording(index)
        uid = f"{speaker}_{number:03d}"
        for mic in ("mic1", "mic2"):
            path = write(root / "wav48_silence_trimmed" / speaker / f"{uid}_{mic}.flac", audio, rate)
            if mic == "mic1":
                made[uid] = (path, audio, rate, text)
        if speaker != "p315":  # the corpus has no text for p315
            (root / "txt" / speaker).mkdir(parents=True, exist_ok=True)
            (root / "txt" / speaker / f"{uid}.txt").write_text(text + "\n")
    (root / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS  REGION COMMENTS\n")
    written = {p.stem: _manifest(p) for p in prepare("vctk", str(root), str(tmp_path / "out"))}
    assert {k: [r["id"] for r in v] for k, v in written.items()} == {
        "train": ["p225_001", "p315_004"], "val": ["p225_020"], "test": ["p232_003"]}
    for rows in written.values():
        for row in rows:
            path, audio, rate, text = made[row["id"]]
            fields = {"speaker": row["id"][:4]} | ({} if row["id"].startswith("p315") else {"text": text})
            _check(row, row["id"], path, audio, rate, **fields)


def test_vctk_080_layout(tmp_path):
    audio, rate, text = recording(1)
    path = write(tmp_path / "wav48" / "p226" / "p226_001.wav", audio, rate)
    (tmp_path / "txt" / "p226").mkdir(parents=True)
    (tmp_path / "txt" / "p226" / "p226_001.txt").write_text(text)
    (manifest,) = prepare("vctk", str(tmp_path), str(tmp_path / "out"))
    (row,) = _manifest(manifest)
    _check(row, "p226_001", path, audio, rate, text=text, speaker="p226")


def _commonvoice(root: Path, locale: str, accents: list[str]) -> dict:
    made = {}
    header = CV_HEADER
    rows = {"train": [], "dev": [], "test": []}
    for index, split in enumerate(["train", "train", "dev", "test"]):
        audio, rate, text = recording(index)
        name = f"common_voice_{locale}_{1000 + index}.mp3"
        path = write(root / locale / "clips" / name, audio, rate)
        text = f'{text} "quoted"'  # sentences carry quotes: the TSV is read without quote handling
        made[name[:-4]] = (split, path, audio, rate, text, f"client{index % 2}", accents[index % 2])
        rows[split].append(f"client{index % 2}\t{name}\tsid\t{text}\t\t2\t0\t\t\t{accents[index % 2]}\t\t{locale}\t")
    for split, lines in rows.items():
        (root / locale / f"{split}.tsv").write_text("\n".join([header, *lines]) + "\n")
    (root / locale / "validated.tsv").write_text(header + "\n")
    return made


def test_commonvoice_splits_locales_and_accents(tmp_path):
    root = tmp_path / "cv-corpus-17.0"
    made = _commonvoice(root, "en", ["United States English", "India and South Asia"])
    made |= _commonvoice(root, "cy", ["", "Gogledd"])
    written = prepare("commonvoice", str(root), str(tmp_path / "out"))
    assert sorted(p.name for p in written) == ["test.jsonl", "train.jsonl", "val.jsonl"]
    seen = 0
    for path in written:
        for row in _manifest(path):
            split, audio_path, audio, rate, text, client, _ = made[row["id"]]
            assert {"dev": "val"}.get(split, split) == path.stem
            locale = row["id"].split("_")[2]
            _check(row, row["id"], audio_path, audio, rate, text=text, speaker=client, task=locale, language=locale)
            seen += 1
    assert seen == len(made) == 8
    by_accent = prepare("commonvoice", str(root / "en"), str(tmp_path / "accents"), task_column="accents")
    tasks = {row["id"]: row["task"] for path in by_accent for row in _manifest(path)}
    assert tasks == {uid: accent for uid, (*_, accent) in made.items() if "_en_" in uid}


def test_commonvoice_row_without_a_sentence_is_an_error_naming_the_file_and_line(tmp_path):
    _commonvoice(tmp_path / "cv", "en", ["a", "b"])
    tsv = tmp_path / "cv" / "en" / "test.tsv"
    lines = tsv.read_text().splitlines()
    fields = lines[1].split("\t")
    fields[3] = ""
    tsv.write_text("\n".join([lines[0], "\t".join(fields)]) + "\n")
    with pytest.raises(ValueError, match=r"common_voice_en_1003.mp3: test.tsv:2: empty sentence"):
        prepare("commonvoice", str(tmp_path / "cv"), str(tmp_path / "out"))


def test_kaldi_data_directory_with_segments_is_refused_with_what_to_do(tmp_path):
    audio, rate, text = recording(0)
    path = write(tmp_path / "wav" / "utt1.wav", audio, rate)
    (tmp_path / "wav.scp").write_text(f"utt1 {path}\n")
    (tmp_path / "text").write_text(f"utt1 {text}\n")
    (tmp_path / "utt2spk").write_text("utt1 spk1\n")
    (manifest,) = prepare("kaldi", str(tmp_path), str(tmp_path / "out"))
    (row,) = _manifest(manifest)
    _check(row, "utt1", path, audio, rate, text=text, speaker="spk1")
    (tmp_path / "segments").write_text("utt1 rec1 0.0 1.0\n")
    with pytest.raises(ValueError, match="segments is not supported"):
        builders.from_kaldi_dir(tmp_path)


@pytest.mark.parametrize("corpus", ["librispeech", "libritts", "vctk", "commonvoice"])
def test_a_folder_without_the_corpus_layout_is_a_clear_error(tmp_path, corpus):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(ValueError, match=corpus):
        prepare(corpus, str(tmp_path), str(tmp_path / "out"))
