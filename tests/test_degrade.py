"""Each degradation does what it claims, keeps the length, and repeats exactly under the same seed."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from speech_peft.data.audio import load_audio
from speech_peft.data.degrade import (DegradeConfig, Degrader, add_noise, band_limit, clip, codec, colored_noise,
                                      equalise, has_ffmpeg, low_pass, reverberate, simulate_rir, texture_noise)

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples"
SR = 16000


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return load_audio(DATA / "asr" / "spk1_snt1.wav", SR)


def _snr(clean, mixed):
    noise = mixed - clean
    return 10 * torch.log10(clean.pow(2).mean() / noise.pow(2).mean()).item()


@pytest.mark.parametrize("snr", [5.0, 12.5, 30.0])
@pytest.mark.parametrize("source", ["real", "pink", "white"])
def test_noise_is_mixed_at_the_target_snr_within_half_a_db(speech, snr, source):
    noise = load_audio(DATA / "noise" / "noise2.wav", SR) if source == "real" else \
        colored_noise(speech.shape[-1], source, random.Random(1))
    mixed = add_noise(speech, noise, snr, random.Random(0))
    assert mixed.shape == speech.shape
    assert abs(_snr(speech, mixed) - snr) < 0.5


def test_colored_noise_has_the_claimed_spectral_slope():
    x = colored_noise(2 ** 16, "pink", random.Random(0)).numpy()
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x))
    band = (freqs > 0.01) & (freqs < 0.4)
    slope = np.polyfit(np.log(freqs[band]), np.log(spec[band]), 1)[0]
    assert -1.2 < slope < -0.8


def _octave_levels_db(x: torch.Tensor) -> np.ndarray:
    power = np.abs(np.fft.rfft(x.numpy())) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / SR)
    edges = [62.5, 125, 250, 500, 1000, 2000, 4000, 8000]
    return np.array([10 * np.log10(power[(freqs >= a) & (freqs < b)].mean()) for a, b in zip(edges, edges[1:])])


def test_texture_noises_differ_from_draw_to_draw_in_spectrum_yet_repeat_under_the_same_seed():
    draws = [texture_noise(4 * SR, SR, random.Random(seed)) for seed in range(6)]
    assert torch.equal(draws[0], texture_noise(4 * SR, SR, random.Random(0)))
    assert all(d.shape == (4 * SR,) and torch.isfinite(d).all() and abs(float(d.std()) - 1) < 1e-3 for d in draws)
    shapes = [_octave_levels_db(d) - _octave_levels_db(d).max() for d in draws]
    # Coloured noises are one of three fixed slopes; textures spread their octave levels by many decibels.
    spreads = [np.abs(a - b).max() for i, a in enumerate(shapes) for b in shapes[i + 1:]]
    assert min(spreads) > 6.0


def test_the_random_equaliser_only_lowers_bands_so_a_recording_keeps_its_character():
    noise = load_audio(DATA / "noise" / "noise1.wav", SR)[: 2 * SR]
    shaped = equalise(noise, SR, 20.0, random.Random(4))
    before, after = np.abs(np.fft.rfft(noise.numpy())), np.abs(np.fft.rfft(shaped.numpy()))
    assert (after <= before * 1.0001 + 1e-6).all()
    assert (after >= before * 10 ** (-20 / 20) * 0.999 - 1e-6).all()
    assert not torch.allclose(shaped, noise)


def test_textures_and_the_equaliser_widen_the_noise_effect_and_still_mix_at_the_drawn_snr(speech):
    from dataclasses import replace

    base = DegradeConfig(noise_files=[str(DATA / "noise" / "noise1.wav")], effects=("noise",), p_clean=0.0,
                         snr_db=(9.0, 9.0))
    for wider in (replace(base, p_real=0.0, p_texture=1.0), replace(base, p_real=1.0, noise_eq_db=20.0)):
        plain = Degrader(replace(wider, p_texture=0.0, noise_eq_db=0.0), SR, seed=2)(speech, 0)
        widened = Degrader(wider, SR, seed=2)(speech, 0)
        assert not torch.allclose(widened, plain)
        assert _snr(speech, widened) == pytest.approx(9.0, abs=0.1)
        assert torch.equal(Degrader(wider, SR, seed=2)(speech, 0), widened)


def _rt60(rir: torch.Tensor) -> float:
    """T20 from Schroeder's backward integration, extrapolated to 60 dB."""
    energy = rir.numpy().astype(np.float64) ** 2
    edc = np.cumsum(energy[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0] + 1e-20)
    t = np.arange(len(edc)) / SR
    fit = (edc_db <= -5) & (edc_db >= -25)
    slope = np.polyfit(t[fit], edc_db[fit], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.2, 0.35, 0.5])
def test_simulated_room_has_about_the_requested_reverberation_time(rt60):
    measured = _rt60(simulate_rir(rt60, SR, random.Random(3)))
    assert abs(measured - rt60) / rt60 < 0.35, measured


def test_reverberation_with_a_real_rir_keeps_length_and_timing(speech):
    rir = load_audio(DATA / "rirs" / "rir1.wav", SR)
    wet = reverberate(speech, rir)
    assert wet.shape == speech.shape
    lag = np.argmax(np.correlate(wet.numpy()[:16000], speech.numpy()[:16000], "full")) - 15999
    assert abs(lag) < 40  # aligned at the direct path: no audible shift


def test_band_limit_and_low_pass_remove_the_high_band(speech):
    def high_energy(x, cutoff):
        spec = torch.fft.rfft(x).abs() ** 2
        freqs = torch.fft.rfftfreq(x.shape[-1], 1 / SR)
        return (spec[freqs > cutoff].sum() / spec.sum()).item()

    limited = band_limit(speech, SR, 2000)
    assert limited.shape == speech.shape
    assert high_energy(limited, 2200) < 0.01 * high_energy(speech, 2200)
    filtered = low_pass(speech, SR, 1000)
    assert filtered.shape == speech.shape and high_energy(filtered, 3000) < 0.1 * high_energy(speech, 3000)


def test_clipping_hard_and_soft_bound_the_peak(speech):
    threshold = 0.1 * speech.abs().max().item()
    hard = clip(speech, threshold)
    soft = clip(speech, threshold, soft=True)
    assert hard.abs().max() <= threshold + 1e-7 and (hard.abs() >= threshold - 1e-7).sum() > 100
    assert soft.abs().max() <= threshold and torch.allclose(soft[:10], speech[:10], atol=1e-3 * threshold + 1e-6)


@pytest.mark.skipif(not has_ffmpeg(), reason="ffmpeg is not installed")
@pytest.mark.parametrize("name", ["mp3", "opus"])
def test_codec_keeps_length_and_is_aligned_back_to_the_input(speech, name):
    out = codec(speech, SR, name, "24k")
    assert out.shape == speech.shape
    corr = torch.corrcoef(torch.stack([out, speech]))[0, 1]
    assert corr > 0.8


def test_without_ffmpeg_the_codec_effect_is_left_out_with_a_warning_not_silently(monkeypatch, caplog):
    import speech_peft.data.degrade as degrade

    monkeypatch.setattr(degrade.shutil, "which", lambda name: None)
    degrade._warn_without_codec.cache_clear()
    with caplog.at_level("WARNING", logger="speech_peft.data.degrade"):
        first = Degrader(DegradeConfig(effects=("clip", "codec")), SR)
        Degrader(DegradeConfig(effects=("clip", "codec")), SR)
    assert first.effects == ["clip"]
    assert [r.getMessage() for r in caplog.records] == [
        "ffmpeg is not on PATH: degrading without the codec effect (apt-get install ffmpeg)"]  # once a process
    degrade._warn_without_codec.cache_clear()


def test_same_seed_gives_the_same_degraded_audio_and_chains_vary(speech):
    config = DegradeConfig(noise_files=[str(DATA / "noise" / "noise2.wav")], rir_files=[str(DATA / "rirs" / "rir1.wav")],
                           effects=("noise", "reverb", "band_limit", "clip"))
    a, b = Degrader(config, SR, seed=7), Degrader(config, SR, seed=7)
    outputs = [a(speech, i) for i in range(6)]
    for i, out in enumerate(outputs):
        assert out.shape == speech.shape
        assert torch.equal(out, b(speech, i))
    assert len({tuple(a.chosen(i)[1]) for i in range(40)}) > 5
    assert all(len(a.chosen(i)[1]) <= 3 for i in range(40))


def test_degrade_command_writes_paired_manifest_resumes_and_refuses_to_write_into_its_input(tmp_path):
    import shutil

    from speech_peft.cli import main
    from speech_peft.data.manifest import read_manifest

    src = tmp_path / "clean"
    shutil.copytree(DATA / "asr", src)
    out = tmp_path / "degraded"
    args = ["degrade", str(src), "--out", str(out), "--noise", str(DATA / "noise" / "noise2.wav"), "--seed", "3"]
    assert main(args) == 0
    entries = read_manifest(out / "degraded.jsonl")
    assert len(entries) == 12 and all(e.clean_audio.startswith(str(src)) for e in entries)
    first = (out / "spk1_snt1.wav").read_bytes()
    (out / "spk1_snt2.wav").unlink()
    assert main(args) == 0  # resumes: the missing file is made again, the others are kept as they are
    assert (out / "spk1_snt2.wav").exists() and (out / "spk1_snt1.wav").read_bytes() == first
    assert main(["degrade", str(src), "--out", str(src / "inside")]) == 2


def test_an_evaluation_set_can_require_real_reverb_and_real_noise_on_every_file(speech):
    config = DegradeConfig(noise_files=[str(DATA / "noise" / "noise2.wav")], rir_files=[str(DATA / "rirs" / "rir1.wav")],
                           effects=("reverb", "noise"), min_effects=2, p_clean=0.0, p_real=1.0)
    degrader = Degrader(config, SR, seed=1)
    assert all(degrader.chosen(i)[1] == ["reverb", "noise"] for i in range(30))
    # p_real=1 draws only the real files: neither the synthetic noise colour nor the simulated room matters.
    from dataclasses import replace
    other = Degrader(replace(config, colors=("brown",), rt60=(0.9, 0.9)), SR, seed=1)
    white = Degrader(replace(config, colors=("white",), rt60=(0.2, 0.2)), SR, seed=1)
    assert all(torch.equal(other(speech, i), white(speech, i)) for i in range(3))


def test_a_bad_file_stops_degrade_naming_it_or_with_skip_bad_is_listed_and_the_rest_are_degraded(tmp_path, capsys):
    import shutil

    from speech_peft.cli import main

    src = tmp_path / "clean"
    src.mkdir()
    shutil.copy(DATA / "asr" / "spk1_snt1.wav", src / "good.wav")
    (src / "text.wav").write_text("not audio\n" * 8)
    out = tmp_path / "degraded"
    assert main(["degrade", str(src), "--out", str(out)]) == 2
    assert "text.wav" in capsys.readouterr().err and not (out / "good.wav").exists()
    assert main(["degrade", str(src), "--out", str(out), "--skip-bad"]) == 0
    assert (out / "good.wav").exists() and "text.wav\tunreadable" in (out / "rejects.tsv").read_text()


def test_babble_is_other_people_talking_at_the_drawn_snr_and_is_drawn_only_with_talkers_to_play(speech):
    from dataclasses import replace

    from speech_peft.data.degrade import babble

    talkers = sorted(str(p) for p in (DATA / "asr").glob("spk2_*.wav"))
    config = DegradeConfig(effects=("babble",), p_clean=0.0, snr_db=(6.0, 6.0), babble_files=talkers,
                           babble_talkers=(3, 3))
    degraded = Degrader(config, SR, seed=3)(speech, 0)
    added = degraded - speech
    assert 10 * torch.log10(speech.pow(2).mean() / added.pow(2).mean()).item() == pytest.approx(6.0, abs=0.1)
    assert torch.equal(Degrader(config, SR, seed=3)(speech, 0), degraded)  # seeded
    crowd = babble([torch.ones(100), 2 * torch.ones(100)], 50)
    assert torch.allclose(crowd, torch.full((50,), 2.0))  # each talker at the same power
    # Without recordings of other talkers the effect is never drawn, and the other chains stay as they were.
    assert "babble" not in Degrader(DegradeConfig(), SR).effects
    assert Degrader(replace(config, babble_files=[]), SR).effects == []


def test_speed_only_augmentation_gives_each_clip_a_few_exact_versions_that_a_state_cache_can_serve(speech):
    """gain_db [0, 0] and p_noise 0: every draw is the clip at one of the speeds, sample for sample, so
    cached encoder states keyed by the samples are reused; a speed of 1.1 shortens the clip by 1.1."""
    from speech_peft.data.degrade import AugmentConfig, Augmenter
    from speech_peft.encoders.cache import EncoderCache

    augment = Augmenter(AugmentConfig(p=1.0, speeds=(0.9, 1.0, 1.1), gain_db=(0.0, 0.0), p_noise=0.0), SR, seed=3)
    versions = {EncoderCache.digest(augment(speech, draw)): augment(speech, draw).shape[-1] for draw in range(40)}
    expected = sorted(speech.shape[-1] / s for s in (0.9, 1.0, 1.1))
    assert len(versions) == 3 and all(abs(n - e) <= 1 for n, e in zip(sorted(versions.values()), expected))
    assert EncoderCache.digest(speech) in versions  # speed 1.0 is the clip itself
    seconds = speech.shape[-1] / SR
    capped = Augmenter(AugmentConfig(p=1.0, speeds=(0.9, 1.0, 1.1), gain_db=(0.0, 0.0), p_noise=0.0,
                                     max_seconds=seconds), SR, seed=3)
    assert max(capped(speech, draw).shape[-1] for draw in range(40)) == speech.shape[-1]  # never slowed past it
    noisy = Augmenter(AugmentConfig(p=1.0, speeds=(1.0,), gain_db=(0.0, 0.0)), SR, seed=3)
    assert len({EncoderCache.digest(noisy(speech, draw)) for draw in range(5)}) == 5  # noise: a new clip each draw
