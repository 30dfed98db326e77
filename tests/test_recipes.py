"""Recipes run their stages from the command line; the prepare stages read the standard layouts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def _recipe(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", f"recipes/{name}/cls/run.sh", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=900)


def _wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.random.default_rng(0).uniform(-0.1, 0.1, 8000).astype(np.float32), 16000)


def test_esc50_recipe_prepares_five_folds_from_the_standard_layout(tmp_path):
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for i, category in enumerate(["dog", "rain"]):
            for take in "AB":
                name = f"{fold}-10{i}-{take}-{i}.wav"
                _wav(tmp_path / "ESC-50" / "audio" / name)
                rows.append(f"{name},{fold},{i},{category},False,10{i},{take}")
    (tmp_path / "ESC-50" / "meta").mkdir()
    (tmp_path / "ESC-50" / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    exp = tmp_path / "exp"
    done = _recipe("esc50", "--data", str(tmp_path / "ESC-50"), "--exp", str(exp), "--stop_stage", "0")
    assert done.returncode == 0, done.stderr
    for fold in range(1, 6):
        test = (exp / "manifests" / f"fold_fold{fold}" / "test.jsonl").read_text().splitlines()
        assert len(test) == 4 and all(f'"speaker": "fold{fold}"' in line for line in test)


def test_speechcommands_recipe_prepares_the_official_split(tmp_path):
    root = tmp_path / "sc"
    for rel in ("yes/a_nohash_0.wav", "yes/b_nohash_0.wav", "no/c_nohash_0.wav", "no/d_nohash_1.wav"):
        _wav(root / rel)
    (root / "validation_list.txt").write_text("yes/b_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("no/c_nohash_0.wav\n")
    exp = tmp_path / "exp"
    done = _recipe("speechcommands", "--data", str(root), "--exp", str(exp), "--stop_stage", "0")
    assert done.returncode == 0, done.stderr
    counts = {s: len((exp / "manifests" / "fold_official" / f"{s}.jsonl").read_text().splitlines())
              for s in ("train", "val", "test")}
    assert counts == {"train": 2, "val": 1, "test": 1}


def test_recipe_without_data_says_what_it_needs():
    done = _recipe("esc50")
    assert done.returncode == 2 and "--data" in done.stderr


def test_the_digits_long_recipe_without_the_shared_real_speakers_names_the_folders_it_needs(tmp_path):
    done = _bare_recipe("digits_long/asr", "--exp", str(tmp_path / "exp"), "--data", str(tmp_path))
    assert done.returncode == 1
    assert f"{tmp_path}: needs fsdd/, speech_commands_digits/ and speechocean762/" in done.stderr
    assert not (tmp_path / "exp" / "data").exists()


@pytest.mark.slow
def test_quick_fsdd_recipe_runs_end_to_end_and_writes_results(tmp_path):
    exp = tmp_path / "exp"
    done = _recipe("fsdd", "--quick", "--exp", str(exp))
    assert done.returncode == 0, done.stderr[-3000:]
    results = (exp / "RESULTS.md").read_text()
    assert "| lora |" in results and "nicolas" in results
    test = json.loads((exp / "lora" / "fold_nicolas" / "test_result.json").read_text())
    assert test["test/acc"] > 0.5  # 10 classes: chance is 0.1


def test_results_table_names_the_dataset_and_encoder_of_the_runs(tmp_path):
    from speech_peft.reports.classification import write_classification_report

    for fold, acc in (("1", 0.8), ("2", 0.9)):
        run = tmp_path / "exp" / "lora" / f"fold_{fold}"
        run.mkdir(parents=True)
        (run / "config.fit.yaml").write_text("encoder:\n  name: /models/ast-base  # last layer fast\ndata:\n  name: esc50\n")
        (run / "fit_result.json").write_text(json.dumps({"trainable_params": 10, "total_params": 1000,
                                                         "export_bytes": 2048, "epoch_times_s": [3.0, 5.0]}))
        (run / "test_result.json").write_text(json.dumps({"test/acc": acc}))
    text = write_classification_report(tmp_path / "exp", tmp_path / "RESULTS.md", "bash run.sh").read_text()
    assert text.startswith("# ESC-50 environmental sounds: PEFT on a frozen /models/ast-base encoder")
    assert "| lora | 85.00 ± 7.07 | 2 | 10 | 1.000 | 2 KiB | 4.0 |" in text


@pytest.mark.parametrize("recipe", ["fsdd/cls", "esc50/cls", "speechcommands/cls", "fsdd_long/asr", "digits_long/asr",
                                    "multitask/asr", "multilingual/asr",
                                    "speech_samples/restore", "librispeech/asr", "libritts/restore", "vctk/restore",
                                    "commonvoice/asr"])
def test_every_recipe_takes_a_gpu_profile_and_refuses_an_unknown_one(recipe, tmp_path):
    # Options are checked first: on a machine without the synthetic voices the answer is the same.
    done = _bare_recipe(recipe, "--profile", "tpu", "--exp", str(tmp_path / "exp"), "--data", str(tmp_path))
    assert done.returncode == 2 and "unknown profile tpu (cpu, gpu)" in done.stderr
    assert not (tmp_path / "exp").exists()


def _bare_recipe(recipe: str, *args: str) -> subprocess.CompletedProcess:
    """A recipe run with espeak-ng, flite, ffmpeg and sox hidden from PATH, as on a fresh machine."""
    return subprocess.run(["bash", "tests/without_system_tools.sh", "bash", f"recipes/{recipe}/run.sh", *args],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,error", [
    (["--stage", "one"], "--stage and --stop_stage take a stage number, not 'one'"),
    (["--stop_stage", "2x"], "not '2x'"),
    (["--epochs", "0"], "--epochs takes a positive number"),
    (["--stages", "1"], "unknown option --stages"),
    (["--stop_stage", "1", "--stage", "3"], "--stage 3 comes after --stop_stage 1: no stage would run"),
], ids=["stage", "stop-stage", "epochs", "unknown-option", "empty-range"])
def test_a_recipe_refuses_a_bad_option_before_it_looks_for_system_tools(args, error, tmp_path):
    done = _bare_recipe("multitask/asr", "--exp", str(tmp_path / "exp"), *args)
    assert done.returncode == 2 and error in done.stderr, done.stderr
    assert not (tmp_path / "exp").exists()


def test_a_stage_that_needs_a_missing_system_tool_names_it_with_the_install_line(tmp_path):
    done = _bare_recipe("multitask/asr", "--exp", str(tmp_path / "exp"), "--stop_stage", "0")
    assert done.returncode == 1
    assert done.stderr.strip() == ("stage 0 (synthetic voices, telephone codecs) needs espeak-ng flite ffmpeg: "
                                   "apt-get install espeak-ng flite ffmpeg")
    assert not (tmp_path / "exp").exists()
    later = _bare_recipe("multitask/asr", "--exp", str(tmp_path / "exp"), "--stage", "9")  # no stage needs them
    assert later.returncode == 0, later.stderr


def test_the_gpu_check_runs_every_profile_and_the_speed_benches_in_one_script():
    done = subprocess.run(["bash", "benches/gpu_check.sh"], cwd=ROOT, env={**ENV, "GPU_CHECK_DRY": "1"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    steps = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert all("--profile gpu" in steps[name] for name in ("fsdd_cls_30s", "fsdd_long_asr", "restore", "multitask_asr"))
    assert "--device cuda" in steps["transcribe_cuda"] and steps["bench_transcribe"].endswith("transcribe_speed.py")


def test_multilingual_recipe_routes_each_utterance_to_the_plug_in_of_its_given_or_detected_language(tmp_path):
    from speech_peft.data.manifest import Entry, read_manifest, write_manifest

    test = write_manifest([Entry("a", str(tmp_path / "a.wav"), 1.0, 16000, text="hallo", language="de"),
                           Entry("b", str(tmp_path / "b.wav"), 1.0, 16000, text="hola", language="es"),
                           Entry("c", str(tmp_path / "c.wav"), 1.0, 16000, text="bonjour", language="fr")],
                          tmp_path / "test.jsonl", relative=False)
    plugins = {lang: tmp_path / "plugins" / lang for lang in ("de", "es", "fr")}
    for folder in plugins.values():
        folder.mkdir(parents=True)
    (tmp_path / "detected.jsonl").write_text("".join(json.dumps({"id": uid, "text": "", "segments": [{"language": lang}]})
                                                     + "\n" for uid, lang in [("a", "de"), ("b", "th"), ("c", "es")]))
    script = ROOT / "recipes" / "multilingual" / "asr" / "local" / "route.py"
    args = [f"{lang}={path}" for lang, path in plugins.items()]
    for out, extra in (("given.jsonl", []), ("detected_routed.jsonl", ["--detected", str(tmp_path / "detected.jsonl")])):
        done = subprocess.run([sys.executable, str(script), str(test), str(tmp_path / out), *args, *extra],
                              cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    given = {e.id: (e.language, e.adapter) for e in read_manifest(tmp_path / "given.jsonl")}
    assert given == {"a": ("de", str(plugins["de"])), "b": ("es", str(plugins["es"])), "c": ("fr", str(plugins["fr"]))}
    detected = {e.id: (e.language, e.adapter) for e in read_manifest(tmp_path / "detected_routed.jsonl")}
    # a language without a plug-in (Thai) keeps the bare model; a wrong detection takes the wrong plug-in
    assert detected == {"a": ("de", str(plugins["de"])), "b": ("th", None), "c": ("es", str(plugins["es"]))}


def test_the_fsdd_recipe_takes_the_base_model_by_one_option_and_other_recipes_refuse_it():
    wrong = _recipe("fsdd", "--model", "huge", "--stage", "9")
    assert wrong.returncode == 2 and "unknown model huge (tiny, base)" in wrong.stderr
    base = _recipe("fsdd", "--model", "base", "--stage", "9")  # no stage runs: options only
    assert base.returncode == 0, base.stderr
    refused = _recipe("esc50", "--model", "base")
    assert refused.returncode == 2 and "takes no --model" in refused.stderr


def test_the_fsdd_long_recipe_reports_the_base_model_as_base(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "recipes/fsdd_long/asr/run.sh", *args], cwd=ROOT, env=ENV,
                              capture_output=True, text=True, timeout=60)

    wrong = run("--model", "huge", "--stage", "9")
    assert wrong.returncode == 2 and "unknown model huge (tiny, base)" in wrong.stderr
    exp = tmp_path / "exp"
    row = {"system": "ar_zero_shot", "test_set": "30s", "bucket_s": 30, "candidates": 1, "rule": None, "wer": 0.5,
           "mean_utterance_wer": 0.5, "seconds_per_item": 1.0, "decoding": "greedy"}
    (exp / "eval").mkdir(parents=True)
    (exp / "eval" / "results.json").write_text(json.dumps({"30s/ar_zero_shot": [row]}))
    done = run("--model", "base", "--stage", "7", "--exp", str(exp))  # stage 7: the report alone
    assert done.returncode == 0, done.stderr
    text = (exp / "RESULTS.md").read_text()
    assert "autoregressive Whisper (whisper-base)" in text and "| AR zero-shot (greedy) | 50.0 |" in text
    assert "`bash recipes/fsdd_long/asr/run.sh --model base`" in text
    assert "## Candidates (K=4 in one batch): WER / oracle WER / hit rate %\n\n(not run: no system" in text


def test_multilingual_adapters_are_validated_and_tested_on_sentences_and_voices_they_never_trained_on():
    import argparse
    import importlib.util

    from speech_peft.data.tts_voices import Voice

    spec = importlib.util.spec_from_file_location(
        "prepare_languages", ROOT / "recipes" / "multilingual" / "asr" / "local" / "prepare_languages.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    variants = prepare.TRAIN_VARIANTS + ("m7", "f4")
    voices = [Voice("espeak-ng", f"de+{v}", rate) for v in variants for rate in (140, 175)]
    args = argparse.Namespace(train_voices=6, val_voices=2, test_voices=2, readings=2, val_sentences=3,
                              test_sentences=4)
    plan = prepare.plan_splits([f"sentence {i}" for i in range(20)], voices, args, "0-de")
    sentences = {split: {index for _, index in pairs} for split, pairs in plan.items()}
    assert sentences == {"train": set(range(13)), "val": {13, 14, 15}, "test": {16, 17, 18, 19}}
    speakers = {split: {voice.id for voice, _ in pairs} for split, pairs in plan.items()}
    assert not (speakers["train"] & speakers["val"]) and not (speakers["train"] | speakers["val"]) & speakers["test"]
    assert all(voice.name.endswith(("+m7", "+f4")) for voice, _ in plan["test"])
    assert not any(voice.name.endswith(("+m7", "+f4")) for voice, _ in plan["train"] + plan["val"])
    # every training sentence read twice, by two different voices, and the voices share the reading evenly
    readers = {}
    for voice, index in plan["train"]:
        readers.setdefault(index, []).append(voice.id)
    assert all(len(set(ids)) == 2 for ids in readers.values())
    per_voice = [sum(voice.id == v for voice, _ in plan["train"]) for v in speakers["train"]]
    assert len(speakers["train"]) == 6 and max(per_voice) - min(per_voice) <= 1
    with pytest.raises(SystemExit, match="none to train on"):
        prepare.plan_splits(["a", "b"], voices, args, "0-de")
    with pytest.raises(SystemExit, match="too few for 6 training voices"):  # a language with few voices
        prepare.plan_splits([f"sentence {i}" for i in range(20)], voices[:6] + voices[-4:], args, "0-de")
    with pytest.raises(SystemExit, match="too few"):  # more readings of a sentence than training voices
        prepare.plan_splits([f"sentence {i}" for i in range(20)], voices,
                            argparse.Namespace(**{**vars(args), "readings": 7}), "0-de")


def test_multitask_real_speakers_split_by_speaker_and_every_test_speaker_is_heard_before_any_twice(tmp_path, capsys):
    import importlib.util

    from speech_peft.data.manifest import read_manifest

    spec = importlib.util.spec_from_file_location(
        "prepare_tasks", ROOT / "recipes" / "multitask" / "asr" / "local" / "prepare_tasks.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    folder = tmp_path / "speechocean762"
    (folder / "audio").mkdir(parents=True)
    rows = ["id\tpath\tspeaker\ttext"]
    for s in range(40):
        for u in range(4):
            name = f"s{s:02d}_{u}"
            sf.write(folder / "audio" / f"{name}.wav", np.full(1600, 0.1, dtype=np.float32), 16000)
            text = "ZERO THREE FIVE" if u == 0 else f"WE READ SENTENCE {u}"
            rows.append(f"{name}\taudio/{name}.wav\tspk{s:02d}\t{text}")
    rows.append("untold\taudio/s00_1.wav\tspk00\t")  # no transcript: skipped, and said so
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")
    paths = prepare.speaker_manifests(folder, tmp_path / "out", test_items=12)
    assert "1 utterances without a transcript skipped (e.g. untold)" in capsys.readouterr().out
    assert "untold" not in {e.id for path in paths.values() for e in read_manifest(path)}
    assert set(paths) == {f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("sentences", "digits")}
    speakers = {name: [e.speaker for e in read_manifest(path)] for name, path in paths.items()}
    train = set(speakers["train_sentences"]) | set(speakers["train_digits"])
    test = set(speakers["test_sentences"]) | set(speakers["test_digits"])
    assert train and test and not train & test and not (set(speakers["val_sentences"]) & (train | test))
    assert len(speakers["test_sentences"]) == 12 and len(set(speakers["test_sentences"])) == min(12, len(test))
    assert {e.text for e in read_manifest(paths["train_digits"])} == {"zero three five"}
    assert prepare.speaker_manifests(tmp_path / "absent", tmp_path / "out2", 12) == {}
