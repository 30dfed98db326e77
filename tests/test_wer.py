"""WER as ESPnet and papers count it, and the normaliser it names."""
from __future__ import annotations

import json

import pytest

from speech_peft.cli import main
from speech_peft.metrics.text import normalize, spell_number
from speech_peft.metrics.wer import score


def test_normaliser_lowercases_drops_punctuation_and_spells_digits():
    assert normalize("Hello, World! 2 cats; 19-year-old") == "hello world two cats nineteen year old"
    assert spell_number(1250) == "one thousand two hundred fifty"
    assert normalize("It's 100%") == "it's one hundred"


def test_corpus_wer_counts_errors_over_reference_words_and_differs_from_the_utterance_mean():
    result = score(["the cat sat", "a b c d"], ["the cat sat on", "a x c"])
    c = result.counts
    assert (c.words, c.correct, c.substitutions, c.deletions, c.insertions) == (7, 5, 1, 1, 1)
    assert result.wer == pytest.approx(3 / 7)
    assert result.mean_utterance_wer == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert "| 2 | 7 | 71.4 | 14.3 | 14.3 | 14.3 | 42.9 | 100.0 |" in result.table()


def test_empty_reference_and_unequal_lists_are_errors():
    with pytest.raises(ValueError, match="empty reference"):
        score(["..."], ["a"])
    with pytest.raises(ValueError, match="1 references but 2"):
        score(["a"], ["a", "b"])


def test_score_command_prints_table_and_names_the_normaliser(tmp_path, capsys):
    (tmp_path / "ref.tsv").write_text("u1\tthe cat sat\nu2\ttwo dogs\n")
    (tmp_path / "hyp.tsv").write_text("u2\t2 dogs\nu1\tThe cat sat.\n")
    assert main(["score", "wer", "--ref", str(tmp_path / "ref.tsv"), "--hyp", str(tmp_path / "hyp.tsv")]) == 0
    out = capsys.readouterr().out
    assert "corpus WER 0.00%" in out and "normaliser: plain" in out and "mean-utterance WER" in out


def test_score_command_reports_missing_hypotheses(tmp_path, capsys):
    (tmp_path / "ref.tsv").write_text("u1\ta\nu2\tb\n")
    (tmp_path / "hyp.tsv").write_text("u1\ta\n")
    assert main(["score", "wer", "--ref", str(tmp_path / "ref.tsv"), "--hyp", str(tmp_path / "hyp.tsv")]) == 2
    assert "no hypothesis for 1 reference id" in capsys.readouterr().err


def test_a_manifest_can_serve_as_the_reference(tmp_path, capsys):
    (tmp_path / "m.jsonl").write_text('{"id": "u1", "audio": "a.wav", "text": "seven"}\n')
    (tmp_path / "hyp.tsv").write_text("u1\t7\n")
    assert main(["score", "wer", "--ref", str(tmp_path / "m.jsonl"), "--hyp", str(tmp_path / "hyp.tsv")]) == 0
    assert "corpus WER 0.00%" in capsys.readouterr().out


def test_wer_by_task_scores_each_group_on_its_own_utterances_and_all_of_them_together(tmp_path, capsys):
    rows = [("u1", "the cat sat", "read"), ("u2", "a b c d", "phone"), ("u3", "one", None)]
    (tmp_path / "m.jsonl").write_text("".join(
        json.dumps({"id": u, "audio": "a.wav", "text": t} | ({"task": k} if k else {})) + "\n" for u, t, k in rows))
    (tmp_path / "hyp.tsv").write_text("u1\tthe cat sat on\nu2\ta x c\nu3\tone\n")
    assert main(["score", "wer", "--ref", str(tmp_path / "m.jsonl"), "--hyp", str(tmp_path / "hyp.tsv"),
                 "--by", "task"]) == 0
    out = capsys.readouterr().out
    assert "| all | 3 | 8 | 37.50 |" in out       # 3 errors over 8 words
    assert "| read | 1 | 3 | 33.33 |" in out      # one insertion
    assert "| phone | 1 | 4 | 50.00 |" in out     # a substitution and a deletion
    assert "| (none) | 1 | 1 | 0.00 |" in out     # no task: its own group, never dropped
    (tmp_path / "ref.tsv").write_text("u1\tx\n")
    (tmp_path / "h.tsv").write_text("u1\tx\n")
    assert main(["score", "wer", "--ref", str(tmp_path / "ref.tsv"), "--hyp", str(tmp_path / "h.tsv"), "--by", "task"]) == 2
    assert "needs a .jsonl manifest" in capsys.readouterr().err


def test_transcribe_jsonl_output_scores_as_hypotheses_grouped_by_language(tmp_path, capsys):
    (tmp_path / "m.jsonl").write_text(
        '{"id": "u1", "audio": "a.wav", "text": "guten tag", "language": "de"}\n'
        '{"id": "u2", "audio": "b.wav", "text": "bonjour", "language": "fr"}\n')
    (tmp_path / "hyp.jsonl").write_text(  # what speech-peft transcribe --format jsonl writes
        '{"id": "u1", "audio": "a.wav", "duration": 1.0, "text": "guten tag", "segments": [], "speech": true}\n'
        '{"id": "u2", "audio": "b.wav", "duration": 1.0, "text": "bon jour", "segments": [], "speech": true}\n')
    assert main(["score", "wer", "--ref", str(tmp_path / "m.jsonl"), "--hyp", str(tmp_path / "hyp.jsonl"),
                 "--by", "language"]) == 0
    out = capsys.readouterr().out
    assert "| de | 1 | 2 | 0.00 |" in out and "| fr | 1 | 1 | 200.00 |" in out
    (tmp_path / "bad.jsonl").write_text('{"text": "no id"}\n')
    assert main(["score", "wer", "--ref", str(tmp_path / "m.jsonl"), "--hyp", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err


def test_a_wer_change_interval_lies_below_zero_only_when_most_speakers_gained():
    from speech_peft.metrics.wer import wer_change_interval

    speakers = [f"s{i}" for i in range(20) for _ in range(3)]
    words = [10] * 60
    before = [3] * 60
    assert wer_change_interval(words, before, before, speakers) == (0.0, 0.0)
    every_speaker_gains = [2] * 60  # one error fewer in every utterance: -10 points
    low, high = wer_change_interval(words, before, every_speaker_gains, speakers)
    assert low == pytest.approx(-10.0) and high == pytest.approx(-10.0)
    one_speaker_carries_it = [0 if s == "s0" else 3 for s in speakers]  # -9 points on one speaker of 20
    low, high = wer_change_interval(words, before, one_speaker_carries_it, speakers)
    assert low < 0 and high >= 0  # the mean falls, but one speaker is no evidence that speakers gain
    mixed = [1 if i % 2 else 4 for i in range(60)]  # -2 or +1 per utterance: half the speakers -3, half 0
    low, high = wer_change_interval(words, before, mixed, speakers)
    assert low < -5 < high < 0  # -5 points on average, and below 0 however the speakers are resampled
    with pytest.raises(ValueError, match="one count of each kind per utterance"):
        wer_change_interval(words, before, before[:-1], speakers)
