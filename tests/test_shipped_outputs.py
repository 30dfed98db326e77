"""What ships gives the outputs it gave when it was made: the frozen Whisper tiny.en and the shipped fusion
transcribe the 12 real sentences with the texts and scores recorded in ``tests/expected/`` (written before
models moved out of the training tasks and Whisper got its own definition), and the shipped restorer
restores a real sentence to the recorded waveform."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speech_peft.jobs.restore import SHIPPED_RESTORER, RestorerChoice, restore
from speech_peft.jobs.transcribe import transcribe_files

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = Path(__file__).resolve().parent / "expected"
SENTENCES = ROOT / "data" / "speech_samples" / "asr"


def _transcripts(model: str) -> dict[str, dict]:
    from speech_peft.data.builders import from_folder

    done = transcribe_files(from_folder(SENTENCES), model, progress=False)
    return {t.id: {"text": t.text, "avg_logprob": t.segments[0].avg_logprob,
                   "no_speech_prob": t.segments[0].no_speech_prob} for t in done}


@pytest.mark.parametrize("model, recorded", [
    ("whisper-tiny.en", "whisper_tiny_en_12_sentences.json"),
    (str(ROOT / "speech_peft" / "pretrained" / "whisper-tiny.en-adapterfusion"), "shipped_fusion_12_sentences.json"),
])
def test_transcribing_the_real_sentences_gives_the_recorded_texts_and_scores(model, recorded):
    expected = json.loads((EXPECTED / recorded).read_text())
    got = _transcripts(model)
    assert {k: v["text"] for k, v in got.items()} == {k: v["text"] for k, v in expected.items()}
    for uid, row in expected.items():
        assert got[uid]["avg_logprob"] == pytest.approx(row["avg_logprob"], abs=1e-3)
        assert got[uid]["no_speech_prob"] == pytest.approx(row["no_speech_prob"], abs=1e-3)


def test_the_shipped_restorer_restores_a_real_sentence_to_the_recorded_waveform(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "spk1_snt1.wav").write_bytes((SENTENCES / "spk1_snt1.wav").read_bytes())
    restore(str(tmp_path / "in"), str(tmp_path / "out"), RestorerChoice(str(SHIPPED_RESTORER)), progress=False)
    got = sf.read(tmp_path / "out" / "spk1_snt1.wav", dtype="float32")[0]
    expected = sf.read(EXPECTED / "shipped_restorer_spk1_snt1.wav", dtype="float32")[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 5e-3  # a few 16-bit steps: other CPUs round float sums differently


def test_inference_imports_neither_lightning_nor_transformers():
    """Jobs, reports and models run without the training stack: a transcription with the shipped fusion (an
    export) and the import of every module of ``jobs/``, ``reports/`` and ``models/`` leave Lightning and
    transformers unloaded. Loading the export imports its own model's module only, not the other models'
    (the vocoders, torchaudio, the diffusion decoder)."""
    import subprocess
    import sys

    script = f"""
import importlib, pkgutil, sys
import numpy as np, soundfile as sf
import speech_peft.jobs, speech_peft.models, speech_peft.reports
from speech_peft.jobs.transcribe import load_decoder
wave = sf.read({str(SENTENCES / "spk1_snt1.wav")!r}, dtype="float32")[0]
text = load_decoder({str(ROOT / "speech_peft" / "pretrained" / "whisper-tiny.en-adapterfusion")!r})(
    wave[None], np.array([len(wave)]), [None])[0].text
others = sorted(m for m in ("torchaudio", "speech_peft.vocoders.restorer", "speech_peft.models.diffusion_asr")
                if m in sys.modules)
for package in (speech_peft.jobs, speech_peft.models, speech_peft.reports):
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{{package.__name__}}.{{module.name}}")
print(text, others, sorted(m for m in ("lightning", "transformers", "pytorch_lightning") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().endswith("[] []"), done.stdout
    assert "child almost hurt the small dog" in done.stdout.lower()


def _digit_string(speaker: str, digits: str) -> np.ndarray:
    """A bundled FSDD speaker saying ``digits`` (take 0 of each), 0.3 s apart, at 16 kHz."""
    from speech_peft.data.audio import load_audio

    pause = np.zeros(4800, dtype=np.float32)
    clips = [load_audio(ROOT / "data" / "fsdd_subset" / "recordings" / f"{d}_{speaker}_0.wav", 16000).numpy()
             for d in digits]
    return np.concatenate([part for clip in clips for part in (clip, pause)])


@pytest.mark.parametrize("name", ["whisper-tiny.en-digits-diffusion", "whisper-tiny.en-digits-lora"])
def test_the_shipped_digit_models_are_small_and_transcribe_digit_strings_of_speakers_they_never_heard(name):
    """Each shipped digit export takes at most 10 MB and, with its trained decoding, gets two 10-digit strings of
    FSDD jackson and nicolas (test speakers of digits_long: no trained part heard them) right but for at most one
    word each; the diffusion export trains under 5% of Whisper tiny.en's parameters."""
    from safetensors import safe_open

    from speech_peft.jobs.transcribe import load_decoder
    from speech_peft.metrics.wer import word_errors

    shipped = ROOT / "speech_peft" / "pretrained" / name
    assert sum(p.stat().st_size for p in shipped.rglob("*") if p.is_file()) <= 10_000_000
    if "diffusion" in name:
        trained = 0
        for path in shipped.rglob("*.safetensors"):
            with safe_open(path, "pt") as tensors:
                trained += sum(int(np.prod(tensors.get_slice(key).get_shape())) for key in tensors.keys())  # noqa: SIM118 (safe_open is no dict)
        assert trained < 0.05 * 37_639_300  # Whisper tiny.en's encoder and decoder as loaded here
    decoder = load_decoder(str(shipped))
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    words = dict(zip("0123456789", names))
    for speaker, digits in (("jackson", "3141592653"), ("nicolas", "2718281828")):
        wave = _digit_string(speaker, digits)
        text = decoder(wave[None], np.array([len(wave)]), [None])[0].text
        assert word_errors(" ".join(words[d] for d in digits), text) <= 1, (speaker, text)
