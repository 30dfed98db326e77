"""Batch jobs lose no output and take no damaged file for a whole one: inputs whose outputs would share a
name are refused, a WAV cut off after its header is named as truncated, and a resumed restore redoes an
output that is empty or short instead of counting it as finished."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from cli_runner import speech_peft

from speech_peft.data.audio import AudioError, probe

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples"


@pytest.fixture
def sentences(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("spk1_snt1", "spk1_snt2", "spk2_snt1"):
        shutil.copy(DATA / "asr" / f"{name}.wav", folder)
    return folder


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_restore_refuses_inputs_that_differ_only_by_extension_naming_both_and_writes_nothing(sentences, tmp_path):
    wave, rate = sf.read(sentences / "spk1_snt1.wav")
    sf.write(sentences / "spk1_snt1.flac", wave, rate)
    done = speech_peft("restore", sentences, tmp_path / "out", "--baseline", "spectral-gating")
    assert done.returncode == 2, done.stderr
    assert "spk1_snt1.wav" in done.stderr and "spk1_snt1.flac" in done.stderr and "overwrite" in done.stderr
    assert not list((tmp_path / "out").rglob("*.wav"))


def test_a_wav_cut_off_after_its_header_is_named_truncated_by_every_reader(sentences, tmp_path):
    _cut(sentences / "spk1_snt2.wav", 0.5)
    with pytest.raises(AudioError, match="spk1_snt2.wav: truncated: the WAV header promises"):
        probe(sentences / "spk1_snt2.wav")
    refused = speech_peft("restore", sentences, tmp_path / "out", "--baseline", "spectral-gating")
    assert refused.returncode == 2 and "spk1_snt2.wav: truncated" in refused.stderr
    skipped = speech_peft("restore", sentences, tmp_path / "out", "--baseline", "spectral-gating", "--skip-bad")
    assert skipped.returncode == 0, skipped.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.wav")) == ["spk1_snt1.wav", "spk2_snt1.wav"]
    assert "spk1_snt2.wav\ttruncated" in (tmp_path / "out" / "rejects.tsv").read_text()


def test_a_wav_whole_or_with_its_size_left_open_is_not_truncated(tmp_path):
    path = tmp_path / "open.wav"
    sf.write(path, np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")
    assert probe(path)[0] == 1600
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at:at + 4] = (0xFFFFFFFF).to_bytes(4, "little")  # a streaming writer's placeholder
    path.write_bytes(bytes(data))
    probe(path)


def test_a_resumed_restore_redoes_an_empty_or_short_output_and_says_so(sentences, tmp_path, caplog):
    whole = tmp_path / "whole"
    assert speech_peft("restore", sentences, whole, "--baseline", "spectral-gating").returncode == 0
    out = tmp_path / "out"
    shutil.copytree(whole, out)
    (out / "spk1_snt1.wav").write_bytes(b"")
    _cut(out / "spk1_snt2.wav", 0.6)
    truncated_copy = sf.read(out / "spk2_snt1.wav")[0][:-400]
    sf.write(out / "spk2_snt1.wav", truncated_copy, 16000, subtype="PCM_16")  # whole file, too few samples
    resumed = speech_peft("restore", sentences, out, "--baseline", "spectral-gating")
    assert resumed.returncode == 0, resumed.stderr
    said = [r.getMessage() for r in caplog.records if "again" in r.getMessage()]
    assert len(said) == 3 and "unreadable" in said[0] and "truncated" in said[1] and "31760 samples" in said[2]
    caplog.clear()
    for name in ("spk1_snt1.wav", "spk1_snt2.wav", "spk2_snt1.wav"):
        assert (out / name).read_bytes() == (whole / name).read_bytes()
    again = speech_peft("restore", sentences, out, "--baseline", "spectral-gating")
    assert '"skipped_existing": 3' in again.stdout and not caplog.records


# --- weights files: a damaged or non-finite adapter is refused naming the file --------------------------

def _saved_lora(directory: Path) -> Path:
    import copy

    from speech_peft.adapters import LoRAConfig, add_adapter, save_adapter
    from speech_peft.encoders.whisper import load_whisper

    model = copy.deepcopy(load_whisper("whisper-tiny.en").model)
    add_adapter(model, LoRAConfig(r=4, target_roles=["attn.q", "attn.v"]), "default")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    return save_adapter(model, directory, base_model_name="whisper-tiny.en")


@pytest.fixture(scope="module")
def saved_lora(tmp_path_factory) -> Path:
    return _saved_lora(tmp_path_factory.mktemp("lora") / "adapter")


def _damaged_copy(saved: Path, where: Path, damage) -> Path:
    shutil.copytree(saved, where)
    weights = where / "adapter.safetensors"
    data = bytearray(weights.read_bytes())
    weights.write_bytes(bytes(damage(data)))
    return where


def _flip_last_byte(data: bytearray) -> bytearray:
    data[-3] ^= 0x40  # inside the last tensor's values: safetensors itself reads it without a word
    return data


def _header_garbled(data: bytearray) -> bytearray:
    data[10:20] = b"\xff" * 10
    return data


@pytest.mark.parametrize("damage, said", [(_flip_last_byte, "do not match the hash saved with them"),
                                          (lambda d: d[: len(d) * 2 // 3], "truncated or damaged"),
                                          (_header_garbled, "truncated or damaged")],
                         ids=["byte-flipped", "truncated", "header-corrupt"])
def test_a_damaged_adapter_is_refused_by_transcribe_in_one_line_naming_the_file(saved_lora, tmp_path, damage, said):
    broken = _damaged_copy(saved_lora, tmp_path / "broken", damage)
    done = speech_peft("transcribe", DATA / "asr" / "spk1_snt1.wav", "--adapter", broken)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(broken / "adapter.safetensors") in lines[0] and said in lines[0], lines


def test_an_adapter_holding_nan_is_refused_before_it_decodes_anything(saved_lora, tmp_path):
    from speech_peft.tensor_files import load_tensors_and_metadata, save_tensors

    nan = tmp_path / "nan"
    shutil.copytree(saved_lora, nan)
    tensors, metadata = load_tensors_and_metadata(nan / "adapter.safetensors")
    first = min(tensors)
    tensors[first][0, 0] = float("nan")
    save_tensors(nan / "adapter.safetensors", tensors, {"storage": metadata["storage"]})
    done = speech_peft("transcribe", DATA / "asr" / "spk1_snt1.wav", "--adapter", nan)
    assert done.returncode == 2 and f"tensor {first!r} holds NaN or infinite values" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_adapter_saved_before_hashes_existed_still_loads_and_transcribes_the_same(saved_lora, tmp_path):
    from safetensors.torch import save_file

    from speech_peft.tensor_files import HASH_KEY, load_tensors_and_metadata

    old = tmp_path / "old"
    shutil.copytree(saved_lora, old)
    tensors, metadata = load_tensors_and_metadata(old / "adapter.safetensors")
    assert HASH_KEY in metadata
    save_file(tensors, str(old / "adapter.safetensors"), metadata={k: v for k, v in metadata.items() if k != HASH_KEY})
    wav = DATA / "asr" / "spk1_snt1.wav"
    assert speech_peft("transcribe", wav, "--adapter", old).stdout == \
        speech_peft("transcribe", wav, "--adapter", saved_lora).stdout


# --- folder scans: a link that leads nowhere is named, never dropped --------------------------------------

@pytest.mark.parametrize("command", ["restore", "transcribe"])
def test_dangling_and_looping_links_in_a_folder_are_errors_or_rejects_never_dropped(sentences, tmp_path, command):
    (sentences / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    (sentences / "loop.wav").symlink_to(sentences / "loop.wav")
    out = tmp_path / "out"
    options = ["--baseline", "spectral-gating"] if command == "restore" else ["--out", out / "t.tsv"]
    target = [sentences, out] if command == "restore" else [sentences]
    refused = speech_peft(command, *target, *options)
    assert refused.returncode == 2 and "gone.wav: a symbolic link that leads nowhere" in refused.stderr
    listed = [] if command == "restore" else ["--rejects", tmp_path / "rejects.tsv"]
    skipped = speech_peft(command, *target, *options, "--skip-bad", *listed)
    assert skipped.returncode == 0, skipped.stderr
    rejects = (out / "rejects.tsv" if command == "restore" else tmp_path / "rejects.tsv").read_text()
    assert "gone.wav" in rejects and "loop.wav" in rejects, rejects


# --- fit: settings checked where the config is composed; an unfinished fit is resumed or refused ---------

@pytest.mark.parametrize("override, said", [
    ("task.lr=-0.01", "task.lr=-0.01: must be a learning rate above 0"),
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc': must be a whole number of epochs"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0: must be a whole number of epochs"),
    ("data.batch_size=2.5", "data.batch_size=2.5: must be a whole number, 1 or more")])
def test_a_nonsense_setting_is_one_line_naming_it_before_anything_is_built(override, said, tmp_path):
    done = speech_peft("fit", override, f"exp_dir={tmp_path}/exp")
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "exp" / "checkpoints").exists()


def test_a_fit_finding_its_unfinished_run_refuses_resumes_when_told_or_starts_over_keeping_the_old(
        tiny_whisper_dir, fsdd_folds, tmp_path, caplog):
    from crash_callback import Killed

    from speech_peft.commands.train import compose_config, run
    from speech_peft.errors import UserError

    caplog.set_level(logging.INFO)
    fold = fsdd_folds / "fold_theo"
    common = [f"encoder.name={tiny_whisper_dir}", "data.labels=[0,1,2]", f"data.train={fold}/train.jsonl",
              f"data.val={fold}/val.jsonl", "data.batch_size=4", "adapter=lora", "logger=none",
              "trainer.limit_train_batches=2", "trainer.max_epochs=2", "callbacks.checkpoint.save_last=true",
              "trainer.enable_progress_bar=false", f"exp_dir={tmp_path}/exp"]
    kill = ["+callbacks.kill._target_=crash_callback.KillAt", "+callbacks.kill.epoch=1", "+callbacks.kill.batch=1"]
    with pytest.raises(Killed):
        run(compose_config([*common, *kill]), "fit")
    config_before = (tmp_path / "exp" / "config.fit.yaml").read_text()
    last = tmp_path / "exp" / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match=f"holds an unfinished fit .*ckpt_path={last}, or train afresh with start_over"):
        run(compose_config(common), "fit")
    assert (tmp_path / "exp" / "config.fit.yaml").read_text() == config_before  # the refused run wrote nothing
    run(compose_config([*common, f"ckpt_path={last}"]), "fit")
    assert "resuming the fit from" in caplog.text and "1 epoch(s) done" in caplog.text
    assert (tmp_path / "exp" / "fit_result.json").is_file()

    (tmp_path / "exp" / "fit_result.json").unlink()  # unfinished again
    run(compose_config([*common, "start_over=true"]), "fit")
    assert (tmp_path / "exp" / "checkpoints.abandoned-1" / "last.ckpt").is_file()
    assert "moved to" in caplog.text and (tmp_path / "exp" / "fit_result.json").is_file()


@pytest.mark.parametrize("command", [["transcribe", "{m}"], ["fit", "data.train={m}", "data.val={m}"]])
def test_an_empty_manifest_is_one_line_naming_it(command, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    done = speech_peft(*[part.format(m=empty) for part in command], *(["exp_dir=" + str(tmp_path / "exp")]
                                                                     if command[0] == "fit" else []))
    assert done.returncode == 2 and f"manifest {empty} is empty: it holds no entries" in done.stderr


# --- messages that say what to do -------------------------------------------------------------------------

def test_a_full_disk_while_transcribe_writes_its_output_names_the_file(tmp_path, monkeypatch):
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(".t."):
            raise OSError(28, "No space left on device")  # what write() raises: no file name
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    done = speech_peft("transcribe", DATA / "asr" / "spk1_snt1.wav", "--out", tmp_path / "t.tsv")
    assert done.returncode == 1 and f"No space left on device: {tmp_path / 't.tsv'}" in done.stderr
    assert not list(tmp_path.iterdir())


def test_score_wer_names_the_file_and_line_of_text_that_is_not_utf8_or_has_no_tab(tmp_path):
    refs = tmp_path / "refs.tsv"
    refs.write_text("a\tone two\nb\tthree\n")
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("a\tone two\nb\tthr\u00e9e\n".encode("latin-1"))
    done = speech_peft("score", "wer", "--ref", refs, "--hyp", latin)
    assert done.returncode == 2 and f"{latin}:2: not UTF-8 text" in done.stderr
    untabbed = tmp_path / "untabbed.tsv"
    untabbed.write_text("a\tone two\nb three\n")
    done = speech_peft("score", "wer", "--ref", refs, "--hyp", untabbed)
    assert done.returncode == 2 and f"{untabbed}:2: no tab" in done.stderr


def test_a_classifier_adapter_given_to_transcribe_is_named_as_one(tmp_path):
    from speech_peft.models.classifier import AudioClassifierModel

    export = AudioClassifierModel(labels=["a", "b"], adapter={"method": "lora", "r": 2, "target_roles": ["attn.q"]}
                                  ).save(tmp_path / "classifier")
    wav = DATA / "asr" / "spk1_snt1.wav"
    inner = speech_peft("transcribe", wav, "--adapter", export / "adapter")
    assert inner.returncode == 2 and "on WhisperEncoderModel, as a classifier's adapter is" in inner.stderr
    whole = speech_peft("transcribe", wav, "--adapter", export)
    assert whole.returncode == 2 and f"{export} is a classifier export, not a saved adapter" in whole.stderr


def test_a_resumed_restore_lists_a_bad_input_once_in_its_rejects(sentences, tmp_path):
    (sentences / "broken.wav").write_bytes(b"not audio")
    for _ in range(2):
        done = speech_peft("restore", sentences, tmp_path / "out", "--baseline", "spectral-gating", "--skip-bad")
        assert done.returncode == 0, done.stderr
    assert len((tmp_path / "out" / "rejects.tsv").read_text().splitlines()) == 1


# --- every input ends in the output or in the rejects file with a reason ---------------------------------

_KINDS = ("good", "empty", "garbage", "cut_off", "nan", "too_short", "dangling")


def _write_input(folder: Path, name: str, kind: str, good: bytes) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "good":
        path.write_bytes(good)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"RIFF not really a wave file" * 3)
    elif kind == "cut_off":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "nan":
        wave = np.full(4000, 0.1, dtype=np.float32)
        wave[7] = np.nan
        sf.write(path, wave, 16000, subtype="FLOAT", format="WAV")
    elif kind == "too_short":
        sf.write(path, np.full(400, 0.1, dtype=np.float32), 16000, format="WAV")
    else:
        path.symlink_to(folder / "missing" / name)


def _folders():
    from hypothesis import strategies as st

    names = st.sampled_from(["a", "b", "c", "sub/a", "sub/d"])
    return st.lists(st.tuples(names, st.sampled_from([".wav", ".WAV", ".flac"]), st.sampled_from(_KINDS)),
                    min_size=1, max_size=5, unique_by=lambda row: row[0] + row[1].lower())


def _check_every_input_accounted(command: str, rows, tmp: Path) -> None:
    good = (DATA / "asr" / "spk1_snt1.wav").read_bytes()
    src = tmp / "in"
    for stem, suffix, kind in rows:
        _write_input(src, stem + suffix, kind, good)
    out, rejects = tmp / "out", tmp / "rejects.tsv"
    args = ([src, out, "--baseline", "spectral-gating", "--skip-bad"] if command == "restore"
            else [src, "--skip-bad", "--rejects", rejects, "--format", "jsonl", "--out", tmp / "t.jsonl"])
    done = speech_peft(command, *args)
    # Inputs whose header passes (NaN samples are found only when read) and share a name: refused, nothing written
    stems = [stem for stem, _, kind in rows if kind in ("good", "nan")]
    if len(set(stems)) < len(stems):
        assert done.returncode == 2 and "more than once" in done.stderr
        assert not (list(out.rglob("*.wav")) if out.exists() else []) and not (tmp / "t.jsonl").exists()
        return
    assert done.returncode == 0, done.stderr
    if command == "restore":
        written = {str(p.relative_to(out).with_suffix("")) for p in out.rglob("*.wav")}
        listed = (out / "rejects.tsv").read_text() if (out / "rejects.tsv").exists() else ""
    else:
        import json

        written = {json.loads(line)["id"] for line in (tmp / "t.jsonl").read_text().splitlines()}
        listed = rejects.read_text() if rejects.exists() else ""
    reasons = {Path(line.split("\t")[0]).relative_to(src).as_posix(): line.split("\t")[1]
               for line in listed.splitlines()}
    for stem, suffix, kind in rows:
        if kind == "good":
            assert stem in written and stem + suffix not in reasons
        else:
            assert reasons.get(stem + suffix, "").strip(), (stem, kind, listed)
    assert len(written) + len(reasons) == len(rows)  # each input once: restored or rejected


@pytest.mark.parametrize("command, examples", [("restore", 25), ("transcribe", 8)])
def test_every_input_ends_in_the_output_or_the_rejects_with_a_reason_and_none_share_an_output(command, examples):
    import tempfile

    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_folders())
    def check(rows):
        with tempfile.TemporaryDirectory() as tmp:
            _check_every_input_accounted(command, rows, Path(tmp))

    check()


def test_a_damaged_restorer_export_is_refused_by_restore_naming_its_weights(sentences, tmp_path):
    from speech_peft.jobs.restore import SHIPPED_RESTORER
    from speech_peft.vocoders.restorer import Restorer

    export = Restorer.from_export(SHIPPED_RESTORER).export(tmp_path / "restorer")  # written with the hash
    weights = export / "vocoder.safetensors"
    weights.write_bytes(bytes(_flip_last_byte(bytearray(weights.read_bytes()))))
    done = speech_peft("restore", sentences, tmp_path / "out", "--checkpoint", export)
    assert done.returncode == 2 and f"{weights}: its tensors do not match" in done.stderr
    assert not (tmp_path / "out").exists()
