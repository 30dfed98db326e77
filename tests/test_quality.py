"""Quality metrics agree with what they measure on real speech."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speech_peft.data.audio import load_audio
from speech_peft.data.degrade import add_noise
from speech_peft.metrics import quality

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples"


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return load_audio(DATA / "asr" / "spk1_snt1.wav").numpy()


@pytest.fixture(scope="module")
def noisy(clean) -> np.ndarray:
    import torch
    return add_noise(torch.from_numpy(clean), load_audio(DATA / "noise" / "noise2.wav"), 5.0).numpy()


def test_si_sdr_is_infinite_like_for_a_scaled_copy_and_matches_the_snr_of_white_noise(clean):
    assert quality.si_sdr(clean, 0.5 * clean) > 100
    noise = np.random.default_rng(0).standard_normal(len(clean))
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10)  # 10 dB
    assert quality.si_sdr(clean, clean + noise) == pytest.approx(10.0, abs=0.3)


def test_intrusive_metrics_rank_clean_above_noisy(clean, noisy):
    assert quality.pesq_wb(clean, clean) > 4.4 > quality.pesq_wb(clean, noisy)
    assert quality.stoi(clean, clean) > 0.99 > quality.stoi(clean, noisy)


@pytest.mark.slow
def test_dnsmos_and_speaker_similarity_prefer_the_clean_recording(clean, noisy):
    import random

    import torch
    from speech_peft.data.degrade import colored_noise
    hissy = add_noise(torch.from_numpy(clean), colored_noise(len(clean), "white", random.Random(0)), 0.0).numpy()
    assert quality.dnsmos(clean)["dnsmos_ovrl"] > quality.dnsmos(hissy)["dnsmos_ovrl"] + 0.5
    other = load_audio(DATA / "asr" / "spk2_snt1.wav").numpy()
    same = quality.speaker_similarity(clean, load_audio(DATA / "asr" / "spk1_snt2.wav").numpy())
    assert same > quality.speaker_similarity(clean, other)


def test_quality_command_writes_csv_summary_and_spectrograms(tmp_path):
    import shutil

    import soundfile as sf

    from speech_peft.cli import main
    for name in ("clean", "deg", "res", "ceiling"):
        (tmp_path / name).mkdir()
    for stem in ("spk1_snt1", "spk2_snt1"):
        shutil.copy(DATA / "asr" / f"{stem}.wav", tmp_path / "clean" / f"{stem}.wav")
        wave = load_audio(DATA / "asr" / f"{stem}.wav")
        noisy = add_noise(wave, load_audio(DATA / "noise" / "noise2.wav"), 0.0)
        sf.write(tmp_path / "deg" / f"{stem}.wav", noisy.numpy(), 16000)
        sf.write(tmp_path / "res" / f"{stem}.wav", (0.5 * noisy + 0.5 * wave).numpy(), 16000)
        sf.write(tmp_path / "ceiling" / f"{stem}.wav", wave.numpy(), 16000)
    assert main(["score", "quality", "--ref", str(tmp_path / "clean"), "--deg", str(tmp_path / "deg"),
                 "--out", str(tmp_path / "res"), "--report", str(tmp_path / "report"), "--plots", "1",
                 "--also", f"ceiling={tmp_path / 'ceiling'}", "--no-dnsmos", "--no-speaker"]) == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| degraded |" in summary and "| restored |" in summary and "pesq_wb" in summary
    ceiling = next(line for line in summary.splitlines() if line.startswith("| ceiling |"))
    assert float(ceiling.split("|")[2]) > 4.4  # the clean copy scores as clean
    rows = (tmp_path / "report" / "per_file.csv").read_text().splitlines()
    assert len(rows) == 1 + 6
    assert (tmp_path / "report" / "spectrogram_spk1_snt1.png").stat().st_size > 10_000


def test_score_quality_with_skip_bad_leaves_out_unreadable_and_unpaired_files_and_lists_them(tmp_path, capsys):
    import shutil

    from speech_peft.cli import main

    for name in ("deg", "res"):
        (tmp_path / name).mkdir()
        for stem in ("spk1_snt1", "spk2_snt1"):
            shutil.copy(DATA / "asr" / f"{stem}.wav", tmp_path / name / f"{stem}.wav")
    (tmp_path / "res" / "spk2_snt1.wav").write_text("not audio\n" * 8)
    args = ["score", "quality", "--deg", str(tmp_path / "deg"), "--out", str(tmp_path / "res"),
            "--report", str(tmp_path / "report"), "--plots", "0", "--no-dnsmos", "--no-speaker"]
    assert main(args) == 2
    assert "spk2_snt1.wav" in capsys.readouterr().err
    assert main([*args, "--skip-bad"]) == 0
    rejects = (tmp_path / "report" / "rejects.tsv").read_text()
    assert "res/spk2_snt1.wav\tunreadable" in rejects and "no restored file" in rejects
    rows = (tmp_path / "report" / "per_file.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 and all("spk1_snt1" in r for r in rows[1:])
