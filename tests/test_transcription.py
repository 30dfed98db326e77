"""Transcription people can use: recordings of any length, silence, bad files in a batch, several adapters
in one batch, and a decoding loop that gives what transformers' own forward gives."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speech_peft.asr.longform import Plan, assemble, plan_recording
from speech_peft.asr.vad import CHUNK, SAMPLE_RATE, VADConfig, plan_windows, regions_from_probabilities
from speech_peft.asr.hypothesis import Hypothesis, Thresholds, compression_ratio
from speech_peft.asr.whisper_ar import WhisperTranscriber
from speech_peft.cli import main
from speech_peft.data.manifest import Entry, write_manifest
from speech_peft.encoders.whisper import load_whisper
from speech_peft.jobs.transcribe import transcribe_files, write_transcripts

ASR = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"
SENTENCES = sorted(ASR.glob("*.wav"))


def _sentences(count: int, gap_s: float = 0.6) -> np.ndarray:
    waves = [sf.read(p, dtype="float32")[0] for p in (SENTENCES * 3)[:count]]
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([np.concatenate([w, gap]) for w in waves])


# --- voice activity and windows ------------------------------------------------------------------------

def test_pauses_shorter_than_the_minimum_silence_stay_inside_one_region():
    probs = np.array([0.9] * 20 + [0.1] * 3 + [0.9] * 20 + [0.0] * 40, dtype=np.float32)
    regions = regions_from_probabilities(probs, len(probs) * CHUNK, VADConfig(min_silence_s=0.3, pad_s=0.0))
    assert regions == [(0, 43 * CHUNK)]


def test_a_click_shorter_than_the_minimum_speech_is_not_a_region():
    probs = np.array([0.0] * 10 + [0.9] * 2 + [0.0] * 30, dtype=np.float32)
    assert regions_from_probabilities(probs, len(probs) * CHUNK, VADConfig(min_speech_s=0.1)) == []


def test_speech_longer_than_a_window_is_cut_at_its_least_speech_like_chunk():
    probs = np.full(3000, 0.9, dtype=np.float32)  # 96 s of unbroken speech
    probs[700] = 0.5
    regions = regions_from_probabilities(probs, len(probs) * CHUNK, VADConfig(pad_s=0.0), max_seconds=30.0)
    assert regions[0] == (0, 700 * CHUNK)
    assert all(end - start <= 30 * SAMPLE_RATE for start, end in regions)
    assert regions[-1][1] == len(probs) * CHUNK


def test_windows_join_regions_up_to_thirty_seconds_and_cover_every_region():
    second = SAMPLE_RATE
    regions = [(i * 7 * second, (i * 7 + 5) * second) for i in range(10)]
    windows = plan_windows(regions, 30.0)
    assert all(end - start <= 30 * second for start, end in windows)
    for start, end in regions:
        assert any(a <= start and end <= b for a, b in windows)
    assert len(windows) == 3


def test_a_recording_up_to_thirty_seconds_is_one_window_and_silence_is_heard_as_none():
    plan = plan_recording(np.zeros(SAMPLE_RATE, dtype=np.float32))
    assert plan.windows == [(0, SAMPLE_RATE)] and plan.heard_speech is False
    assert plan_recording(np.zeros(SAMPLE_RATE, dtype=np.float32), vad=None).heard_speech is None


def test_a_long_recording_without_voice_activity_is_heard_by_whisper_whole_and_silent_when_it_agrees():
    """Over 30 s the detector picks the windows; hearing nothing, it still hands Whisper every 30 s, so a
    minute of noise is ``speech: false`` with a reason (not ``speech: true`` with empty text)."""
    minute = np.random.default_rng(0).normal(0, 0.003, 65 * SAMPLE_RATE).astype(np.float32)
    plan = plan_recording(minute)
    assert plan.heard_speech is False
    assert plan.windows == [(0, 30 * SAMPLE_RATE), (30 * SAMPLE_RATE, 60 * SAMPLE_RATE),
                            (60 * SAMPLE_RATE, 65 * SAMPLE_RATE)]
    hyps = [Hypothesis("", no_speech_prob=0.9, avg_logprob=-1.2)] * 3
    silent = assemble("n", "n.wav", len(minute), plan, hyps)
    assert not silent.speech and "no voice activity" in silent.reason and silent.text == ""


# --- the speech decision -------------------------------------------------------------------------------

def test_silence_is_empty_when_detector_and_whisper_agree_and_quiet_speech_survives_the_detector():
    plan = Plan([(0, SAMPLE_RATE)], heard_speech=False)
    silent = assemble("s", "s.wav", SAMPLE_RATE, plan, [Hypothesis("you", no_speech_prob=0.95, avg_logprob=-0.3)])
    assert silent.text == "" and not silent.speech and "no voice activity" in silent.reason
    quiet = assemble("q", "q.wav", SAMPLE_RATE, plan, [Hypothesis("zero", no_speech_prob=0.2, avg_logprob=-0.5)])
    assert quiet.text == "zero" and quiet.speech
    unscored = assemble("d", "d.wav", SAMPLE_RATE, plan, [Hypothesis("zero")])  # e.g. a diffusion decoder
    assert unscored.text == "zero" and unscored.speech


def test_a_window_whisper_calls_silent_is_dropped_from_the_joined_text():
    plan = Plan([(0, 30 * SAMPLE_RATE), (31 * SAMPLE_RATE, 40 * SAMPLE_RATE)], heard_speech=True)
    hyps = [Hypothesis("hello there", 0.01, -0.2), Hypothesis("thank you", 0.9, -1.5)]
    transcript = assemble("x", "x.wav", 40 * SAMPLE_RATE, plan, hyps)
    assert transcript.text == "hello there" and [s.start for s in transcript.segments] == [0.0]


def test_a_looping_text_fails_the_compression_rule_and_a_passing_retry_replaces_it():
    loop = Hypothesis("the the the the the the the the the the the the the the the the", 0.01, -0.2)
    assert compression_ratio(loop.text) > 2.4 and Thresholds().failed(loop)
    assert not Thresholds().failed(Hypothesis("The child almost hurt the small dog.", 0.01, -0.2))


def test_fallback_redecodes_only_failing_rows_and_keeps_a_retry_only_when_it_is_better():
    from speech_peft.asr.hypothesis import fall_back

    loop = "the " * 40
    hyps = [Hypothesis("a clean sentence", 0.01, -0.2), Hypothesis(loop, 0.01, -0.3),
            Hypothesis("you", 0.95, -1.5), Hypothesis(loop, 0.01, -0.3)]
    asked = []

    def redecode(rows, temperature):
        asked.append((rows, temperature))
        # row 1 recovers at the second temperature; row 3 never does (a worse loop is not kept)
        return [Hypothesis("now a sentence" if r == 1 and temperature > 0.2 else loop + "the", 0.01, -0.9, temperature)
                for r in rows]

    out = fall_back(list(hyps), Thresholds(), redecode)
    assert asked[0] == ([1, 3], 0.2) and asked[1] == ([1, 3], 0.4) and all(rows == [3] for rows, _ in asked[2:])
    assert out[0] is hyps[0] and out[2] is hyps[2]  # passing and silent rows untouched
    assert out[1].text == "now a sentence" and out[1].temperature == 0.4 and out[3] is hyps[3]


def test_when_every_retry_fails_an_unlikely_text_that_does_not_loop_beats_a_likely_loop():
    from speech_peft.asr.hypothesis import fall_back

    loop = Hypothesis("se " * 60, 0.01, -0.1)
    unlikely = Hypothesis("la flor todavia", 0.01, -1.6, 0.6)
    assert Thresholds().failed(loop) and Thresholds().failed(unlikely)

    def redecode(rows, temperature):
        return [unlikely if temperature == 0.6 else Hypothesis("se " * 50, 0.01, -0.05, temperature) for _ in rows]

    assert fall_back([loop], Thresholds(), redecode)[0] is unlikely


# --- the decoding loop ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    return WhisperTranscriber(load_whisper("whisper-tiny.en"))


def test_the_lean_decoding_loop_gives_the_tokens_and_scores_of_transformers_forward(transcriber):
    waves = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in SENTENCES[:3]],
                                            batch_first=True)
    with torch.inference_mode():
        states = transcriber.encode(waves)
        lean = transcriber._search(states)
        transcriber.lean_ok = lambda: False
        try:
            reference = transcriber._search(states)
        finally:
            del transcriber.lean_ok
    assert lean[0] == reference[0]
    assert np.allclose(lean[1], reference[1], atol=1e-4) and np.allclose(lean[2], reference[2], atol=1e-4)


def test_a_sampled_row_reads_the_same_whatever_else_is_in_its_batch(transcriber):
    waves = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in SENTENCES[:3]],
                                            batch_first=True)
    with torch.inference_mode():
        states = transcriber.encode(waves)
        alone = transcriber._search(states[2:], temperature=2.0, seed=7)[0][0]
        batched = transcriber._search(states, temperature=2.0, seed=7)[0][2]
    assert alone == batched


def test_whisper_gives_a_real_sentence_a_low_no_speech_probability_and_silence_a_high_one(transcriber):
    speech = torch.from_numpy(sf.read(SENTENCES[0], dtype="float32")[0])[None]
    h_speech, = transcriber.decode(speech)
    h_silence, = transcriber.decode(torch.zeros(1, SAMPLE_RATE))
    assert "child almost hurt the small dog" in h_speech.text.lower()
    assert h_speech.no_speech_prob < 0.1 < 0.6 < h_silence.no_speech_prob


# --- several adapters in one batch ---------------------------------------------------------------------

def _saved_lora(directory: Path, seed: int) -> str:
    from speech_peft.adapters import LoRAConfig, add_adapter, save_adapter
    from speech_peft.adapters.injection import adapter_modules

    import copy

    model = copy.deepcopy(load_whisper("whisper-tiny.en").model)
    add_adapter(model, LoRAConfig(r=4, target_roles=["attn.q", "attn.v"]), "default")
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in adapter_modules(model, "default").values():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return str(save_adapter(model, directory, base_model_name="whisper-tiny.en"))


def test_utterances_naming_different_adapters_in_one_batch_match_one_at_a_time(tmp_path):
    first, second = _saved_lora(tmp_path / "a", 1), _saved_lora(tmp_path / "b", 2)
    names = [first, second, None, second]
    entries = [Entry(f"u{i}", str(p), 0.0, 0, adapter=a) for i, (p, a) in enumerate(zip(SENTENCES[:4], names))]
    write_manifest(entries, tmp_path / "mixed.jsonl")
    mixed = transcribe_files(entries, batch_size=4, progress=False)
    alone = [transcribe_files([dataclass_copy(e, adapter=None)], adapter=e.adapter, progress=False)[0] for e in entries]
    assert [t.text for t in mixed] == [t.text for t in alone]
    assert len({t.text for t in mixed[:2]}) == 2  # the two adapters really differ


def dataclass_copy(entry: Entry, **changes) -> Entry:
    import dataclasses

    return dataclasses.replace(entry, **changes)


# --- the command: long files, silence, bad files -------------------------------------------------------

def _folder_of_every_kind(root: Path) -> Path:
    root.mkdir()
    shutil.copy(SENTENCES[0], root / "good.wav")
    sf.write(root / "long.wav", _sentences(16), SAMPLE_RATE)  # about 45 s
    sf.write(root / "silence.wav", np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    sf.write(root / "empty.wav", np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    (root / "text.wav").write_text("not audio\n" * 8)
    sf.write(root / "tiny.wav", np.full(10, 0.01, dtype=np.float32), SAMPLE_RATE)
    (root / "truncated.wav").write_bytes((root / "good.wav").read_bytes()[:60])
    nan = np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE).astype(np.float32)
    nan[100] = np.nan
    sf.write(root / "nan.wav", nan, SAMPLE_RATE, subtype="FLOAT")
    return root


BAD = {"empty": "empty audio", "text": "unreadable", "tiny": "too short", "truncated": "truncated", "nan": "NaN"}


def test_with_skip_bad_every_bad_file_is_listed_with_its_reason_and_the_rest_are_transcribed(tmp_path):
    folder = _folder_of_every_kind(tmp_path / "in")
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.tsv"
    assert main(["transcribe", str(folder), "--skip-bad", "--rejects", str(rejects), "--out", str(out)]) == 0
    lines = dict(line.split("\t") for line in rejects.read_text().splitlines())
    for name, reason in BAD.items():
        assert reason in lines[str(folder / f"{name}.wav")], (name, lines)
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"good", "long", "silence"}
    assert "child almost hurt the small dog" in rows["good"]["text"].lower()
    assert rows["silence"] == {**rows["silence"], "text": "", "speech": False} and rows["silence"]["reason"]
    long = rows["long"]
    assert long["duration"] > 40 and len(long["segments"]) >= 2
    assert all(s["end"] - s["start"] <= 30.0 for s in long["segments"])
    assert long["text"].lower().count("child almost hurt the small dog") == 2


@pytest.mark.parametrize("name", sorted(BAD))
def test_without_skip_bad_the_first_bad_file_stops_the_run_in_one_line_naming_it(name, tmp_path, capsys):
    folder = _folder_of_every_kind(tmp_path / "in")
    keep = {f"{name}.wav", "good.wav"}
    for path in folder.iterdir():
        if path.name not in keep:
            path.unlink()
    assert main(["transcribe", str(folder), "--out", str(tmp_path / "hyp.tsv")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("speech-peft")]
    assert len(err) == 1 and f"{name}.wav" in err[0] and BAD[name] in err[0]


def test_an_over_long_file_is_a_bad_input_named_with_its_length(tmp_path, capsys):
    assert main(["transcribe", str(SENTENCES[0]), "--max-seconds", "1"]) == 2
    assert "absurd length" in capsys.readouterr().err


def test_timestamps_come_out_as_tsv_rows_and_srt_files(tmp_path):
    long = tmp_path / "long.wav"
    sf.write(long, _sentences(14), SAMPLE_RATE)
    transcripts = transcribe_files([Entry("long", str(long), 0.0, 0)], progress=False)
    rows = write_transcripts(transcripts, tmp_path / "t.tsv", "tsv", timestamps=True)[0].read_text().splitlines()
    starts = [float(r.split("\t")[1]) for r in rows]
    assert len(rows) == len(transcripts[0].segments) >= 2 and starts == sorted(starts)
    srt = write_transcripts(transcripts, tmp_path / "srt", "srt")[0].read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:") and "\n2\n" in srt


# --- the CTranslate2 backend and export ----------------------------------------------------------------

def test_numpy_features_for_ctranslate2_equal_the_torch_features_of_the_encoder():
    from speech_peft.encoders.whisper import log_mel
    from speech_peft.features import log_mel_30s

    waves = np.stack([sf.read(p, dtype="float32")[0][:40000] for p in SENTENCES[:2]])
    assert np.abs(log_mel_30s(waves) - log_mel(torch.from_numpy(waves)).numpy()).max() < 1e-4


def test_exporting_the_base_model_writes_back_the_very_file_it_was_read_from(tmp_path):
    from speech_peft.jobs.export import export_whisper
    from speech_peft.weights import resolve_model_dir

    out = export_whisper("whisper-tiny.en", tmp_path / "ct2")
    assert (out / "model.bin").read_bytes() == (resolve_model_dir("whisper-tiny.en") / "model.bin").read_bytes()
    with pytest.raises(ValueError, match="never overwrites"):
        export_whisper("whisper-tiny.en", out)


def test_a_merged_lora_export_transcribes_like_the_torch_path_with_the_adapter(tmp_path, capsys):
    pytest.importorskip("ctranslate2")
    adapter = _saved_lora(tmp_path / "lora", 3)
    assert main(["export", "--format", "ctranslate2", "--adapter", adapter, "--out", str(tmp_path / "ct2")]) == 0
    entries = [Entry(p.stem, str(p), 0.0, 0) for p in SENTENCES]
    torch_path = transcribe_files(entries, adapter=adapter, progress=False)
    engine = transcribe_files(entries, model=str(tmp_path / "ct2"), backend="ctranslate2", compute_type="float32",
                              progress=False)
    from speech_peft.metrics.wer import score

    # float16 storage of the merged weights is the only difference: the words agree almost everywhere
    assert score([t.text for t in torch_path], [t.text for t in engine]).wer <= 0.05
    base = transcribe_files(entries, model="whisper-tiny.en", backend="ctranslate2", progress=False)
    assert [t.text for t in base] != [t.text for t in engine]  # the adapter really is in the exported weights
    with pytest.raises(ValueError, match="do not apply"):
        transcribe_files(entries[:1], model=str(tmp_path / "ct2"), backend="ctranslate2", adapter=adapter)


def test_int8_decoding_keeps_the_words_and_leaves_adapted_layers_in_float32(tmp_path):
    import copy
    import dataclasses

    from speech_peft.adapters import load_adapter

    bundle = load_whisper("whisper-tiny.en")
    int8 = WhisperTranscriber(bundle, compute_type="int8")
    speech = torch.from_numpy(sf.read(SENTENCES[0], dtype="float32")[0])[None]
    assert "child almost hurt the small dog" in int8.transcribe(speech)[0].lower()
    adapted = copy.deepcopy(bundle.model)
    load_adapter(adapted, _saved_lora(tmp_path / "lora", 4))
    quantised = WhisperTranscriber(dataclasses.replace(bundle, model=adapted), compute_type="int8").int8
    q_proj = adapted.model.decoder.layers[0].self_attn.q_proj  # the adapter's site
    k_proj = adapted.model.decoder.layers[0].self_attn.k_proj  # plain
    assert id(q_proj) not in quantised and id(k_proj) in quantised


@pytest.mark.parametrize("backend", ["torch", "ctranslate2"])
def test_a_manifest_language_the_model_cannot_take_stops_the_run_before_any_audio_naming_it(backend, tmp_path, capsys):
    wav = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr" / "spk1_snt1.wav"
    manifest = write_manifest([Entry("a", str(wav), 2.87, 16000, language="en"),
                               Entry("b", str(wav), 2.87, 16000, language="de")], tmp_path / "m.jsonl", relative=False)
    out = tmp_path / "hyp.tsv"
    assert main(["transcribe", str(manifest), "--model", "whisper-tiny.en", "--backend", backend, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    expected = "English-only: it cannot transcribe 'de'" if backend == "torch" else "languages ['de']"
    assert expected in err and "language field" in err and not out.exists()
