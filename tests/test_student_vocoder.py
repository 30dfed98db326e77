"""The distilled student vocoder: its inverse STFT lines up with HiFi-GAN's mel frames, it reads the
teacher's log-mel and writes the teacher's number of samples, it exports small and loads back, its
distillation loss is zero when student and teacher agree, the mel corpus codes lose at most half a
step, and a short distillation from the real teacher lowers the loss and exports a usable student."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from speech_peft.vocoders import hifigan
from speech_peft.vocoders.distill import CODE_STEP, LOG_FLOOR, MelCorpus, distill, distillation_loss
from speech_peft.vocoders.student import StudentConfig, StudentVocoder, istft_same, load_student

TINY = StudentConfig(dim=16, hidden=32, blocks=1)


def test_inverse_stft_reconstructs_a_signal_framed_as_hifigan_frames_its_mel():
    wave = torch.randn(2, 40 * hifigan.HOP)
    pad = (hifigan.N_FFT - hifigan.HOP) // 2
    padded = F.pad(wave[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(padded, hifigan.N_FFT, hifigan.HOP, window=torch.hann_window(hifigan.N_FFT), center=False,
                      return_complex=True)
    assert spec.shape[-1] == 40  # one STFT frame per mel frame
    torch.testing.assert_close(istft_same(spec, hifigan.N_FFT, hifigan.HOP), wave, atol=1e-5, rtol=0)


def test_the_student_writes_256_samples_per_mel_frame_like_the_teacher():
    student = StudentVocoder(TINY).eval()
    for frames in (1, 7, 86):
        with torch.inference_mode():
            assert student(torch.randn(3, 80, frames) - 5).shape == (3, frames * hifigan.HOP)


def test_an_exported_student_loads_back_strictly_in_half_the_bytes(tmp_path):
    student = StudentVocoder(TINY).eval()
    student.export(tmp_path / "student", {"teacher": "test"})
    loaded = load_student(tmp_path / "student")
    mel = torch.randn(1, 80, 12) - 5
    with torch.inference_mode():
        torch.testing.assert_close(loaded(mel), student.half().float()(mel))
    params = sum(p.numel() for p in student.parameters())
    assert (tmp_path / "student" / "student.safetensors").stat().st_size < 2 * params + 4096
    assert not any(p.requires_grad for p in loaded.parameters())


def test_loading_a_folder_without_a_student_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_student(tmp_path)


def test_the_distillation_loss_is_zero_when_the_student_matches_the_teacher_and_positive_otherwise():
    wave = torch.randn(2, 8192)
    same = distillation_loss(wave, wave.clone())
    assert all(float(v) < 1e-6 for v in same.values())
    different = distillation_loss(0.5 * wave + 0.1 * torch.randn_like(wave), wave)
    assert all(float(v) > 1e-3 for v in different.values())


def test_mel_corpus_codes_keep_each_value_within_half_a_step_and_round_trip_through_the_file(tmp_path):
    mels = [torch.empty(80, n).uniform_(LOG_FLOOR, 3.0) for n in (5, 9)]
    corpus = MelCorpus.from_mels(mels, [False, True])
    corpus.save(tmp_path / "mels.npz")
    loaded = MelCorpus.load(tmp_path / "mels.npz")
    for index, mel in enumerate(mels):
        assert (loaded.utterance(index) - mel).abs().max() <= CODE_STEP / 2 + 1e-5
    assert loaded.indices(validation=True) == [1] and np.array_equal(loaded.offsets, [0, 5, 14])


def test_a_short_distillation_from_the_real_teacher_lowers_the_loss_and_exports_a_student(tmp_path):
    from speech_peft.data.audio import load_audio
    from speech_peft.vocoders.hifigan import target_mel

    data = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"
    mels = [target_mel(load_audio(p)[None])[0] for p in sorted(data.glob("*.wav"))[:4]]
    corpus = MelCorpus.from_mels(mels, [False, False, False, True])
    summary = distill(corpus, tmp_path / "student", steps=12, batch=2, frames=16, margin=4,
                      config=StudentConfig(dim=32, hidden=64, blocks=2), lr=2e-3, log_every=1)
    first, last = summary["history"][0], summary["history"][-1]
    assert last["log_mag"] < first["log_mag"]
    student = load_student(tmp_path / "student")
    assert student(mels[3][None, :, :20]).shape == (1, 20 * hifigan.HOP)


def test_restore_with_a_student_speaks_through_it_and_never_mixes_its_outputs_with_hifigans(tmp_path):
    import shutil

    from speech_peft.jobs.restore import SHIPPED_RESTORER, RestorerChoice, restore
    from speech_peft.vocoders.restorer import Restorer

    StudentVocoder(TINY).export(tmp_path / "student")
    restorer = Restorer.from_export(SHIPPED_RESTORER, tmp_path / "student", synthesis="vocoder")
    assert isinstance(restorer.vocoder.generator, StudentVocoder)
    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr" / "spk1_snt1.wav", clean)
    done = restore(str(clean), str(tmp_path / "out"),
                   RestorerChoice(str(SHIPPED_RESTORER), student=str(tmp_path / "student"), synthesis="vocoder"),
                   progress=False)
    assert done["restored_here"] == 1 and (tmp_path / "out" / "spk1_snt1.wav").is_file()
    with pytest.raises(ValueError, match="another restorer"):
        restore(str(clean), str(tmp_path / "out"), RestorerChoice(str(SHIPPED_RESTORER), synthesis="vocoder"),
                progress=False)


def test_distilling_from_clips_shorter_than_a_crop_is_a_clear_error(tmp_path):
    corpus = MelCorpus.from_mels([torch.full((80, 10), -5.0), torch.full((80, 30), -5.0)], [False, True])
    with pytest.raises(ValueError, match="no training utterance in the mel corpus is 24 frames long"):
        distill(corpus, tmp_path / "student", steps=1, batch=1, frames=16, margin=4, config=TINY)


def test_restore_refuses_to_write_inside_the_restorer_or_student_it_runs(tmp_path):
    from speech_peft.jobs.restore import SHIPPED_RESTORER, RestorerChoice, restore

    StudentVocoder(TINY).export(tmp_path / "student")
    for out in (tmp_path / "student" / "eval", SHIPPED_RESTORER / "eval"):
        with pytest.raises(ValueError, match="lies inside the model folder"):
            restore(str(tmp_path), str(out), RestorerChoice(str(SHIPPED_RESTORER), student=str(tmp_path / "student"),
                                                            synthesis="vocoder"), progress=False)
        assert not out.exists()
