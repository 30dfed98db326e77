"""Miipher-2-style restoration: frozen encoder, adapters-off targets, the loss, WaveFit, restore I/O."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from cli_runner import Done, speech_peft

from speech_peft.data.audio import load_audio, save_audio
from speech_peft.data.pairs import DegradedPairs, collate_pairs
from speech_peft.tasks.restoration import FeatureCleaner, feature_loss
from speech_peft.vocoders.restorer import Restorer
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
    return Restorer(cleaner.encoder, vocoder, tiny_whisper_dir, 1).export(tmp_path_factory.mktemp("restorer"))


@pytest.fixture
def inputs(tmp_path) -> Path:
    src = tmp_path / "in"
    for i, wav in enumerate(sorted((DATA / "asr").glob("*.wav"))):
        (src / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, src / f"sub{i % 2}" / wav.name)
    (src / "sub0" / "broken.wav").write_bytes(b"not audio at all")
    sf.write(src / "sub1" / "short.wav", np.full(800, 0.1, dtype=np.float32), 16000)  # 50 ms
    nan = np.full(8000, 0.1, dtype=np.float32)
    nan[100] = np.nan
    sf.write(src / "sub1" / "nan.wav", nan, 16000, subtype="FLOAT")
    return src


def _restore(*args) -> Done:
    return speech_peft("restore", *args)


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.wav")) if not p.name.startswith(".")}


def test_restore_mirrors_the_layout_lists_rejects_and_never_writes_into_its_input(restorer_dir, inputs, tmp_path):
    refused = _restore(inputs, tmp_path / "refused", "--checkpoint", restorer_dir)
    assert refused.returncode == 2 and "broken.wav" in refused.stderr and "Traceback" not in refused.stderr
    assert not list((tmp_path / "refused").rglob("*.wav"))  # nothing written before the bad file was found
    out = tmp_path / "out"
    done = _restore(inputs, out, "--checkpoint", restorer_dir, "--skip-bad")
    assert done.returncode == 0, done.stderr[-2000:]
    restored = _outputs(out)
    assert len(restored) == 12 and all(k.startswith(("sub0/", "sub1/")) for k in restored)
    rejected = (out / "rejects.tsv").read_text()
    assert "broken.wav" in rejected and "short.wav\ttoo short" in rejected and "nan.wav\tcontains NaN" in rejected
    for bad, problem in (("short.wav", "too short"), ("nan.wav", "NaN")):  # each alone, without --skip-bad
        alone = tmp_path / f"only_{bad}"
        alone.mkdir()
        shutil.copy(inputs / "sub1" / bad, alone)
        done_alone = _restore(alone, tmp_path / f"out_{bad}", "--checkpoint", restorer_dir)
        assert done_alone.returncode == 2 and bad in done_alone.stderr and problem in done_alone.stderr
        assert "Traceback" not in done_alone.stderr and not list((tmp_path / f"out_{bad}").rglob("*.wav"))
    wave, rate = sf.read(out / "sub0" / "spk1_snt1.wav")
    assert rate == 16000 and len(wave) > 0.9 * len(load_audio(inputs / "sub0" / "spk1_snt1.wav"))
    mixed = _restore(inputs, out, "--checkpoint", restorer_dir, "--skip-bad", "--copy-synthesis")
    assert mixed.returncode == 2 and "another restorer" in mixed.stderr and _outputs(out) == restored
    inside = _restore(inputs, inputs / "restored", "--checkpoint", restorer_dir)
    assert inside.returncode == 2 and "never writes into its input" in inside.stderr
    assert not (inputs / "restored").exists()


@pytest.mark.slow
def test_restore_killed_mid_run_resumes_to_the_same_outputs(restorer_dir, inputs, tmp_path):
    reference = tmp_path / "reference"
    assert _restore(inputs, reference, "--checkpoint", restorer_dir, "--skip-bad").returncode == 0
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "speech_peft.cli", "restore", str(inputs), str(out),
                             "--checkpoint", str(restorer_dir), "--skip-bad"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(_outputs(out) if out.exists() else {}) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _outputs(out)
    assert 0 < len(partial) < 12, "the kill must land mid-run"
    assert all(reference.joinpath(k).read_bytes() == v for k, v in partial.items())  # no half-written file
    again = _restore(inputs, out, "--checkpoint", restorer_dir, "--skip-bad")
    assert again.returncode == 0, again.stderr[-2000:]
    assert _outputs(out) == _outputs(reference)


@pytest.mark.slow
def test_restore_with_two_ddp_processes_restores_every_input_exactly_once(restorer_dir, inputs, tmp_path):
    out = tmp_path / "out"
    # Two processes need a process of their own: Lightning starts the second by running the first's command.
    done = subprocess.run([sys.executable, "-m", "speech_peft.cli", "restore", str(inputs), str(out), "--checkpoint",
                           str(restorer_dir), "--devices", "2", "--ledger", "--skip-bad"], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ledgers = [p.read_text().split() for p in sorted(out.glob(".ledger.*"))]
    assert len(ledgers) == 2 and all(ledgers)
    everything = [uid for ledger in ledgers for uid in ledger]
    assert sorted(everything) == sorted(k.removesuffix(".wav") for k in _outputs(out))
    assert len(everything) == len(set(everything)) == 12


@pytest.mark.slow
def test_restore_with_more_processes_than_inputs_restores_the_one_input_and_says_nothing_else(restorer_dir, tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(DATA / "asr" / "spk1_snt1.wav", tmp_path / "in")
    done = subprocess.run([sys.executable, "-m", "speech_peft.cli", "restore", str(tmp_path / "in"),
                           str(tmp_path / "out"), "--checkpoint", str(restorer_dir), "--devices", "2"], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["restored_here"] == 1
    assert [p.name for p in (tmp_path / "out").glob("*.wav")] == ["spk1_snt1.wav"]


def _restore_cfg(tiny_whisper_dir, tmp_path, task, *overrides):
    from speech_peft.commands.train import compose_config
    from speech_peft.data.builders import from_folder
    from speech_peft.data.manifest import write_manifest

    manifest = tmp_path / "clean.jsonl"
    if not manifest.exists():
        write_manifest(from_folder(DATA / "asr"), manifest)
    vocoder = ["task.vocoder.feature_dim=32", "task.vocoder.channels=8", "task.vocoder.blocks=2",
               "task.vocoder.iterations=2"] if task == "restore_vocoder" else []
    return compose_config([
        f"task={task}", "data=restore", f"encoder.name={tiny_whisper_dir}", f"data.train={manifest}",
        f"data.val={manifest}", "data.seconds=0.5", "data.batch_size=4", "task.tap_layer=1",
        "task.bottleneck_dim=8", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "logger=none",
        f"data.degrade.noise_files=[{DATA / 'noise' / 'noise2.wav'}]", *vocoder, *overrides])


def test_three_training_stages_run_through_fit_and_export_a_restorer_that_restore_reads(tiny_whisper_dir, tmp_path):
    from speech_peft.commands.train import run

    cleaner = run(_restore_cfg(tiny_whisper_dir, tmp_path, "restore_cleaner", f"exp_dir={tmp_path}/cleaner"), "fit")
    assert cleaner["trainable_params"] == sum(p.numel() for n, p in FeatureCleaner(
        tiny_whisper_dir, tap_layer=1, bottleneck_dim=8).named_parameters() if ".adapters." in n)
    cleaner_dir = tmp_path / "cleaner" / "export"
    bridge = ["task.bridge.channels=16", "task.bridge.blocks=1"]
    clean = run(_restore_cfg(tiny_whisper_dir, tmp_path, "restore_bridge", f"exp_dir={tmp_path}/bridge_clean",
                             f"task.cleaner_dir={cleaner_dir}", *bridge), "fit")
    assert len(clean["epoch_times_s"]) == 2
    with pytest.raises(ValueError, match="cleaner_dir"):
        run(_restore_cfg(tiny_whisper_dir, tmp_path, "restore_bridge", "task.stage=cleaned",
                         f"exp_dir={tmp_path}/bad", *bridge), "fit")
    run(_restore_cfg(tiny_whisper_dir, tmp_path, "restore_bridge", "task.stage=cleaned", *bridge,
                     f"task.cleaner_dir={cleaner_dir}", f"task.init_bridge={tmp_path}/bridge_clean/export/vocoder.safetensors",
                     f"exp_dir={tmp_path}/bridge_cleaned"), "fit")

    restorer = Restorer.from_export(tmp_path / "bridge_cleaned" / "export")
    trained = Restorer.from_export(tmp_path / "bridge_clean" / "export")
    assert restorer.backend == trained.backend == "hifigan"
    # Stage 3 starts from stage 2's bridge and moves it; both carry the stage-1 cleaner unchanged.
    assert any(not torch.equal(a, b) for a, b in zip(restorer.vocoder.bridge.state_dict().values(),
                                                     trained.vocoder.bridge.state_dict().values()))
    from safetensors.torch import load_file
    saved = load_file(cleaner_dir / "cleaner" / "adapter.safetensors")
    mine = {k: v for k, v in restorer.encoder.state_dict().items() if ".adapters." in k}
    assert len(saved) == len(mine) and all(any(torch.equal(v, w) for w in mine.values()) for v in saved.values())
    assert restorer(load_audio(DATA / "asr" / "spk1_snt1.wav")[None, :8000]).shape == (1, 8000)
    # The bridge that also reads the input's own log-mel trains through the same stage and exports a restorer.
    run(_restore_cfg(tiny_whisper_dir, tmp_path, "restore_bridge", "task.stage=cleaned", *bridge,
                     "task.bridge.inputs=features+mel", f"task.cleaner_dir={cleaner_dir}",
                     f"exp_dir={tmp_path}/bridge_mel"), "fit")
    with_mel = Restorer.from_export(tmp_path / "bridge_mel" / "export")
    assert with_mel.vocoder.bridge.config.inputs == "features+mel"
    assert with_mel(load_audio(DATA / "asr" / "spk1_snt1.wav")[None, :8000]).shape == (1, 8000)

    # The recipe's evaluation path on the trained restorer: restore, copy-synthesis, quality, report.
    from speech_peft.data.degrade import DegradeConfig
    from speech_peft.evaluation.restoration import measure_restorer
    from speech_peft.jobs.degrade import degrade_to_disk
    from speech_peft.jobs.restore import RestorerChoice, restore
    from speech_peft.reports.quality import score_quality
    from speech_peft.reports.restoration import write_restoration_report

    clean_dir = tmp_path / "eval_clean"
    clean_dir.mkdir()
    for stem in ("spk1_snt1", "spk2_snt2"):
        shutil.copy(DATA / "asr" / f"{stem}.wav", clean_dir)
    exp, restorer_dir = tmp_path, tmp_path / "bridge_cleaned" / "export"  # the recipe's layout
    manifest = degrade_to_disk([str(clean_dir)], str(tmp_path / "degraded"), DegradeConfig(
        effects=("noise",), p_clean=0.0, noise_files=[str(DATA / "noise" / "noise3.wav")]))
    restore(str(tmp_path / "degraded"), str(tmp_path / "restored"), RestorerChoice(str(restorer_dir)), progress=False)
    restore(str(clean_dir), str(tmp_path / "ceiling"), RestorerChoice(str(restorer_dir), copy_synthesis=True),
            progress=False)
    wave = load_audio(clean_dir / "spk1_snt1.wav")[None]
    bare = load_restorer_encoder(tiny_whisper_dir)
    with torch.no_grad():
        expected = restorer.vocoder.synthesise(bare(wave).hidden, wave.shape[-1])
    assert torch.allclose(load_audio(tmp_path / "ceiling" / "spk1_snt1.wav"), expected[0].clamp(-1, 1), atol=1e-3)

    measured = measure_restorer(restorer_dir, manifest)
    with torch.no_grad():
        l1 = [(bare(load_audio(tmp_path / "degraded" / f"{s}.wav")[None]).hidden -
               bare(load_audio(clean_dir / f"{s}.wav")[None]).hidden).abs().mean().item() for s in ("spk1_snt1", "spk2_snt2")]
    assert measured["files"] == 2 and measured["l1_degraded"] == pytest.approx(sum(l1) / 2, rel=1e-5)
    assert measured["rtf"] > 0 and measured["l1_cleaned"] > 0 and measured["backend"] == "hifigan"
    (exp / "measure.json").write_text(__import__("json").dumps(measured))
    score_quality(str(tmp_path / "degraded"), str(tmp_path / "restored"), str(clean_dir), str(exp / "quality"),
                  plots=0, speaker=False, non_intrusive=False, extra={"ceiling": str(tmp_path / "ceiling")})
    report = write_restoration_report(exp, tmp_path / "RESULTS.md", "bash run.sh").read_text()
    assert f"{measured['l1_degraded']:.4f}" in report and "| ceiling |" in report
    assert "| 3 bridge fine-tuned on cleaned features |" in report


def test_the_wavefit_backend_trains_through_fit_and_exports_a_restorer(tiny_whisper_dir, tmp_path):
    from speech_peft.commands.train import run

    run(_restore_cfg(tiny_whisper_dir, tmp_path, "restore_cleaner", f"exp_dir={tmp_path}/cleaner",
                     "trainer.max_epochs=1"), "fit")
    run(_restore_cfg(tiny_whisper_dir, tmp_path, "restore_vocoder", f"exp_dir={tmp_path}/vocoder",
                     f"task.cleaner_dir={tmp_path}/cleaner/export", "trainer.max_epochs=1"), "fit")
    restorer = Restorer.from_export(tmp_path / "vocoder" / "export")
    assert restorer.backend == "wavefit"
    wave = load_audio(DATA / "asr" / "spk1_snt1.wav")[None, :8000]
    first, again = restorer(wave), restorer(wave)
    assert first.shape == (1, 8000) and torch.equal(first, again)  # seeded start noise: deterministic


def test_validation_pairs_repeat_every_epoch_while_training_pairs_vary_with_the_epoch_alone():
    from speech_peft.data.degrade import DegradeConfig

    config = DegradeConfig(effects=("noise",), p_clean=0.0)
    from speech_peft.data.pairs import EpochDraws

    pairs = DegradedPairs([_entry("spk1_snt1"), _entry("spk2_snt1")], config, seconds=0.5, repeats=2)
    assert len(pairs) == 4
    first = [pairs[i][1] for i in range(len(pairs))]
    assert all(torch.equal(a, pairs[i][1]) for i, a in enumerate(first))  # validation: the same pairs again
    assert not torch.equal(first[0], first[2])  # two crops of the same recording differ
    draws = EpochDraws(len(pairs), seed=0)
    epochs = []
    for epoch in (0, 1, 1):
        draws.set_epoch(epoch)
        epochs.append(list(draws))
    assert sorted(d % 4 for d in epochs[1]) == [0, 1, 2, 3]  # every crop once per epoch
    assert epochs[1] == epochs[2] and epochs[0] != epochs[1]  # a function of the epoch alone
    assert not torch.equal(pairs[0][1], pairs[4][1])  # crop 0 in epoch 1 (draw 4): a new pair


def test_restore_without_a_checkpoint_uses_the_shipped_restorer(tmp_path):
    from speech_peft.jobs.restore import SHIPPED_RESTORER
    from speech_peft.metrics.wer import read_references, score

    assert (SHIPPED_RESTORER / "export.json").is_file(), "the recipe's restorer ships with the package"
    clean = tmp_path / "clean"
    clean.mkdir()
    for stem in ("spk1_snt1", "spk2_snt1"):
        shutil.copy(DATA / "asr" / f"{stem}.wav", clean)
    done = _restore(clean, tmp_path / "out")
    assert done.returncode == 0, done.stderr[-2000:]
    from speech_peft.data.builders import from_folder
    from speech_peft.jobs.transcribe import transcribe_entries

    hyps = transcribe_entries(from_folder(tmp_path / "out"), progress=False)
    refs = read_references(str(DATA / "asr" / "transcripts.tsv"))
    # Clean speech through the restorer stays intelligible (the recipe's table has the full numbers).
    assert score([refs[k] for k in hyps], list(hyps.values())).wer <= 0.3


def test_spectral_gating_is_a_baseline_restore_runs_without_a_trained_model(tmp_path):
    """``restore --baseline spectral-gating``: the denoiser a trained restorer is compared with; it lowers the
    noise added to a real sentence, keeps every sample, and cannot be mixed with a trained restorer's outputs."""
    from speech_peft.data.degrade import add_noise

    clean = load_audio(DATA / "asr" / "spk1_snt1.wav")
    noise = load_audio(DATA / "noise" / "noise4.wav")
    (tmp_path / "in").mkdir()
    save_audio(tmp_path / "in" / "noisy.wav", add_noise(clean, noise, 0.0), 16000)
    done = _restore(tmp_path / "in", tmp_path / "out", "--baseline", "spectral-gating")
    assert done.returncode == 0, done.stderr
    gated = load_audio(tmp_path / "out" / "noisy.wav")
    noisy = load_audio(tmp_path / "in" / "noisy.wav")
    assert gated.shape == noisy.shape
    from speech_peft.metrics.quality import si_sdr

    assert si_sdr(clean.numpy(), gated.numpy()) > si_sdr(clean.numpy(), noisy.numpy()) + 2.0  # 0 dB -> about 4 dB
    both = _restore(tmp_path / "in", tmp_path / "other", "--baseline", "spectral-gating", "--checkpoint", "x")
    assert both.returncode == 2 and "name two restorers" in both.stderr
    mixed = _restore(tmp_path / "in", tmp_path / "out")  # the shipped restorer into the baseline's folder
    assert mixed.returncode == 2 and "holds outputs of another restorer" in mixed.stderr


def test_a_bridge_that_reads_only_the_inputs_mel_trains_the_cleaned_stage_without_a_cleaner(tiny_whisper_dir,
                                                                                           tmp_path):
    from speech_peft.tasks.bridge import BridgeTraining

    task = BridgeTraining(bridge={"inputs": "mel", "channels": 16, "blocks": 1}, stage="cleaned",
                          encoder_name=tiny_whisper_dir, tap_layer=1)
    clean = load_audio(DATA / "asr" / "spk1_snt1.wav")[None, :16000]
    batch = (["a"], clean + 0.05 * torch.randn_like(clean), clean, torch.tensor([16000]))
    assert task.training_step(batch, 0).item() > 0 and not hasattr(task.bridge, "conv_in")
    gain = BridgeTraining(bridge={"inputs": "mel", "channels": 16, "blocks": 1}, stage="cleaned",
                          encoder_name=tiny_whisper_dir, tap_layer=1, synthesis="input_gain")
    assert gain.training_step(batch, 0).item() > 0 and gain.export(tmp_path / "gain").joinpath("export.json").is_file()
    assert json.loads((tmp_path / "gain" / "export.json").read_text())["config"]["synthesis"] == "input_gain"
    with pytest.raises(ValueError, match="cleaner_dir"):  # a bridge that reads features still needs the cleaner
        BridgeTraining(bridge={"channels": 16, "blocks": 1}, stage="cleaned", encoder_name=tiny_whisper_dir, tap_layer=1)


def test_an_input_gain_bridge_is_validated_on_what_its_export_delivers(tiny_whisper_dir):
    """A prediction above the input everywhere restores nothing (gains never raise): validation scores it as
    the input itself, whatever its prediction's own loss, so such a checkpoint is never the best."""
    from speech_peft.tasks.bridge import BridgeTraining
    from speech_peft.vocoders.bridge import mel_loss
    from speech_peft.vocoders.hifigan import target_mel

    task = BridgeTraining(bridge={"inputs": "mel", "channels": 16, "blocks": 1}, stage="cleaned",
                          encoder_name=tiny_whisper_dir, tap_layer=1, synthesis="input_gain")
    clean = load_audio(DATA / "asr" / "spk1_snt1.wav")[None, :16000]
    noisy = clean + 0.05 * torch.randn_like(clean)
    logged = {}
    task.log = lambda name, value, **_: logged.__setitem__(name, float(value))
    with torch.no_grad():
        task.bridge.conv_out.bias.fill_(3.0)  # far above the input in every band
        task.validation_step((["a"], noisy, clean, torch.tensor([16000])), 0)
    as_input = mel_loss(target_mel(noisy), target_mel(clean)).item()
    assert logged["val/loss"] == pytest.approx(as_input, rel=1e-5)
    assert logged["val/prediction_loss"] > as_input + 1


def test_the_compressed_gain_objective_charges_more_for_cutting_loud_speech_than_for_cutting_a_quiet_band():
    from speech_peft.tasks.bridge import compressed_loss

    target = torch.full((1, 80, 10), -8.0)
    target[:, :40] = 1.0  # loud speech bands, the rest near silence
    cut_loud, cut_quiet = target.clone(), target.clone()
    cut_loud[:, :40] -= 0.7   # about 6 dB
    cut_quiet[:, 40:] -= 0.7
    assert compressed_loss(target, target) == 0
    assert compressed_loss(cut_loud, target) > 10 * compressed_loss(cut_quiet, target)
    assert (cut_loud - target).abs().mean() == (cut_quiet - target).abs().mean()  # to L1 on log-mel, the same


def test_the_ceiling_gain_objective_charges_more_for_cutting_past_the_clean_level_than_for_leaving_noise(
        tiny_whisper_dir):
    """Gains are scored against the ceiling's (the input lowered toward the clean file's own mel): cutting a
    band 6 dB deeper than the ceiling (into the words) costs OVERCUT_COST times leaving it 6 dB too loud."""
    from speech_peft.tasks.bridge import OVERCUT_COST, BridgeTraining, ceiling_gain_loss

    ceiling = torch.full((1, 80, 10), -1.0)
    assert ceiling_gain_loss(ceiling, ceiling) == 0
    assert ceiling_gain_loss(ceiling - 0.7, ceiling) == pytest.approx(OVERCUT_COST * ceiling_gain_loss(ceiling + 0.7,
                                                                                                        ceiling))
    task = BridgeTraining(bridge={"inputs": "mel", "channels": 16, "blocks": 1}, stage="cleaned",
                          encoder_name=tiny_whisper_dir, tap_layer=1, synthesis="input_gain", objective="ceiling_gain")
    task.log = lambda *args, **kwargs: None
    clean = load_audio(DATA / "asr" / "spk1_snt1.wav")[None, :16000]
    noisy = clean + 0.003 * torch.randn_like(clean)  # a faint hiss under the speech
    untrained = task.training_step((["a"], noisy, clean, torch.tensor([16000])), 0)  # the input: hiss left in
    with torch.no_grad():
        task.bridge.conv_out.bias.fill_(-2.3)  # every band 20 dB down: the words cut too
    assert task.training_step((["a"], noisy, clean, torch.tensor([16000])), 0) > untrained


def test_with_overcut_loudness_cutting_the_talkers_loud_bands_costs_more_than_cutting_quiet_ones(tiny_whisper_dir):
    """The same over-cut (6 dB past the ceiling) costs more in the bands where the clean speech is loud than
    in bands 30 dB quieter; without the weight both cost the same. Leaving noise in is never reweighted."""
    from speech_peft.errors import UserError
    from speech_peft.tasks.bridge import BridgeTraining, ceiling_gain_loss

    clean = torch.full((1, 80, 10), -9.0)
    clean[:, :40] = -2.0  # loud formant bands; the rest ~30 dB down
    ceiling = torch.full((1, 80, 10), -1.0)
    cut_loud, cut_quiet, noisy_loud = ceiling.clone(), ceiling.clone(), ceiling.clone()
    cut_loud[:, :40] -= 0.7
    cut_quiet[:, 40:] -= 0.7
    noisy_loud[:, :40] += 0.7
    assert ceiling_gain_loss(cut_loud, ceiling) == ceiling_gain_loss(cut_quiet, ceiling)
    weighted = [ceiling_gain_loss(g, ceiling, clean, overcut_loudness=4.0) for g in (cut_loud, cut_quiet, noisy_loud)]
    assert weighted[0] > 3 * weighted[1]
    assert weighted[2] == ceiling_gain_loss(noisy_loud, ceiling)
    with pytest.raises(UserError, match="overcut_loudness"):
        BridgeTraining(bridge={"inputs": "mel", "channels": 16, "blocks": 1}, encoder_name=tiny_whisper_dir,
                       tap_layer=1, synthesis="input_gain", objective="compressed_gain", overcut_loudness=2.0)


def test_the_compressed_gain_objective_needs_input_gains_and_keeps_a_gradient_above_the_input(tiny_whisper_dir):
    from speech_peft.errors import UserError
    from speech_peft.tasks.bridge import BridgeTraining

    task = BridgeTraining(bridge={"inputs": "mel", "channels": 16, "blocks": 1}, stage="cleaned",
                          encoder_name=tiny_whisper_dir, tap_layer=1, synthesis="input_gain",
                          objective="compressed_gain")
    task.log = lambda *args, **kwargs: None
    clean = load_audio(DATA / "asr" / "spk1_snt1.wav")[None, :16000]
    with torch.no_grad():
        task.bridge.conv_out.bias.fill_(1.0)  # above the input everywhere: gains of 0 dB
    task.training_step((["a"], clean, clean, torch.tensor([16000])), 0).backward()
    assert float(task.bridge.conv_out.bias.grad.sum()) > 0  # still pulled down, by the prediction's share
    with pytest.raises(UserError, match="needs task.synthesis=input_gain"):
        BridgeTraining(bridge={"inputs": "mel"}, encoder_name=tiny_whisper_dir, objective="compressed_gain")
    with pytest.raises(UserError, match="task.objective='l2'"):
        BridgeTraining(bridge={"inputs": "mel"}, encoder_name=tiny_whisper_dir, objective="l2")


def test_an_untrained_mel_restorer_with_input_gain_synthesis_hands_back_its_input(tiny_whisper_dir, tmp_path):
    from speech_peft.vocoders.bridge import BridgeConfig, BridgedHiFiGAN, FeatureToMel

    cleaner = FeatureCleaner(tiny_whisper_dir, tap_layer=1, bottleneck_dim=8)
    bridge = FeatureToMel(BridgeConfig(feature_dim=32, channels=8, blocks=1, inputs="mel"))
    vocoder = BridgedHiFiGAN(bridge, generator=torch.nn.Identity(), synthesis="input_gain")
    export = Restorer(cleaner.encoder, vocoder, tiny_whisper_dir, 1).export(tmp_path / "restorer")
    assert json.loads((export / "export.json").read_text())["config"]["synthesis"] == "input_gain"
    (tmp_path / "in").mkdir()
    shutil.copy(DATA / "asr" / "spk1_snt1.wav", tmp_path / "in")
    assert _restore(tmp_path / "in", tmp_path / "out", "--checkpoint", export).returncode == 0
    heard, restored = load_audio(tmp_path / "in" / "spk1_snt1.wav"), load_audio(tmp_path / "out" / "spk1_snt1.wav")
    assert (heard - restored).abs().max().item() < 1e-3  # only the 16-bit file's rounding differs
    spoken = _restore(tmp_path / "in", tmp_path / "spoken", "--checkpoint", export, "--synthesis", "vocoder",
                      "--student")  # the shipped student speaks the (unchanged) input mel
    assert spoken.returncode == 0 and (tmp_path / "spoken" / "spk1_snt1.wav").is_file()
    refused = _restore(tmp_path / "in", tmp_path / "other", "--checkpoint", export, "--student")
    assert refused.returncode == 2 and "speaks through no vocoder" in refused.stderr
    assert not (tmp_path / "other").exists()  # a refused restorer claims no output folder


def test_the_noise_floor_is_each_bands_quiet_level_and_speech_bursts_above_it_do_not_move_it():
    from speech_peft.vocoders.bridge import noise_floor

    steady = torch.full((1, 80, 200), -6.0)
    bursty = steady.clone()
    bursty[:, :, 50:120] += 5.0  # speech over the noise in most of the frames but not the quietest
    assert torch.allclose(noise_floor(bursty), torch.full((1, 80, 1), -6.0))
    assert torch.allclose(noise_floor(steady - 3.0), torch.full((1, 80, 1), -9.0))


def test_a_noise_aware_bridge_started_from_a_trained_one_predicts_what_it_did_then_learns_the_floor(
        tiny_whisper_dir, tmp_path):
    """The floor's input starts at zero: fine-tuning begins exactly at the bridge it started from."""
    from speech_peft.tasks.bridge import BridgeTraining
    from speech_peft.tensor_files import save_tensors
    from speech_peft.vocoders.bridge import BridgeConfig, FeatureToMel

    plain = FeatureToMel(BridgeConfig(inputs="mel", channels=16, blocks=1))
    torch.nn.init.normal_(plain.conv_out.weight, std=0.05)
    save_tensors(tmp_path / "plain.safetensors", plain.state_dict())
    task = BridgeTraining(bridge={"inputs": "mel", "channels": 16, "blocks": 1, "noise_floor": True}, stage="cleaned",
                          encoder_name=tiny_whisper_dir, tap_layer=1, synthesis="input_gain",
                          init_bridge=str(tmp_path / "plain.safetensors"))
    mel = torch.randn(2, 80, 60)
    assert torch.equal(task.bridge(None, 60, mel), plain(None, 60, mel))
    clean = load_audio(DATA / "asr" / "spk1_snt1.wav")[None, :16000]
    task.training_step((["a"], clean + 0.05 * torch.randn_like(clean), clean, torch.tensor([16000])), 0).backward()
    assert task.bridge.floor_in.weight.grad.abs().sum() > 0
    other = FeatureToMel(BridgeConfig(inputs="mel", channels=8, blocks=1))
    save_tensors(tmp_path / "other.safetensors", other.state_dict())
    with pytest.raises(ValueError, match="not a bridge of this shape"):
        BridgeTraining(bridge={"inputs": "mel", "channels": 16, "blocks": 1, "noise_floor": True}, stage="cleaned",
                       encoder_name=tiny_whisper_dir, tap_layer=1, init_bridge=str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="noise_floor"):
        BridgeConfig(inputs="features", noise_floor=True)


def test_a_guided_bridge_started_from_a_trained_one_predicts_what_it_did_then_learns_from_rnnoise(
        tiny_whisper_dir, tmp_path):
    """The guide's input starts at zero, as the floor's does; what it reads is how RNNoise lowered each band
    (never above 0, never below -40 dB), and the restorer exported with it runs RNNoise itself."""
    from speech_peft.tasks.bridge import BridgeTraining
    from speech_peft.tensor_files import save_tensors
    from speech_peft.vocoders.bridge import GUIDE_FLOOR, BridgeConfig, BridgedHiFiGAN, FeatureToMel
    from speech_peft.vocoders.hifigan import target_mel

    plain = FeatureToMel(BridgeConfig(inputs="mel", channels=16, blocks=1))
    torch.nn.init.normal_(plain.conv_out.weight, std=0.05)
    save_tensors(tmp_path / "plain.safetensors", plain.state_dict())
    guided = {"inputs": "mel", "channels": 16, "blocks": 1, "guide": "rnnoise"}
    task = BridgeTraining(bridge=guided, stage="cleaned", encoder_name=tiny_whisper_dir, tap_layer=1,
                          synthesis="input_gain", init_bridge=str(tmp_path / "plain.safetensors"))
    clean = load_audio(DATA / "asr" / "spk1_snt1.wav")[None, :16000]
    noisy = clean + 0.05 * torch.randn_like(clean)
    mel = target_mel(noisy)
    guide = task.bridge.guide_mel(noisy, mel.shape[-1])
    assert torch.equal(task.bridge(None, mel.shape[-1], mel, guide), plain(None, mel.shape[-1], mel))
    lowered = guide - mel
    assert lowered.median() < -1.0  # RNNoise takes most bands of white noise down by more than 8.7 dB
    task.training_step((["a"], noisy, clean, torch.tensor([16000])), 0).backward()
    assert task.bridge.guide_in.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="give the guide.s log-mel"):
        task.bridge(None, mel.shape[-1], mel)
    with torch.no_grad():
        task.bridge.guide_in.weight.normal_(std=0.05)  # now it listens to RNNoise
    cleaner = FeatureCleaner(tiny_whisper_dir, tap_layer=1, bottleneck_dim=8)
    vocoder = BridgedHiFiGAN(task.bridge, generator=torch.nn.Identity(), synthesis="input_gain")
    export = Restorer(cleaner.encoder, vocoder, tiny_whisper_dir, 1).export(tmp_path / "restorer")
    loaded = Restorer.from_export(export)
    assert loaded.vocoder.bridge.config.guide == "rnnoise"
    with torch.no_grad():
        expected = vocoder.synthesise(None, noisy.shape[-1], waves=noisy)
    assert torch.allclose(loaded(noisy), expected, atol=1e-5)
    assert GUIDE_FLOOR == pytest.approx(math.log(10 ** (-40 / 20)), abs=0.01)
    with pytest.raises(ValueError, match="bridge guide 'deepfilternet'"):
        BridgeConfig(inputs="mel", guide="deepfilternet")
    with pytest.raises(ValueError, match="bridge guide is read against the input's mel"):
        BridgeConfig(inputs="features", guide="rnnoise")
