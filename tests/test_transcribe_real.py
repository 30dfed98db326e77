"""Acceptance on real speech: Whisper tiny.en from CTranslate2 weights, greedy, corpus WER <= 10%."""
from __future__ import annotations

from pathlib import Path

import pytest

from speech_peft.cli import main
from speech_peft.metrics.wer import score_files

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"


@pytest.mark.slow
def test_transcribe_command_reaches_the_acceptance_wer_on_twelve_read_sentences(tmp_path):
    hyp = tmp_path / "hyp.tsv"
    assert main(["transcribe", "--model", "whisper-tiny.en", str(DATA), "--out", str(hyp)]) == 0
    result = score_files(str(DATA / "transcripts.tsv"), str(hyp))
    assert result.counts.sentences == 12
    assert result.wer <= 0.10, result.summary()


@pytest.mark.slow
def test_a_five_minute_recording_of_the_sentences_transcribes_within_two_points_of_them_one_by_one(tmp_path):
    """Long-form: the 12 real sentences joined ten times with pauses (5.6 min), cut by voice activity."""
    import numpy as np
    import soundfile as sf

    from speech_peft.data.manifest import Entry
    from speech_peft.jobs.transcribe import transcribe_files
    from speech_peft.metrics.wer import read_references, score

    refs = read_references(str(DATA / "transcripts.tsv"))
    sentences = sorted(DATA.glob("*.wav"))
    rng = np.random.default_rng(0)
    parts, order = [], []
    for _ in range(10):
        for path in sentences:
            parts += [sf.read(path, dtype="float32")[0], np.zeros(int(rng.uniform(0.3, 1.0) * 16000), np.float32)]
            order.append(refs[path.stem])
    sf.write(tmp_path / "long.wav", np.concatenate(parts), 16000)
    long, = transcribe_files([Entry("long", str(tmp_path / "long.wav"), 0.0, 0)], progress=False)
    alone = transcribe_files([Entry(p.stem, str(p), 0.0, 0) for p in sentences], progress=False)
    long_wer = score([" ".join(order)], [long.text]).wer
    alone_wer = score([refs[t.id] for t in alone], [t.text for t in alone]).wer
    assert len(long.segments) >= 11 and all(s.end - s.start <= 30.0 for s in long.segments)
    assert long_wer <= alone_wer + 0.02, (long_wer, alone_wer)
