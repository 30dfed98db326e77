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


# One missing input for each verb (Lightning's own CLI answers in its own words): ARGS, words the line names.
MISSING_INPUTS = [
    (["validate", "ckpt_path=/no/such.ckpt"], ["/no/such.ckpt"]),
    (["predict", "ckpt_path=/no/such.ckpt"], ["/no/such.ckpt"]),
    (["transcribe", "/no/a.wav"], ["/no/a.wav"]),
    (["export", "--format", "ctranslate2", "--adapter", "/no/adapter", "--out", "{tmp}/ct2"], ["/no/adapter"]),
    (["merge-adapters", "/no/a", "/no/b", "--out", "{tmp}/merged"], ["/no/a"]),
    (["prepare", "fsdd", "/no/fsdd", "{tmp}/manifests"], ["/no/fsdd"]),
    (["degrade", "/no/clean", "--out", "{tmp}/degraded"], ["/no/clean"]),
    (["restore", "/no/degraded", "{tmp}/restored"], ["/no/degraded"]),
    (["report", "cls", "/no/exp", "--out", "{tmp}/R.md", "--command", "bash run.sh"], ["/no/exp"]),
    (["score", "wer", "--ref", "/no/ref.tsv", "--hyp", "/no/hyp.tsv"], ["/no/ref.tsv"]),
    (["shard", "/no/train.jsonl", "{tmp}/shards"], ["/no/train.jsonl"]),
]


@pytest.mark.parametrize("args,words", MISSING_INPUTS, ids=[args[0] for args, _ in MISSING_INPUTS])
def test_every_verb_names_a_missing_input_in_one_line_under_its_own_name(args, words, tmp_path):
    overrides = [f"exp_dir={tmp_path}/exp"] if "=" in args[1] else []
    done = _cli(*[a.format(tmp=tmp_path) for a in args], *overrides)
    _one_line_error(done, f"speech-peft {args[0]}: error:", *words)
    # nothing written, but a Lightning verb's record of the config it was asked to run
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and "exp" not in p.relative_to(tmp_path).parts]


def test_a_user_error_is_one_line_and_a_fault_of_the_program_keeps_its_traceback(capsys):
    """Input validation raises ``UserError`` (status 2, one line naming the problem); a ValueError or KeyError
    from anywhere else is a fault of the program and is not dressed up as the user's."""
    from speech_peft.commands.errors import exit_status
    from speech_peft.errors import UnknownNameError, UserError

    def bad_value():
        raise UserError("data.batch_size 0: must be at least 1")

    assert exit_status("fit", bad_value) == 2
    assert capsys.readouterr().err == "speech-peft fit: error: data.batch_size 0: must be at least 1\n"

    def unknown():
        raise UnknownNameError("no adapter named 'x'; the model has ['default']")

    assert exit_status("transcribe", unknown) == 2
    assert capsys.readouterr().err.endswith("error: no adapter named 'x'; the model has ['default']\n")
    for fault in (ValueError("operands could not be broadcast"), KeyError("layers.7")):
        def program_fault(fault=fault):
            raise fault

        with pytest.raises(type(fault)):
            exit_status("fit", program_fault)
