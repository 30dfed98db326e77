"""The pretrained HiFi-GAN V1 backend: our module loads the package's weights strictly and speaks;
the bridge maps encoder features to its log-mel at the right frame rate; a bridge restorer round-trips."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchaudio.functional as AF

from speech_peft.data.audio import load_audio
from speech_peft.vocoders import hifigan
from speech_peft.vocoders.bridge import BridgeConfig, BridgedHiFiGAN, FeatureToMel, mel_loss
from speech_peft.vocoders.hifigan import mel_frames, target_mel

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples"


def test_folded_weight_norm_equals_the_normalised_weight():
    conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(4, 6, 3))
    transposed = torch.nn.utils.weight_norm(torch.nn.ConvTranspose1d(6, 4, 4, 2))
    for module in (conv, transposed):
        with torch.no_grad():
            module.weight_g.mul_(torch.rand_like(module.weight_g) + 0.5)
        module(torch.randn(1, module.in_channels, 8))  # the hook recomputes .weight
        folded = hifigan.fold_weight_norm({k: v for k, v in module.state_dict().items()})
        assert set(folded) == {"weight", "bias"}
        torch.testing.assert_close(folded["weight"], module.weight.detach())


@pytest.fixture(scope="module")
def generator() -> hifigan.HiFiGAN:
    return hifigan.load_hifigan("universal")


def test_the_pretrained_generator_loads_strictly_and_copy_synthesis_keeps_the_words(generator):
    from speech_peft.jobs.transcribe import load_decoder

    assert sum(p.numel() for p in generator.parameters()) == 13_926_017
    assert not any(p.requires_grad for p in generator.parameters())
    wave = load_audio(DATA / "asr" / "spk1_snt1.wav")[None]
    with torch.inference_mode():
        mel = target_mel(wave)
        spoken = AF.resample(generator(mel), hifigan.SAMPLE_RATE, 16000)
    assert mel.shape == (1, 80, mel_frames(wave.shape[-1])) and abs(spoken.shape[-1] - wave.shape[-1]) < 256
    text = load_decoder("whisper-tiny.en")(spoken, torch.tensor([spoken.shape[-1]]), [None])[0].text
    assert "child almost hurt the small dog" in text.lower()


def test_the_bridge_writes_the_mel_frames_the_audio_needs_and_the_backend_returns_every_sample(generator):
    bridge = FeatureToMel(BridgeConfig(feature_dim=32, channels=16, blocks=1))
    backend = BridgedHiFiGAN(bridge, generator)
    for samples in (8000, 12345, 32000):
        feats = torch.randn(2, samples // 320, 32)
        assert bridge(feats, mel_frames(samples)).shape == (2, 80, mel_frames(samples))
        with torch.inference_mode():
            assert backend.synthesise(feats, samples).shape == (2, samples)


def test_an_untrained_bridge_that_reads_the_inputs_mel_hands_the_vocoder_the_input_as_it_is(generator):
    """The mel path predicts a correction of the input's own log-mel that starts at none, so before training
    the restorer does nothing (with or without the encoder features beside it)."""
    wave = load_audio(DATA / "asr" / "spk1_snt1.wav")[None]
    samples = wave.shape[-1]
    with torch.inference_mode():
        heard = target_mel(wave)
        for inputs, feats in (("mel", None), ("features+mel", torch.randn(1, samples // 320, 32))):
            backend = BridgedHiFiGAN(FeatureToMel(BridgeConfig(feature_dim=32, channels=16, blocks=1, inputs=inputs)),
                                     generator)
            torch.testing.assert_close(backend.mel(feats, samples, waves=wave), heard)
            assert backend.synthesise(feats, samples, waves=wave).shape == (1, samples)


def test_a_bridge_is_told_what_it_reads_and_refuses_to_run_without_it():
    from speech_peft.errors import UserError

    with pytest.raises(UserError, match="bridge inputs 'spectrum': choose one of features, mel, features\\+mel"):
        BridgeConfig(inputs="spectrum")
    assert BridgeConfig().inputs == "features"  # what exports written before the mel path hold
    with pytest.raises(UserError, match="give the input's log-mel"):
        FeatureToMel(BridgeConfig(feature_dim=32, channels=16, blocks=1, inputs="mel"))(None, 10)
    with pytest.raises(UserError, match="give the encoder features"):
        FeatureToMel(BridgeConfig(feature_dim=32, channels=16, blocks=1))(None, 10)


def test_a_dilated_bridge_hears_further_and_keeps_the_frame_count():
    """A noise floor is told from speech over more than a syllable: with dilation growth 2, four blocks of
    kernel 5 reach 32 mel frames either side (0.37 s), against 10 without."""
    from speech_peft.errors import UserError

    def reach(growth: int) -> int:
        torch.manual_seed(0)
        bridge = FeatureToMel(BridgeConfig(channels=8, blocks=4, inputs="mel", dilation_growth=growth))
        torch.nn.init.normal_(bridge.conv_out.weight)  # an untrained mel bridge's correction is zero everywhere
        mel = torch.zeros(1, 80, 101, requires_grad=True)
        bridge(None, 101, mel)[0, :, 50].sum().backward()
        heard = (mel.grad[0].abs().sum(0) > 0).nonzero().flatten()
        return int(heard.max() - 50)

    assert reach(1) == 1 + 2 * 4 + 1
    assert reach(2) == 1 + 2 * (1 + 2 + 4 + 8) + 1
    with pytest.raises(UserError, match="dilation_growth 0"):
        BridgeConfig(dilation_growth=0)
    assert BridgeConfig().dilation_growth == 1  # what exports written before dilation hold


def test_mel_loss_is_zero_only_on_the_target():
    target = torch.randn(2, 80, 20)
    assert mel_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    assert mel_loss(target + 0.1, target).item() > 0.1


def test_mel_loss_stays_finite_and_pulls_down_a_prediction_far_above_any_audio():
    target = torch.randn(2, 80, 20)
    predicted = (target + 200.0).requires_grad_()  # exp(200) overflows float32
    loss = mel_loss(predicted, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(predicted.grad).all() and (predicted.grad > 0).all()


def test_a_training_loss_that_is_not_finite_stops_the_fit_naming_the_step():
    from speech_peft.errors import UserError
    from speech_peft.tasks.base import AdapterTask

    AdapterTask().on_before_backward(torch.tensor(1.5))
    with pytest.raises(UserError, match="became nan at step 0.*lower task.lr"):
        AdapterTask().on_before_backward(torch.tensor(float("nan")))
