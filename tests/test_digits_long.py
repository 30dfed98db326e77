"""digits_long: long digit strings of many speakers, split by speaker so the test speakers are heard by no
trained part."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from speech_peft.data.digits_long import MAX_USES, _join, digit_words, make_digits_long, speaker_split
from speech_peft.data.manifest import Entry, read_manifest
from speech_peft.errors import UserError

FSDD = Path(__file__).resolve().parents[1] / "data" / "fsdd_subset" / "recordings"


def _speakers_for(split: str, count: int, prefix: str) -> list[str]:
    found = []
    for n in range(1000):
        if speaker_split(f"{prefix}{n:04d}") == split:
            found.append(f"{prefix}{n:04d}")
        if len(found) == count:
            return found
    raise AssertionError(split)


def _speaker_table(root: Path, rows: list[tuple[str, str, str]]) -> None:
    """A shared-folder speaker table whose audio is copied from FSDD recordings."""
    lines = ["id\tpath\tspeaker\tsample_rate\tseconds\ttext"]
    for n, (speaker, text, source) in enumerate(rows):
        path = root / "audio" / speaker / f"{speaker}_{n}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FSDD / source, path)
        lines.append(f"{speaker}_{n}\t{path.relative_to(root)}\t{speaker}\t8000\t0.5\t{text}")
    (root / "manifest.tsv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shared")
    (root / "fsdd" / "recordings").mkdir(parents=True)
    for speaker in ("george", "jackson", "nicolas"):
        for digit in range(10):
            for take in range(10):
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copy(FSDD / name, root / "fsdd" / "recordings" / name)
    rows = []
    for split in ("train", "val", "test_real"):
        for speaker in _speakers_for(split, 2, "sc"):
            rows += [(speaker, word, f"{d}_george_{t}.wav") for t in range(3)
                     for d, word in ((1, "one"), (7, "seven"))]
    _speaker_table(root / "speech_commands_digits", rows)
    rows = []
    for split in ("train", "val", "test_real"):
        for speaker in _speakers_for(split, 2, "so"):
            rows += [(speaker, "TWO FOUR", "2_theo_0.wav"), (speaker, "OH NINE", "9_theo_1.wav"),
                     (speaker, "THREE", "3_theo_2.wav"), (speaker, "I LIKE APPLES", "5_theo_3.wav")]
    _speaker_table(root / "speechocean762", rows)
    return root


@pytest.fixture(scope="module")
def prepared(shared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits_long")
    make_digits_long(shared, out, seconds=(2, 5), train_items=2, eval_items=1, voices=0)
    return out


def test_no_test_speaker_is_heard_in_training_or_validation(prepared):
    heard = {e.speaker for name in ("train", "val") for e in read_manifest(prepared / f"{name}.jsonl")}
    test = {e.speaker for e in read_manifest(prepared / "test.jsonl")}
    test_real = {e.speaker for e in read_manifest(prepared / "test_real.jsonl")}
    assert test == {"jackson", "nicolas"}  # FSDD's test speakers, as in fsdd_long
    assert test_real and all(speaker_split(s) == "test_real" for s in test_real)
    assert not (test | test_real) & heard
    assert {"george"} < heard and any(s.startswith("sc") for s in heard) and any(s.startswith("so") for s in heard)


def test_every_item_is_one_speakers_digits_and_other_sentences_are_left_out(prepared):
    digits = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    for manifest in prepared.glob("*.jsonl"):
        for entry in read_manifest(manifest):
            assert entry.speaker in entry.id and set(entry.text.split()) <= digits
            if entry.speaker.startswith("so"):
                assert "five" not in entry.text.split()  # "I LIKE APPLES" was read over a five
    buckets = {e.task for e in read_manifest(prepared / "test_real.jsonl")}
    assert buckets <= {"2s", "5s"} and read_manifest(prepared / "test_real_2s.jsonl")
    table = (prepared / "speakers.tsv").read_text().splitlines()
    assert table[0] == "source\tspeaker\tsplit\titems" and any("\tjackson\ttest\t" in row for row in table)


def test_a_rerun_writes_nothing_new(shared, prepared):
    before = {p: p.stat().st_mtime_ns for p in (prepared / "audio").iterdir()}
    make_digits_long(shared, prepared, seconds=(2, 5), train_items=2, eval_items=1, voices=0)
    assert {p: p.stat().st_mtime_ns for p in (prepared / "audio").iterdir()} == before


def test_a_recording_is_used_at_most_three_times_in_an_item_and_too_few_fill_no_bucket(tmp_path):
    clip = Entry("a", str(FSDD / "1_george_0.wav"), 0.4, 8000, text="one", speaker="x")
    wave, words = _join([clip], 2.5, random.Random(0), {})
    assert words == ["one"] * MAX_USES
    assert _join([clip], 30, random.Random(0), {}) is None  # one recording cannot fill 30 s
    assert isinstance(wave, torch.Tensor)


def test_digit_words_reads_upper_case_prompts_and_oh_and_refuses_other_words():
    assert digit_words("ZERO THREE OH") == "zero three zero"
    assert digit_words("I LIKE APPLES") is None and digit_words("") is None


def test_missing_sources_and_missing_synthesisers_are_named(shared, tmp_path, monkeypatch):
    (tmp_path / "only_fsdd").mkdir()
    (tmp_path / "only_fsdd" / "fsdd").symlink_to(shared / "fsdd")
    with pytest.raises(UserError, match="only_fsdd: no speech_commands_digits, speechocean762 folder"):
        make_digits_long(tmp_path / "only_fsdd", tmp_path / "out", voices=0)
    monkeypatch.setattr("speech_peft.data.digits_long.available_voices", list)
    with pytest.raises(FileNotFoundError, match="install espeak-ng"):
        make_digits_long(shared, tmp_path / "out2", seconds=(2,), voices=4)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng for the synthetic voices")
def test_synthetic_voices_read_digit_strings_for_training_only(shared, tmp_path):
    make_digits_long(shared, tmp_path, seconds=(2, 5), train_items=1, eval_items=1, voices=2, strings=3)
    synthetic = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()
                 if "espeak" in line or "flite" in line]
    assert synthetic and {e["speaker"] for e in synthetic} <= {r.split("\t")[1] for r in
                                                               (tmp_path / "speakers.tsv").read_text().splitlines()
                                                               if r.startswith("synthetic")}
    for name in ("val", "test", "test_real"):
        assert "espeak" not in (tmp_path / f"{name}.jsonl").read_text()
    without = tmp_path / "without_voices"
    make_digits_long(shared, without, seconds=(2, 5), train_items=1, eval_items=1, voices=0)
    for name in ("test", "test_real", "val"):  # the same items, whatever the synthetic voices
        assert [(e.id, e.text, e.duration) for e in read_manifest(without / f"{name}.jsonl")] == \
            [(e.id, e.text, e.duration) for e in read_manifest(tmp_path / f"{name}.jsonl")]


def test_a_speaker_table_without_its_columns_is_refused_naming_it(tmp_path):
    from speech_peft.data.builders import from_speaker_table

    (tmp_path / "manifest.tsv").write_text("id\tpath\ttext\na\taudio/a.wav\tone\n")
    with pytest.raises(UserError, match=r"manifest.tsv: no column speaker"):
        from_speaker_table(tmp_path)
    with pytest.raises(FileNotFoundError, match="manifest.tsv not found"):
        from_speaker_table(tmp_path / "elsewhere")


def test_an_unreadable_recording_is_named_or_with_skip_bad_listed_in_the_rejects(shared, tmp_path):
    broken = tmp_path / "shared"
    shutil.copytree(shared, broken)
    bad = min((broken / "speechocean762" / "audio").rglob("*.wav"))
    bad.write_bytes(b"not audio")
    with pytest.raises(Exception, match=bad.name):
        make_digits_long(broken, tmp_path / "strict", seconds=(2,), voices=0)
    make_digits_long(broken, tmp_path / "skipped", seconds=(2,), voices=0, skip_bad=True)
    assert str(bad) in (tmp_path / "skipped" / "rejects.tsv").read_text()
    assert read_manifest(tmp_path / "skipped" / "train.jsonl")  # the other recordings still made their items

