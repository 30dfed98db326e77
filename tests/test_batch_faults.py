"""Batch jobs under faults of the machine: a full disk or an output folder that cannot be written stops the
job with one line and leaves every finished output intact (a rerun resumes); two processes writing into
the same output folder do not corrupt each other."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speech_peft.cli import main

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


@pytest.fixture
def clips(tmp_path) -> Path:
    folder = tmp_path / "clean"
    rng = np.random.default_rng(0)
    for i in range(8):
        folder.mkdir(exist_ok=True)
        sf.write(folder / f"clip{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    return folder


def _degrade(clips: Path, out: Path) -> int:
    return main(["degrade", str(clips), "--out", str(out), "--effects", "noise", "clip", "--seed", "3"])


def _error_lines(stderr: str) -> list[str]:
    """The lines that are not the progress bar."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "file/s]" not in line]


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.wav"))}


@pytest.fixture
def reference(clips, tmp_path) -> dict[str, bytes]:
    assert _degrade(clips, tmp_path / "reference") == 0
    return _outputs(tmp_path / "reference")


def test_a_full_disk_stops_the_job_with_one_line_keeps_finished_outputs_and_a_rerun_completes_them(
        clips, reference, tmp_path, monkeypatch, capsys):
    real_write, calls = sf.write, []

    def fills_up(file, *args, **kwargs):
        calls.append(file)
        if len(calls) == 4:
            Path(file).write_bytes(b"RIFF\x00")  # what a full disk leaves: a partial file
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_write(file, *args, **kwargs)

    monkeypatch.setattr(sf, "write", fills_up)
    out = tmp_path / "out"
    assert _degrade(clips, out) == 1
    (err,) = _error_lines(capsys.readouterr().err)
    assert "No space left on device" in err and str(out / "clip3.wav") in err and "kept" in err
    finished = _outputs(out)
    assert len(finished) == 3 and all(finished[name] == reference[name] for name in finished)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no partial or temporary file left
    monkeypatch.setattr(sf, "write", real_write)
    assert _degrade(clips, out) == 0
    assert _outputs(out) == reference


def test_an_output_folder_that_cannot_be_written_is_one_line_and_nothing_half_written(
        clips, tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("")
    assert _degrade(clips, tmp_path / "a_file" / "out") == 1  # a file where the folder should be
    (err,) = _error_lines(capsys.readouterr().err)
    assert "a_file" in err

    import tempfile

    def refused(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refused)  # root ignores modes: the refusal is injected
    out = tmp_path / "locked"
    assert _degrade(clips, out) == 1
    (err,) = _error_lines(capsys.readouterr().err)
    assert "Permission denied" in err and str(out) in err
    assert not list(out.glob("*.wav"))


def test_a_real_full_filesystem_stops_with_one_line_and_keeps_finished_outputs(clips, reference, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("mounting a 64 KiB tmpfs needs CAP_SYS_ADMIN; the injected full disk above covers the logic")
    try:
        done = subprocess.run([sys.executable, "-m", "speech_peft.cli", "degrade", str(clips), "--out",
                               str(mount / "out"), "--effects", "noise", "clip", "--seed", "3"],
                              capture_output=True, text=True, env=ENV, timeout=300)
        assert done.returncode == 1, done.stderr
        (err,) = _error_lines(done.stderr)
        assert "No space left on device" in err
        finished = _outputs(mount / "out")
        assert 0 < len(finished) < len(reference) and all(finished[n] == reference[n] for n in finished)
        assert not [p for p in (mount / "out").iterdir() if p.name.startswith(".")]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_two_processes_degrading_into_one_folder_write_every_output_whole_and_once(clips, reference, tmp_path):
    out = tmp_path / "shared"
    command = [sys.executable, "-m", "speech_peft.cli", "degrade", str(clips), "--out", str(out),
               "--effects", "noise", "clip", "--seed", "3"]
    runs = [subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    assert _outputs(out) == reference
    assert len((out / "degraded.jsonl").read_text().splitlines()) == len(reference)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
