"""Sharded, streamed data: shards written by a command hold every item once with its audio bytes; streaming
gives each epoch every item once, in a seeded order that changes with the epoch, split evenly between
processes; an epoch stopped part-way resumes to the same stream; a killed writer resumes."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch

from speech_peft.cli import main
from speech_peft.data import read_manifest
from speech_peft.data.audio import load_audio
from speech_peft.data.builders import from_folder
from speech_peft.data.manifest import write_manifest
from speech_peft.data.shards import ShardedAudioDataset, write_shards

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"


@pytest.fixture
def manifest(tmp_path) -> Path:
    texts = dict(line.split("\t") for line in (DATA / "transcripts.tsv").read_text().splitlines() if line)
    entries = from_folder(DATA)
    for entry in entries:
        entry.text, entry.speaker = texts[entry.id], entry.id.split("_")[0]
    return write_manifest(entries, tmp_path / "all.jsonl")


def _ids(dataset) -> list[str]:
    return [entry.id for entry, _ in dataset]


def test_shards_hold_every_item_once_in_the_webdataset_layout_with_its_audio_and_fields(manifest, tmp_path):
    assert main(["shard", str(manifest), str(tmp_path / "shards"), "--items-per-shard", "5"]) == 0
    index = json.loads((tmp_path / "shards" / "shards.json").read_text())
    assert [s["items"] for s in index["shards"]] == [5, 5, 2] and index["items"] == 12
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert names[:2] == ["000000000.wav", "000000000.json"]  # what WebDataset reads: key.ext pairs
    entries = {e.id: e for e in read_manifest(manifest)}
    streamed = ShardedAudioDataset(tmp_path / "shards", shuffle=False)
    seen = []
    for entry, wave in streamed:
        original = entries[entry.id]
        assert (entry.text, entry.speaker, entry.duration) == (original.text, original.speaker, original.duration)
        torch.testing.assert_close(wave, load_audio(original.audio), rtol=0, atol=0)
        seen.append(entry.id)
    assert seen == list(entries)


def test_each_epoch_streams_every_item_once_in_a_seeded_order_that_changes_with_the_epoch(manifest, tmp_path):
    write_shards(manifest, tmp_path / "shards", items_per_shard=3)
    data = ShardedAudioDataset(tmp_path / "shards", shuffle=True, buffer=4, seed=1)
    first = _ids(data)
    assert sorted(first) == sorted(e.id for e in read_manifest(manifest))
    assert _ids(ShardedAudioDataset(tmp_path / "shards", shuffle=True, buffer=4, seed=1)) == first
    data.set_epoch(1)
    assert _ids(data) != first and sorted(_ids(data)) == sorted(first)


@pytest.mark.parametrize("items_per_shard", [2, 5, 12])
def test_processes_get_disjoint_equal_shares(manifest, tmp_path, items_per_shard):
    write_shards(manifest, tmp_path / "shards", items_per_shard=items_per_shard)
    shares = [_ids(ShardedAudioDataset(tmp_path / "shards", replicas=2, rank=r, seed=3)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 6  # equal steps on every process, or DDP would hang
    if items_per_shard != 5:  # shards split evenly: every item exactly once
        assert sorted(shares[0] + shares[1]) == sorted(e.id for e in read_manifest(manifest))


def test_an_epoch_stopped_part_way_resumes_to_the_same_stream(manifest, tmp_path):
    write_shards(manifest, tmp_path / "shards", items_per_shard=4)
    whole = ShardedAudioDataset(tmp_path / "shards", buffer=3, seed=2)
    whole.set_epoch(1)
    expected = _ids(whole)
    first = ShardedAudioDataset(tmp_path / "shards", buffer=3, seed=2)
    first.set_epoch(1)
    stream = iter(first)
    head = [next(stream)[0].id for _ in range(5)]
    state = first.state_dict()
    resumed = ShardedAudioDataset(tmp_path / "shards", buffer=3, seed=2)
    resumed.load_state_dict(state)
    assert head + _ids(resumed) == expected


def test_a_killed_shard_writer_resumes_and_keeps_finished_shards(manifest, tmp_path, monkeypatch):
    import speech_peft.data.shards as shards

    real, calls = shards._write_tar, []

    def dies_on_the_second(tmp, *args):
        calls.append(tmp)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(tmp, *args)

    monkeypatch.setattr(shards, "_write_tar", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        write_shards(manifest, tmp_path / "shards", items_per_shard=5)
    written = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert written == ["shard-000000.tar"]  # no half shard, no index yet
    before = (tmp_path / "shards" / "shard-000000.tar").stat().st_mtime_ns
    monkeypatch.setattr(shards, "_write_tar", real)
    write_shards(manifest, tmp_path / "shards", items_per_shard=5)
    assert (tmp_path / "shards" / "shard-000000.tar").stat().st_mtime_ns == before
    assert json.loads((tmp_path / "shards" / "shards.json").read_text())["items"] == 12


def test_a_broken_shard_or_bad_audio_is_an_error_naming_it(manifest, tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    rows = manifest.read_text() + json.dumps({"id": "bad", "audio": str(tmp_path / "bad.wav")}) + "\n"
    (tmp_path / "with_bad.jsonl").write_text(rows)
    with pytest.raises(ValueError, match="bad.wav"):
        write_shards(tmp_path / "with_bad.jsonl", tmp_path / "s1")
    write_shards(tmp_path / "with_bad.jsonl", tmp_path / "s2", skip_bad=True)
    assert json.loads((tmp_path / "s2" / "shards.json").read_text())["items"] == 12
    assert "bad.wav" in (tmp_path / "s2" / "rejects.tsv").read_text()
    shard = tmp_path / "s2" / "shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[:1500])
    with pytest.raises(ValueError, match="shard-000000.tar"):
        _ids(ShardedAudioDataset(tmp_path / "s2", shuffle=False))


def test_training_reads_a_shard_folder_given_as_the_train_split(tiny_whisper_dir, fsdd_folds, tmp_path):
    from speech_peft.commands.train import compose_config, run

    fold = fsdd_folds / "fold_theo"
    write_shards(fold / "train.jsonl", tmp_path / "train_shards", items_per_shard=2)
    result = run(compose_config([
        f"encoder.name={tiny_whisper_dir}", "data.labels=[0,1,2]", f"data.train={tmp_path / 'train_shards'}",
        f"data.val={fold}/val.jsonl", "data.batch_size=2", "adapter=lora", "logger=none", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false", f"exp_dir={tmp_path}/exp"]), "fit")
    assert result["epochs"] == 2 and (tmp_path / "exp" / "export").is_dir()
