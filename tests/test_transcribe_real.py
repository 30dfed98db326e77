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
