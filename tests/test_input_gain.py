"""Input-gain synthesis: the bridge's predicted log-mel lowers bands of the input's own spectrum, so a
prediction equal to the input returns the input, a lower one removes energy only where it says, and no
band is ever raised or lowered past the attenuation limit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speech_peft.data.audio import load_audio
from speech_peft.errors import UserError
from speech_peft.vocoders.bridge import (
    BridgeConfig,
    BridgedHiFiGAN,
    FeatureToMel,
)
from speech_peft.vocoders.hifigan import target_mel
from speech_peft.vocoders.input_gain import apply_mel_gain

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples"


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return load_audio(DATA / "asr" / "spk1_snt1.wav")[None, :48000]


def _band_energy(wave: torch.Tensor, low_hz: float, high_hz: float) -> float:
    spectrum = torch.fft.rfft(wave[0]).abs().pow(2)
    freqs = torch.fft.rfftfreq(wave.shape[-1], 1 / 16000)
    return spectrum[(freqs >= low_hz) & (freqs < high_hz)].sum().item()


def test_an_untrained_mel_bridge_in_input_gain_mode_returns_the_input_unchanged(speech):
    bridge = FeatureToMel(BridgeConfig(inputs="mel", channels=16, blocks=1))
    out = BridgedHiFiGAN(bridge, synthesis="input_gain").synthesise(None, speech.shape[-1], waves=speech)
    assert out.shape == speech.shape
    torch.testing.assert_close(out, speech, atol=1e-5, rtol=0)


def test_a_prediction_below_the_input_in_the_upper_bands_removes_energy_there_only(speech):
    mel = target_mel(speech)
    predicted = mel.clone()
    predicted[:, 60:] -= 3.0  # the top 20 of 80 bands (about 4.4-8 kHz) lowered by 3 nepers
    out = apply_mel_gain(speech, mel, predicted)
    assert _band_energy(out, 5000, 8000) < 0.05 * _band_energy(speech, 5000, 8000)
    assert _band_energy(out, 100, 3000) == pytest.approx(_band_energy(speech, 100, 3000), rel=0.05)


def test_gains_are_never_above_one_nor_past_the_attenuation_limit(speech):
    mel = target_mel(speech)
    louder = apply_mel_gain(speech, mel, mel + 5.0)
    torch.testing.assert_close(louder, speech, atol=1e-5, rtol=0)
    for limit_db in (20.0, 6.0):
        silenced = apply_mel_gain(speech, mel, mel - 50.0, limit_db=limit_db)
        ratio = silenced.pow(2).sum() / speech.pow(2).sum()
        assert ratio.item() == pytest.approx(10 ** (-limit_db / 10), rel=0.1)  # that many dB down, not silence


def test_the_attenuation_limit_travels_with_the_export_and_restore_can_override_it(tmp_path):
    from speech_peft.jobs.restore import SHIPPED_RESTORER, RestorerChoice
    from speech_peft.vocoders.restorer import Restorer

    shipped = Restorer.from_export(SHIPPED_RESTORER)
    assert shipped.vocoder.attenuation_limit_db == 20.0  # an export that names none: the limit it was trained with
    shipped.vocoder.attenuation_limit_db = 8.0
    shipped.export(tmp_path / "limited")
    assert Restorer.from_export(tmp_path / "limited").vocoder.attenuation_limit_db == 8.0
    assert RestorerChoice(str(tmp_path / "limited"), attenuation_limit_db=3.0).load().vocoder.attenuation_limit_db == 3.0
    assert RestorerChoice(str(SHIPPED_RESTORER), attenuation_limit_db=6.0).identity() != \
        RestorerChoice(str(SHIPPED_RESTORER)).identity()  # one output folder never mixes two limits


@pytest.mark.parametrize("choice, message", [
    ({"attenuation_limit_db": 0.0}, "attenuation limit 0.0: give a positive number of dB"),
    ({"attenuation_limit_db": float("nan")}, "attenuation limit nan"),
    ({"attenuation_limit_db": 6.0, "synthesis": "vocoder"}, "applies to input_gain synthesis, not to vocoder"),
    ({"attenuation_limit_db": 6.0, "checkpoint": "spectral-gating"}, "--attenuation-limit-db do not apply"),
    ({"attenuation_limit_db": 0.0, "checkpoint": "spectral-gating"}, "--attenuation-limit-db do not apply"),
    ({"attenuation_limit_db": 0.0, "checkpoint": "rnnoise"}, "--attenuation-limit-db 0.0: give a positive number"),
    ({"attenuation_limit_db": 6.0, "checkpoint": "rnnoise", "synthesis": "vocoder"}, "--synthesis do not apply"),
])
def test_an_attenuation_limit_that_cannot_apply_is_refused_in_one_line(choice, message):
    from speech_peft.jobs.restore import SHIPPED_RESTORER, RestorerChoice

    with pytest.raises(UserError, match=message):
        RestorerChoice(**{"checkpoint": str(SHIPPED_RESTORER), **choice}).load()


def test_input_gain_needs_the_input_and_an_unknown_synthesis_is_refused():
    bridge = FeatureToMel(BridgeConfig(inputs="mel", channels=16, blocks=1))
    with pytest.raises(UserError, match="give the input audio"):
        BridgedHiFiGAN(bridge, synthesis="input_gain").synthesise(None, 16000)
    with pytest.raises(UserError, match="choose one of vocoder, input_gain"):
        BridgedHiFiGAN(bridge, synthesis="griffin_lim")


def test_band_gains_lower_the_input_to_the_prediction_never_raise_it_never_past_the_floor():
    from speech_peft.vocoders.input_gain import band_log_gains

    input_mel = torch.zeros(1, 80, 4)
    predicted = torch.tensor([-100.0, -1.0, 0.0, 2.0]).expand(1, 80, 4)
    gains = band_log_gains(input_mel, predicted, limit_db=20.0)[0, 0]
    torch.testing.assert_close(gains, torch.tensor([-2.3026, -1.0, 0.0, 0.0]), atol=1e-4, rtol=0)


def test_gains_first_computed_in_inference_mode_still_serve_training(speech):
    mel = target_mel(speech)
    with torch.inference_mode():
        apply_mel_gain(speech, mel, mel - 1.0, sample_rate=12000)  # a rate no other test caches
    predicted = (mel - 1.0).requires_grad_()
    apply_mel_gain(speech, mel, predicted, sample_rate=12000).sum().backward()
    assert predicted.grad is not None


def test_training_refuses_an_unknown_synthesis_before_it_builds_anything():
    from speech_peft.tasks.bridge import BridgeTraining

    with pytest.raises(UserError, match="task.synthesis 'griffin_lim': choose one of vocoder, input_gain"):
        BridgeTraining(bridge={"inputs": "mel"}, synthesis="griffin_lim", encoder_name="no-such-encoder")


def _snr_db(clean: torch.Tensor, other: torch.Tensor) -> float:
    return 10 * torch.log10(clean.pow(2).sum() / (other - clean).pow(2).sum()).item()


def test_rnnoise_removes_a_steady_noise_and_with_a_limit_only_lowers_the_input_that_far(speech):
    """The pretrained suppressor raises the SNR of speech in white noise; limited to 10 dB it lowers bands of
    the input's own spectrum, never raises them and never by much more than 10 dB."""
    from speech_peft.vocoders.rnnoise import RNNoise

    clean = speech[:, :32000]
    noisy = clean + 0.3 * clean.std() * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    suppressed = RNNoise()(noisy)
    assert suppressed.shape == noisy.shape
    assert _snr_db(clean, suppressed) > _snr_db(clean, noisy) + 3
    limited = RNNoise(attenuation_limit_db=10.0)(noisy)
    for low, high in ((100, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 7500)):
        ratio = _band_energy(limited, low, high) / _band_energy(noisy, low, high)
        assert 10 ** (-10.5 / 10) < ratio < 1.02
    assert _snr_db(clean, limited) > _snr_db(clean, noisy)
