"""One command surface: every verb is listed, and every user error is one line naming the problem."""
from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import Done, speech_peft

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> Done:
    return speech_peft(*args, cwd=ROOT)


def test_help_lists_every_verb_including_lightnings():
    done = _cli("--help")
    assert done.returncode == 0
    for verb in ("fit", "validate", "test", "predict", "lightning", "transcribe", "prepare", "degrade", "restore",
                 "report", "score", "export", "merge-adapters"):
        assert f"    {verb}" in done.stdout, verb


def _one_line_error(done: Done, *words: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.startswith("speech-peft")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("args,words", [
    (["fit", "adapter.method=nope"], ["unknown adapter method 'nope'", "lora"]),
    (["fit", "trainer.no_such_key=1"], ["no_such_key"]),
    (["fit", "task=nope"], ["task/nope"]),
    (["test", "ckpt_path=/no/such.ckpt"], ["/no/such.ckpt"]),
    (["fit", "task=restore_cleaner", "encoder.name=whisper-tiny.en"], ["RestorationData", "ManifestDataModule"]),
], ids=["unknown-method", "bad-override", "unknown-task", "missing-checkpoint", "task-and-data-mismatch"])
def test_lightning_verbs_report_user_errors_in_one_line(args, words, tmp_path):
    _one_line_error(_cli(*args, f"exp_dir={tmp_path}/exp"), *words)


def test_options_that_do_not_apply_are_refused_not_ignored(tmp_path):
    wav = ROOT / "data" / "speech_samples" / "asr" / "spk1_snt1.wav"
    _one_line_error(_cli("transcribe", str(wav), "--candidates", "2"), "do not apply", "--candidates")
    _one_line_error(_cli("prepare", "folder", str(wav.parent), str(tmp_path), "--long-items", "3", "3"),
                    "fsdd_long")
    _one_line_error(_cli("report", "asr", str(tmp_path), "--out", str(tmp_path / "R.md"), "--candidates", "2"), "--evaluate")
    _one_line_error(_cli("transcribe", str(tmp_path / "missing.wav")), "missing.wav")
    done = _cli("report", "cls", str(tmp_path), "--out", str(tmp_path / "R.md"), "--measure", "a", "b")
    assert done.returncode == 2 and "unrecognized arguments: --measure" in done.stderr
