"""Miipher-2-style restoration: frozen encoder, adapters-off targets, the loss, WaveFit, restore I/O."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch

from speech_peft.data.audio import load_audio
from speech_peft.restore import build_restorer, load_restorer
from speech_peft.tasks.restoration import DegradedPairs, FeatureCleaner, collate_pairs, feature_loss
from speech_peft.vocoders.wavefit import WaveFit, WaveFitConfig, multi_resolution_stft_loss, wavefit_loss

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def test_feature_loss_is_l1_plus_mse_plus_spectral_convergence():
    clean = torch.tensor([[[3.0, 4.0]]])        # ||S||^2 = 25
    cleaned = torch.tensor([[[3.0, 2.0]]])      # diff (0, 2): L1 mean 1, MSE 2, SC 4 / 25
    assert feature_loss(cleaned, clean).item() == pytest.approx(1.0 + 2.0 + 4 / 25)
    assert feature_loss(clean, clean).item() == 0.0


def test_cleaner_targets_come_from_the_encoder_with_adapters_off_and_the_encoder_never_changes(tiny_whisper_dir):
    cleaner = FeatureCleaner(tiny_whisper_dir, tap_layer=1, bottleneck_dim=8)
    frozen = {k: v.clone() for k, v in cleaner.encoder.state_dict().items() if ".adapters." not in k}
    with torch.no_grad():
        for n, p in cleaner.named_parameters():
            if ".adapters." in n:
                p.normal_(0, 0.2)
    wave = torch.randn(2, 8000) * 0.1
    plain = load_restorer_encoder(tiny_whisper_dir)(wave).hidden
    assert torch.allclose(cleaner.features(wave, clean=True), plain, atol=1e-6)
    assert not torch.allclose(cleaner.features(wave), plain, atol=1e-3)
    pairs = DegradedPairs([_entry("spk1_snt1")], None, seconds=0.5)
    opt = torch.optim.SGD([p for p in cleaner.parameters() if p.requires_grad], lr=0.1)
    cleaner.train()
    for _ in range(2):
        opt.zero_grad()
        cleaner.training_step(collate_pairs([pairs[0]]), 0).backward()
        opt.step()
    after = cleaner.encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())


def load_restorer_encoder(path):
    from speech_peft.encoders.whisper import load_whisper_encoder
    return load_whisper_encoder(path, tap_layer=1)


def _entry(stem):
    from speech_peft.data.manifest import Entry
    return Entry(stem, str(DATA / "asr" / f"{stem}.wav"), 0.0, 16000)


def test_vocoder_iterations_reduce_the_stft_loss_on_a_memorised_clip():
    torch.manual_seed(0)
    clip = load_audio(DATA / "asr" / "spk1_snt1.wav")[8000:8000 + 6400][None]
    feats = torch.randn(1, 20, 16)
    vocoder = WaveFit(WaveFitConfig(feature_dim=16, channels=16, blocks=3, iterations=3))
    opt = torch.optim.Adam(vocoder.parameters(), lr=3e-3)
    noise = torch.randn(1, 6400)
    for _ in range(150):
        opt.zero_grad()
        outputs = vocoder(feats, noise)
        loss = wavefit_loss(outputs, clip) + torch.nn.functional.mse_loss(
            vocoder.target_power(feats).log(), clip.pow(2).mean(-1, keepdim=True).log())
        loss.backward()
        opt.step()
    with torch.no_grad():
        per_iteration = [multi_resolution_stft_loss(y, clip).item() for y in vocoder(feats, noise)]
        start = multi_resolution_stft_loss(vocoder.gain_normalise(noise, vocoder.target_power(feats)), clip).item()
    assert per_iteration[-1] < per_iteration[0] < start
    assert per_iteration[-1] < 0.9 * start


@pytest.fixture(scope="module")
def restorer_dir(tiny_whisper_dir, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cleaner = FeatureCleaner(tiny_whisper_dir, tap_layer=1, bottleneck_dim=8)
    vocoder = WaveFit(WaveFitConfig(feature_dim=32, channels=8, blocks=2, iterations=2))
    return build_restorer(tiny_whisper_dir, 1, vocoder, cleaner.encoder).save(tmp_path_factory.mktemp("restorer"))


@pytest.fixture
def inputs(tmp_path) -> Path:
    src = tmp_path / "in"
    for i, wav in enumerate(sorted((DATA / "asr").glob("*.wav"))):
        (src / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, src / f"sub{i % 2}" / wav.name)
    (src / "sub0" / "broken.wav").write_bytes(b"not audio at all")
    return src


def _restore(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "speech_peft.cli", "restore", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=600, **kwargs)


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.wav")) if not p.name.startswith(".")}


def test_restore_mirrors_the_layout_lists_rejects_and_never_writes_into_its_input(restorer_dir, inputs, tmp_path):
    out = tmp_path / "out"
    done = _restore(inputs, out, "--checkpoint", restorer_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    restored = _outputs(out)
    assert len(restored) == 12 and all(k.startswith(("sub0/", "sub1/")) for k in restored)
    assert "broken.wav" in (out / "rejects.tsv").read_text()
    wave, rate = sf.read(out / "sub0" / "spk1_snt1.wav")
    assert rate == 16000 and len(wave) > 0.9 * len(load_audio(inputs / "sub0" / "spk1_snt1.wav"))
    inside = _restore(inputs, inputs / "restored", "--checkpoint", restorer_dir)
    assert inside.returncode == 2 and "never writes into its input" in inside.stderr
    assert not (inputs / "restored").exists()


@pytest.mark.slow
def test_restore_killed_mid_run_resumes_to_the_same_outputs(restorer_dir, inputs, tmp_path):
    reference = tmp_path / "reference"
    assert _restore(inputs, reference, "--checkpoint", restorer_dir).returncode == 0
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "speech_peft.cli", "restore", str(inputs), str(out),
                             "--checkpoint", str(restorer_dir)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(_outputs(out) if out.exists() else {}) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _outputs(out)
    assert 0 < len(partial) < 12, "the kill must land mid-run"
    assert all(reference.joinpath(k).read_bytes() == v for k, v in partial.items())  # no half-written file
    again = _restore(inputs, out, "--checkpoint", restorer_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _outputs(out) == _outputs(reference)


@pytest.mark.slow
def test_restore_with_two_ddp_processes_restores_every_input_exactly_once(restorer_dir, inputs, tmp_path):
    out = tmp_path / "out"
    done = _restore(inputs, out, "--checkpoint", restorer_dir, "--devices", "2", "--ledger")
    assert done.returncode == 0, done.stderr[-3000:]
    ledgers = [p.read_text().split() for p in sorted(out.glob(".ledger.*"))]
    assert len(ledgers) == 2 and all(ledgers)
    everything = [uid for ledger in ledgers for uid in ledger]
    assert sorted(everything) == sorted(k.removesuffix(".wav") for k in _outputs(out))
    assert len(everything) == len(set(everything)) == 12
