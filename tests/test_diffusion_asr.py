"""Whisfusion training: stage 1 moves only the cross-attention adapters; stage 2 the decoder too,
with layer-wise learning-rate decay and an EMA; encoder states cache safely."""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch

from speech_peft.adapters import attach_adapter, save_adapter
from speech_peft.data.datamodule import ManifestDataModule
from speech_peft.encoders.cache import encoder_key
from speech_peft.encoders.whisper import WhisperEncoderModel, load_whisper
from speech_peft.tasks.diffusion_asr import DiffusionASR

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _data(fsdd_folds) -> ManifestDataModule:
    fold = fsdd_folds / "fold_theo"
    return ManifestDataModule(train=str(fold / "train.jsonl"), val=str(fold / "val.jsonl"), batch_size=4,
                              require_text=True)


def _trainer(tmp_path, epochs: int = 1) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, num_sanity_val_steps=0, limit_train_batches=3, limit_val_batches=1,
                     default_root_dir=str(tmp_path))


def test_stage_one_moves_only_the_cross_attention_adapters(whisper_with_tokenizer, fsdd_folds, tmp_path):
    torch.manual_seed(0)
    model = DiffusionASR(whisper_with_tokenizer, stage=1, max_length=8, xattn_heads=4, lr=1e-2)
    frozen = {f"encoder.{k}": v.clone() for k, v in model.encoder.state_dict().items()}
    frozen.update({f"decoder.{k}": v.clone() for k, v in model.decoder.state_dict().items() if ".adapters." not in k})
    adapters = {k: v.clone() for k, v in model.decoder.state_dict().items() if ".adapters." in k}
    _trainer(tmp_path).fit(model, _data(fsdd_folds))
    after = {**{f"encoder.{k}": v for k, v in model.encoder.state_dict().items()},
             **{f"decoder.{k}": v for k, v in model.decoder.state_dict().items()}}
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    moved = [k for k, v in adapters.items() if not torch.equal(model.decoder.state_dict()[k], v)]
    assert any(k.endswith("gate") for k in moved) and len(moved) > len(model.decoder.layers)


def test_lora_on_the_frozen_whisper_decoder_trains_only_lora_and_exports_without_the_cross_attention(
        whisper_with_tokenizer, fsdd_folds, tmp_path):
    """decoder_lora: Whisper's decoder and its own cross-attention stay exactly as Whisper trained them; only the
    LoRA matrices move; the export holds LoRA alone and rebuilds the cross-attention from Whisper."""
    torch.manual_seed(0)
    lora = {"r": 4, "alpha": 8, "target_roles": ["attn.q", "attn.k", "attn.v", "attn.o", "ffn.up", "ffn.down"]}
    model = DiffusionASR(whisper_with_tokenizer, max_length=8, lr=1e-2, decoder_lora=lora)
    xattn = DiffusionASR(whisper_with_tokenizer, max_length=8)  # the same Whisper cross-attention, trainable
    before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    trained = {k for k, p in model.decoder.named_parameters() if p.requires_grad}
    assert trained and all(".adapters.decoder_lora." in k for k in trained)
    assert sum(p.numel() for k, p in model.decoder.named_parameters() if k in trained) < \
        sum(p.numel() for p in xattn.decoder.parameters() if p.requires_grad) / 2
    _trainer(tmp_path).fit(model, _data(fsdd_folds))
    moved = {k for k, v in model.decoder.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(".adapters.decoder_lora.lora_B" in k or ".adapters.decoder_lora.lora_A" in k for k in moved)
    model.export(tmp_path / "export")
    assert not (tmp_path / "export" / "xattn").exists() and (tmp_path / "export" / "decoder_lora").is_dir()
    again = DiffusionASR.from_export(tmp_path / "export")
    assert again.decoder_lora == lora
    for k, v in model.decoder.state_dict().items():
        assert torch.equal(v, again.decoder.state_dict()[k]), k
    waves, lengths = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    assert model.eval().transcribe(waves, lengths) == again.transcribe(waves, lengths)
    with pytest.raises(ValueError, match="decoder_lora adapts Whisper's own decoder"):
        DiffusionASR(whisper_with_tokenizer, stage=2, max_length=8, decoder_lora=lora)
    with pytest.raises(ValueError, match="decoder_lora adapts Whisper's own decoder"):
        DiffusionASR(whisper_with_tokenizer, max_length=8, xattn_init="random", decoder_lora=lora)
    xattn.export(tmp_path / "xattn_export")  # trained cross-attention would be dropped without a word
    with pytest.raises(ValueError, match="holds trained cross-attention adapters"):
        DiffusionASR(whisper_with_tokenizer, max_length=8, decoder_lora=lora, init_from=str(tmp_path / "xattn_export"))


def test_an_ar_adapters_encoder_folded_into_the_frozen_encoder_gives_its_states_and_ships_in_the_export(
        whisper_with_tokenizer, tmp_path):
    """encoder_adapter: the decoder and the CTC head read the states an AR + LoRA adapter trained Whisper's encoder
    to give; the encoder stays frozen, its cache key is not Whisper's own, and the export carries the adapter."""
    torch.manual_seed(0)
    whisper = copy.deepcopy(load_whisper(whisper_with_tokenizer).model)  # as WhisperAR carries and saves it
    attach_adapter(whisper, {"method": "lora", "r": 4, "target_roles": ["attn.q", "attn.v"]})
    with torch.no_grad():  # LoRA starts as the identity: give it a change to carry
        for name, param in whisper.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2)
    save_adapter(whisper, tmp_path / "ar" / "adapter", base_model_name=whisper_with_tokenizer)
    model = DiffusionASR(whisper_with_tokenizer, max_length=8, ctc_weight=0.5,
                         encoder_adapter=str(tmp_path / "ar" / "adapter"))
    plain = DiffusionASR(whisper_with_tokenizer, max_length=8, ctc_weight=0.5)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert encoder_key(model.encoder) != encoder_key(plain.encoder)
    waves, lengths = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    adapted = WhisperEncoderModel(copy.deepcopy(whisper.model.encoder)).eval()(waves, lengths).hidden
    assert torch.allclose(model.encoder(waves, lengths).hidden, adapted, atol=1e-4)
    assert not torch.allclose(plain.encoder(waves, lengths).hidden, adapted, atol=1e-2)
    model.export(tmp_path / "export")
    assert (tmp_path / "export" / "encoder_adapter" / "adapter.safetensors").is_file()
    again = DiffusionASR.from_export(tmp_path / "export")
    assert torch.equal(again.encoder(waves, lengths).hidden, model.encoder(waves, lengths).hidden)
    again.export(tmp_path / "export")  # exporting a loaded export over itself keeps its adapter
    assert DiffusionASR.from_export(tmp_path / "export").encoder_adapter is not None


def test_stage_two_trains_the_decoder_with_layer_decay_and_exports_the_average(whisper_with_tokenizer, fsdd_folds, tmp_path):
    torch.manual_seed(0)
    first = DiffusionASR(whisper_with_tokenizer, stage=1, max_length=8, xattn_heads=4)
    first.export(tmp_path / "stage1")
    model = DiffusionASR(whisper_with_tokenizer, stage=2, max_length=8, xattn_heads=4, lr=1e-2,
                         init_from=str(tmp_path / "stage1"))
    optimizer = model.configure_optimizers()
    layers = len(model.decoder.layers)
    lrs = sorted({g["lr"] for g in optimizer.param_groups})
    assert lrs == pytest.approx(sorted(1e-2 * 0.9 ** (layers - d) for d in range(layers + 1)))
    live_before = {k: v.clone() for k, v in model.decoder.named_parameters()}
    _trainer(tmp_path).fit(model, _data(fsdd_folds))
    params = dict(model.decoder.named_parameters())
    assert not torch.equal(params["embed_tokens.weight"], live_before["embed_tokens.weight"])
    # The EMA moved 0.5% of the way each step from where training started, so it lags the live weights.
    name = "layers.0.base.fc1.weight"
    ema = dict(model.average.module.named_parameters())[name]
    live, start = params[name].detach(), live_before[name]
    assert (ema - start).norm() < (live - start).norm()
    model.export(tmp_path / "stage2")
    again = DiffusionASR.from_export(tmp_path / "stage2")
    assert torch.equal(dict(again.decoder.named_parameters())[name], ema)


def test_the_average_is_an_exponential_moving_average_of_the_live_weights(whisper_with_tokenizer):
    model = DiffusionASR(whisper_with_tokenizer, stage=2, max_length=8, xattn_heads=4, ema_decay=0.9)
    weight = dict(model.decoder.named_parameters())["layers.0.base.fc1.weight"]
    seen = []
    for step in range(3):
        with torch.no_grad():
            weight.add_(1.0)
        seen.append(weight.detach().clone())
        model.on_train_batch_end(None, None, step)
    expected = seen[0]
    for value in seen[1:]:
        expected = 0.9 * expected + 0.1 * value
    with model.averaged_weights():
        assert torch.allclose(weight, expected, atol=1e-6)
    assert torch.equal(weight, seen[-1])  # the live weights come back after the block


def test_transcribing_is_deterministic_for_a_fixed_seed(whisper_with_tokenizer):
    from speech_peft.decoders import DecodeOptions
    torch.manual_seed(0)
    model = DiffusionASR(whisper_with_tokenizer, stage=1, max_length=8, xattn_heads=4).eval()
    waves = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 12000])
    for rule in ("confidence", "mbr", "rover"):
        options = DecodeOptions(candidates=3, rule=rule, seed=3)
        texts = model.transcribe(waves, lengths, options)
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
        assert texts == model.transcribe(waves, lengths, options)


def test_missing_transcripts_are_an_error_naming_the_clip(whisper_with_tokenizer):
    model = DiffusionASR(whisper_with_tokenizer, stage=1, max_length=8, xattn_heads=4)
    with pytest.raises(ValueError, match="clip_7"):
        model.tokens_of(["one", None], ["clip_6", "clip_7"])


def test_encoder_cache_serves_only_the_same_encoder_and_the_same_samples(tiny_whisper_dir, tmp_path):
    from speech_peft.encoders.cache import EncoderCache
    from speech_peft.encoders.whisper import load_whisper_encoder

    encoder = load_whisper_encoder(tiny_whisper_dir)
    cache = EncoderCache(tmp_path, encoder)
    waves, lengths = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    hidden, mask = cache(waves, lengths)
    again, _ = cache(waves, lengths)
    assert cache.misses == 2 and cache.hits == 2 and torch.equal(hidden, again)
    direct = encoder(waves[1:, :6000], lengths[1:]).hidden[0]
    assert torch.allclose(hidden[1, : direct.shape[0]], direct, atol=1e-6) and mask[1].sum() == direct.shape[0]
    changed = waves.clone()
    changed[0, 100] += 1e-3
    cache(changed, lengths)
    assert cache.misses == 3  # one changed sample: a new entry
    other = load_whisper_encoder(tiny_whisper_dir)
    with torch.no_grad():
        other.encoder.layers[0].fc1.weight.mul_(1.01)
    assert EncoderCache(tmp_path, other).root != cache.root


def test_encoder_cache_keeps_states_in_a_few_shards_that_other_processes_read(tiny_whisper_dir, tmp_path):
    import tarfile

    from speech_peft.encoders.cache import EncoderCache
    from speech_peft.encoders.whisper import load_whisper_encoder

    encoder = load_whisper_encoder(tiny_whisper_dir)
    writer = EncoderCache(tmp_path, encoder, items_per_shard=4)
    waves, lengths = torch.randn(6, 4000) * 0.1, torch.tensor([4000, 3000, 2000, 4000, 3500, 1000])
    first, _ = writer(waves[:3], lengths[:3])
    assert not list(writer.root.iterdir())  # 3 new states: still collecting
    second, _ = writer(waves[3:], lengths[3:])
    shards = sorted(writer.root.glob("shard-*.tar"))
    assert len(shards) == 1  # 6 states reached the 4 a shard holds: all written as one shard
    with tarfile.open(shards[0]) as tar:  # WebDataset layout: one member per clip, named by its samples
        assert sorted(tar.getnames()) == sorted(EncoderCache.digest(w[:int(n)]) + ".safetensors"
                                                for w, n in zip(waves, lengths))
    reader = EncoderCache(tmp_path, encoder)  # another process, started later
    again, _ = reader(waves, lengths)
    assert reader.hits == 6 and reader.misses == 0
    assert torch.equal(again[:3, :first.shape[1]], first) and torch.equal(again[3:, :second.shape[1]], second)

    late = torch.randn(1, 3000) * 0.1  # a third process adds a state while the reader runs
    third = EncoderCache(tmp_path, encoder)
    third(late, torch.tensor([3000]))
    third.flush()
    reader.refresh()
    reader(late, torch.tensor([3000]))
    assert reader.hits == 7 and len(reader) == 7 and len(list(writer.root.glob("shard-*.tar"))) == 2

    shards[0].write_bytes(b"not a tar" * 100)
    with pytest.raises(ValueError, match=shards[0].name):
        EncoderCache(tmp_path, encoder)


def test_long_fsdd_items_join_one_speakers_digits_and_test_speakers_are_never_trained_on(tmp_path):
    from speech_peft.data.fsdd_long import make_fsdd_long
    from speech_peft.data.manifest import read_manifest

    src = Path(__file__).resolve().parents[1] / "data" / "fsdd_subset"
    written = make_fsdd_long(src, tmp_path, test_speakers=("nicolas",), seconds=(5, 10), train_items=2, eval_items=2)
    train, val, test = (read_manifest(written[k]) for k in ("train", "val", "test"))
    assert {e.speaker for e in test} == {"nicolas"} and "nicolas" not in {e.speaker for e in train + val}
    assert len(read_manifest(written["test_10s"])) == 2 and len(train) == 5 * 2 * 2
    for entry in train + test:
        seconds = int(entry.task.removesuffix("s"))
        assert seconds - 1.5 < entry.duration <= seconds and all(w in WORDS for w in entry.text.split())
        assert len(entry.text.split()) >= seconds / 2  # a digit lasts under a second, pauses under 0.4 s
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "audio").iterdir()}
    make_fsdd_long(src, tmp_path, test_speakers=("nicolas",), seconds=(5, 10), train_items=2, eval_items=2)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "audio").iterdir()} == stamp


def _run_task(task, model, fsdd_folds, tmp_path, *extra):
    from speech_peft.commands.train import compose_config, run

    fold = fsdd_folds / "fold_theo"
    overrides = [f"task={task}", f"exp_dir={tmp_path}/{task}", f"encoder.name={model}", "data=fsdd_long",
                 f"data.train={fold}/train.jsonl", f"data.val={fold}/val.jsonl", f"data.test={fold}/test.jsonl",
                 "data.batch_size=4", "logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                 "trainer.enable_progress_bar=false", *extra]
    fit = run(compose_config(overrides), "fit")
    # as a user would pass it on the command line: the checkpoint's name must parse as an override
    cfg = compose_config([*overrides, f"ckpt_path={fit['best_checkpoint']}"])
    return fit, run(cfg, "test"), Path(cfg.exp_dir) / "export"


def _wer_of_transcribing(export: Path, manifest: Path, tmp_path: Path, *options: str) -> float:
    """Corpus WER of ``speech-peft transcribe --model EXPORT`` on the manifest, through the command line."""
    from speech_peft.cli import main
    from speech_peft.metrics.wer import score_files

    out = tmp_path / f"hyp_{export.parent.name}.tsv"
    assert main(["transcribe", str(manifest), "--model", str(export), "--out", str(out), *options]) == 0
    assert len(out.read_text().splitlines()) == len(manifest.read_text().splitlines())
    return score_files(str(manifest), str(out)).wer


def _transcribe_refused(export: Path, manifest: Path, *options: str) -> str:
    """The one-line error of ``speech-peft transcribe --model EXPORT`` given options that do not apply."""
    from cli_runner import speech_peft

    done = speech_peft("transcribe", manifest, "--model", export, *options)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_fit_test_and_transcribe_run_diffusion_asr_from_configs(whisper_with_tokenizer, fsdd_folds, tmp_path):
    _, test, export = _run_task("diffusion_asr", whisper_with_tokenizer, fsdd_folds, tmp_path, "task.max_length=8",
                                "task.xattn_heads=4", f"task.cache_dir={tmp_path}/cache", "task.tokens_per_second=4.0")
    info = json.loads((export / "export.json").read_text())
    assert info["kind"] == "diffusion_asr" and info["config"]["tokens_per_second"] == 4.0  # the config reached it
    assert any((tmp_path / "cache").rglob("shard-*.tar"))  # the epochs' states, flushed
    # the test score is what transcribing with the export scores (the task config's decoding options), in
    # batches of the same utterances: random re-masking draws per batch, so other batches give other draws
    manifest = fsdd_folds / "fold_theo" / "test.jsonl"
    assert test["test/wer"] == pytest.approx(_wer_of_transcribing(export, manifest, tmp_path, "--batch-size", "4"))
    _wer_of_transcribing(export, manifest, tmp_path, "--candidates", "2", "--rule", "mbr")
    refused = _transcribe_refused(export, manifest, "--compute-type", "int8", "--beam-size", "2")
    assert "is a diffusion_asr export: --beam-size 2, --compute-type int8 do not apply" in refused


def test_ar_baseline_fine_tunes_real_whisper_with_lora_and_scores_wer(fsdd_folds, tmp_path):
    fit, test, export = _run_task("whisper_ar", "whisper-tiny.en", fsdd_folds, tmp_path, "adapter=lora",
                                  "trainer.limit_val_batches=1")
    assert fit["trainable_params"] < 0.02 * fit["total_params"]
    state = torch.load(fit["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert state and all("lora_" in k for k in state)  # the checkpoint holds the adapter, not Whisper
    assert (export / "adapter" / "adapter.safetensors").is_file()
    manifest = fsdd_folds / "fold_theo" / "test.jsonl"
    assert test["test/wer"] == pytest.approx(_wer_of_transcribing(export, manifest, tmp_path))
    refused = _transcribe_refused(export, manifest, "--candidates", "2")
    assert "is a whisper_ar export: diffusion decoding options (--candidates" in refused


def test_asr_report_marks_the_target_per_bucket_and_writes_every_row_to_results_json(tmp_path):
    from speech_peft.reports.asr import BEST_MASK, MASK_CTC, write_asr_report

    def row(system, bucket, wer, **extra):
        return {"system": system, "bucket_s": bucket, "candidates": extra.pop("candidates", 1),
                "rule": extra.pop("rule", None), "wer": wer, "mean_utterance_wer": wer, "seconds_per_item": 0.5,
                **extra}

    design = {"training": "design", "oracle_wer": 0.01, "hit_rate": 1.0}
    stored = {}
    for bucket, base in ((30, 0.03), (5, 0.01)):
        stored[f"{bucket}s/ar_lora"] = [row("ar_lora", bucket, base, decoding="greedy")]
        stored[f"{bucket}s/design/K=1"] = [row("diffusion", bucket, base + 0.05, decoding=BEST_MASK, **design),
                                           row("diffusion_ctc", bucket, base + 0.015, decoding=MASK_CTC, **design)]
        stored[f"{bucket}s/design/K=4"] = [row("diffusion_ctc", bucket, base, decoding=MASK_CTC, candidates=4,
                                               rule="rover", **design)]
    stored["sentences/read_real/ar_zero_shot"] = [dict(row("ar_zero_shot", 0, 0.081, decoding="greedy"),
                                                       test_set="read_real", bucket_s=None)]
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps(stored))
    (tmp_path / "ar_lora").mkdir()
    (tmp_path / "ar_lora" / "fit_result.json").write_text(json.dumps(
        {"epoch_times_s": [40.0, 50.0], "trainable_params": 1234567, "monitor": "val/loss", "best_score": 0.25}))
    out = tmp_path / "recipe" / "RESULTS.md"
    text = write_asr_report(tmp_path, out, "bash run.sh").read_text()
    assert "| system | 5 s | 30 s |" in text
    assert "| AR + LoRA (greedy) | 1.0 (+0.0 ✓) | 3.0 (+0.0 ✓) |" in text
    assert f"| diffusion [design] {BEST_MASK} | 6.0 (+5.0) | 8.0 (+5.0) |" in text
    assert f"| diffusion_ctc [design] {MASK_CTC} | 2.5 (+1.5 ✓) | 4.5 (+1.5 ✓) |" in text
    assert f"| diffusion_ctc [design] {MASK_CTC}, K=4 rover | 1.0 / 1.0 / 100 | 3.0 / 1.0 / 100 |" in text
    assert "| AR + LoRA | 1,234,567 | 2 | 45.0 | val/loss 0.2500 |" in text
    assert "| system | read_real |" in text and "| AR zero-shot (greedy) | 8.1 (0.50) |" in text
    rows = json.loads((out.parent / "results.json").read_text())["rows"]
    assert len(rows) == 9 and {"system", "bucket_s", "candidates", "rule", "wer", "seconds_per_item"} <= set(rows[0])
    # the base model's report sits beside it and never overwrites its rows
    (tmp_path / "recipe" / "results.json").write_text("kept")
    base = write_asr_report(tmp_path, out.with_name("RESULTS_base.md"), "bash run.sh --model base", "whisper-base")
    assert base.read_text().startswith("# Long spoken-digit sequences (fsdd_long): diffusion-decoded ASR against "
                                       "autoregressive Whisper (whisper-base)")
    assert (out.parent / "results.json").read_text() == "kept"
    assert len(json.loads((out.parent / "results_base.json").read_text())["rows"]) == 9


def test_with_a_ctc_head_the_export_restores_it_and_mask_ctc_keeps_the_sure_tokens(whisper_with_tokenizer, tmp_path,
                                                                                     caplog):
    from speech_peft.decoders import DecodeOptions
    from speech_peft.decoders.mask_ctc import ctc_canvas
    torch.manual_seed(0)
    model = DiffusionASR(whisper_with_tokenizer, stage=2, max_length=12, xattn_heads=4, shift=True, ctc_weight=0.5,
                         ctc_width=16, ctc_layers=1, tokens_per_second=3.0,
                         decode={"init": "ctc", "schedule": [1.0, 0.5], "candidates": 2}).eval()
    model.export(tmp_path / "export")
    again = DiffusionASR.from_export(tmp_path / "export")
    assert again.decoder.config.shift and again.ctc is not None
    # the decoding it was trained with is the default; a caller's options override it
    assert again.hparams.decode == {"init": "ctc", "schedule": [1.0, 0.5], "candidates": 2}
    assert DiffusionASR.from_export(tmp_path / "export", {"candidates": 1}).hparams.decode["candidates"] == 1
    for ours, theirs in zip(model.ctc.state_dict().values(), again.ctc.state_dict().values()):
        assert torch.equal(ours, theirs)
    # A CTC hypothesis "one two three" whose "two" is unsure: the canvas keeps one and three, masks two.
    config = model.decoder.config
    model.ctc_hypotheses = lambda hidden, mask, unknown=False: [([11, 12, 13], [0.99, 0.5, 0.95], [0, 1, 2])]
    start, canvas, words = ctc_canvas(model.ctc_hypotheses(None, None), config, threshold=0.9)
    assert start.tolist() == [[*config.prefix, 11, config.mask_id, 13, config.pad_id]] and canvas.tolist() == [5]
    assert words.tolist() == [[-1, -1, 1, -1, -1]]  # the masked position re-decodes CTC word 1
    # A hypothesis longer than the decoder's positions is cut to them, and the user is told its end is lost.
    model.ctc_hypotheses = lambda hidden, mask, unknown=False: [(list(range(11, 31)), [0.99] * 20, list(range(20)))]
    with caplog.at_level(logging.WARNING, logger="speech_peft.decoders.mask_ctc"):
        long_start, _, _ = ctc_canvas(model.ctc_hypotheses(None, None), config, threshold=0.9)
    room = config.max_length - 1 - len(config.prefix)
    assert long_start.shape[-1] == config.max_length and long_start[0, -1] == config.pad_id
    assert f"exceeds the diffusion decoder's {room} text positions: its last {20 - room} tokens" in caplog.text
    model.ctc_hypotheses = lambda hidden, mask, unknown=False: [([11, 12, 13], [0.99, 0.5, 0.95], [0, 1, 2])]
    options = DecodeOptions(candidates=2, init="ctc", remask="progressive", schedule=(1.0,))
    decoded = model.decode_states(torch.zeros(1, 4, 32), torch.ones(1, 4, dtype=torch.bool), torch.tensor([8000]),
                                  options)[0]
    assert decoded.tokens[:, [1, 3, 4]].tolist() == [[11, 13, config.pad_id]] * 2
    assert (decoded.tokens != config.mask_id).all()
    plain = DiffusionASR(whisper_with_tokenizer, stage=1, max_length=8, xattn_heads=4)
    with pytest.raises(ValueError, match="CTC head"):
        plain.decode_states(torch.zeros(1, 4, 32), torch.ones(1, 4, dtype=torch.bool), torch.tensor([8000]), options)


def test_design_switches_train_and_bad_values_are_refused(whisper_with_tokenizer, fsdd_folds, tmp_path):
    torch.manual_seed(0)
    model = DiffusionASR(whisper_with_tokenizer, stage=2, max_length=8, xattn_heads=4, shift=True, antithetic=True,
                         loss_weighting="inverse_t", mask_range=(0.0, 1.0), ctc_weight=0.5, ctc_width=16, ctc_layers=1,
                         tokens_per_second=4.0, val_wer=True)
    head_before = {k: v.clone() for k, v in model.ctc.state_dict().items()}
    trainer = _trainer(tmp_path)
    trainer.fit(model, _data(fsdd_folds))
    assert {"val/wer", "val/ctc", "train/ctc"} <= set(trainer.logged_metrics)
    assert any(not torch.equal(v, model.ctc.state_dict()[k]) for k, v in head_before.items())
    assert model.lexicon == {"zero", "one", "two"}  # the words of the training transcripts (digits 0-2)
    model.export(tmp_path / "export")
    assert (tmp_path / "export" / "lexicon.txt").read_text().split() == ["one", "two", "zero"]
    assert DiffusionASR.from_export(tmp_path / "export").lexicon == {"zero", "one", "two"}
    with pytest.raises(ValueError, match="loss_weighting"):
        DiffusionASR(whisper_with_tokenizer, max_length=8, xattn_heads=4, loss_weighting="sum")
    with pytest.raises(ValueError, match="mask_range"):
        DiffusionASR(whisper_with_tokenizer, max_length=8, xattn_heads=4, mask_range=(0.9, 0.1))


def test_cross_attention_adapters_start_as_whispers_own_cross_attention(whisper_with_tokenizer):
    from speech_peft.encoders.whisper import load_whisper
    model = DiffusionASR(whisper_with_tokenizer, stage=1, max_length=8, xattn_heads=4)
    whisper_layer = load_whisper(whisper_with_tokenizer).model.model.decoder.layers[1]
    adapter = model.decoder.layers[1].adapters["xattn"]
    hidden, memory = torch.randn(1, 5, adapter.norm.normalized_shape[0]), torch.randn(1, 7, model.encoder.dim)
    with torch.no_grad():
        theirs = whisper_layer.encoder_attn(whisper_layer.encoder_attn_layer_norm(hidden), memory=memory)
        adapter.memory, adapter.memory_mask = memory, None
        ours = adapter(hidden, hidden) / torch.tanh(adapter.gate)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.tanh(adapter.gate).item() > 0.99
    random_start = DiffusionASR(whisper_with_tokenizer, stage=1, max_length=8, xattn_heads=4, xattn_init="random")
    assert random_start.decoder.layers[1].adapters["xattn"].gate.item() == 0.0


def test_a_resumed_stage_two_keeps_averaging_from_the_checkpointed_average(whisper_with_tokenizer, tmp_path):
    from speech_peft.tasks.common import load_checkpoint_weights

    model = DiffusionASR(whisper_with_tokenizer, stage=2, max_length=8, xattn_heads=4)
    model.on_train_batch_end(None, None, 0)
    with torch.no_grad():
        for p in model.average.module.parameters():
            p.add_(1.0)  # an average that no longer equals the live weights
    checkpoint: dict = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "stage2.ckpt")  # through the file, as a resumed run reads it
    resumed = DiffusionASR(whisper_with_tokenizer, stage=2, max_length=8, xattn_heads=4)
    load_checkpoint_weights(resumed, tmp_path / "stage2.ckpt")
    assert resumed.average is not None and int(resumed.average.n_averaged) == 1
    for mine, theirs in zip(resumed.average.module.parameters(), model.average.module.parameters()):
        assert torch.equal(mine, theirs)
    resumed.on_train_batch_end(None, None, 1)  # goes on averaging from the restored average
    assert int(resumed.average.n_averaged) == 2


def test_decoding_options_are_defined_once_the_task_config_and_the_flags_follow_them():
    """``DecodeOptions`` is the one definition: the task config's ``decode:`` block holds exactly its
    defaults, and ``speech-peft transcribe`` has one flag per option that sets it."""
    import argparse
    import dataclasses

    from omegaconf import OmegaConf

    from speech_peft.commands.train import CONF_DIR
    from speech_peft.decoding import DecodeOptions, add_arguments, given_options

    block = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "diffusion_asr.yaml").decode)
    defaults = dataclasses.asdict(DecodeOptions())
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in block.items()} == defaults
    parser = argparse.ArgumentParser()
    add_arguments(parser.add_argument_group("diffusion"))
    assert given_options(parser.parse_args([])) is None
    args = parser.parse_args(["--candidates", "2", "--schedule", "1.0", "0.5", "--rule", "mbr", "--hold-eos",
                              "--init", "ctc", "--ctc-threshold", "0.7", "--length", "12"])
    assert DecodeOptions(**given_options(args)) == DecodeOptions(
        candidates=2, schedule=(1.0, 0.5), rule="mbr", hold_eos=True, init="ctc", ctc_threshold=0.7, length=12)


def test_state_masking_zeroes_spans_of_a_clips_own_frames_and_never_touches_the_cached_states():
    from speech_peft.encoders.state_masking import StateMasking, mask_states

    hidden = torch.randn(2, 50, 16) + 5.0  # no value is zero before masking
    valid = torch.ones(2, 50, dtype=torch.bool)
    valid[1, 20:] = False  # the second clip is 20 frames long
    before = hidden.clone()
    masked = mask_states(hidden, valid, StateMasking(time_masks=3, max_time=0.2, feature_masks=2, max_features=4),
                         torch.Generator().manual_seed(0))
    assert torch.equal(hidden, before)
    zero = masked == 0
    assert zero.any() and torch.equal(masked[~zero], hidden[~zero])
    whole_frames = zero.all(-1)  # a time span covers every channel
    assert not whole_frames[1, 20 + 4:].any()  # spans start inside the clip (at most 20% of 20 frames wide)
    assert (zero.all(1).sum(-1) <= 2 * 4).all()  # at most two spans of at most 4 channels
    none = mask_states(hidden, valid, StateMasking(time_masks=0, feature_masks=0))
    assert torch.equal(none, hidden)


def test_state_masking_applies_in_training_only(whisper_with_tokenizer, fsdd_folds):
    """Validation scores the states as the encoder gave them: its loss is the same with masking or without."""
    from speech_peft.data.dataset import collate

    data = _data(fsdd_folds)
    batch = collate([data._dataset("train")[i] for i in range(2)])
    plain = DiffusionASR(whisper_with_tokenizer, max_length=8, xattn_heads=4)
    masked = DiffusionASR(whisper_with_tokenizer, max_length=8, xattn_heads=4,
                          state_masking={"time_masks": 2, "max_time": 0.5, "feature_masks": 2, "max_features": 200})
    masked.load_state_dict(plain.state_dict())
    plain.eval(), masked.eval()
    seed = 7
    assert masked._loss(batch, torch.Generator().manual_seed(seed))[0] == \
        plain._loss(batch, torch.Generator().manual_seed(seed))[0]
    masked.train()
    torch.manual_seed(seed)
    trained = masked._loss(batch)[0]
    plain.train()
    torch.manual_seed(seed)
    assert trained != plain._loss(batch)[0]


def test_the_digits_report_has_a_table_per_test_family_and_marks_diffusion_within_two_points_of_ar_lora(tmp_path):
    """digits_long: the new speaker-disjoint real test set (test_real) and FSDD's test speakers each get their
    own table; the bucket manifests' names say which family a row belongs to."""
    from speech_peft.evaluation.asr import MASK_CTC, test_set_of
    from speech_peft.reports.digits_asr import write_digits_report

    assert test_set_of("test_real_30s") == ("real_30s", "test_real", 30)
    assert test_set_of("test_5s") == ("5s", "test", 5) and test_set_of("test_real") is None

    def row(system, test_set, wer, **extra):
        _, family, bucket = test_set_of(f"test_{test_set}")
        return {"system": system, "test_set": test_set, "family": family, "bucket_s": bucket, "candidates": 1,
                "rule": None, "items": 12, "wer": wer, "seconds_per_item": 0.25, **extra}

    lora = {"training": "decoder LoRA", "decoding": MASK_CTC}
    stored = {"real_5s/ar_lora": [row("ar_lora", "real_5s", 0.10, decoding="greedy")],
              "real_5s/decoder LoRA/K=1": [row("diffusion_ctc", "real_5s", 0.115, **lora),
                                           row("ctc_greedy", "real_5s", 0.3, training="decoder LoRA")],
              "5s/ar_lora": [row("ar_lora", "5s", 0.02, decoding="greedy")],
              "5s/decoder LoRA/K=1": [row("diffusion_ctc", "5s", 0.09, **lora)],
              "real_5s/decoder LoRA, AR + LoRA encoder/K=1": [
                  row("diffusion_ctc", "real_5s", 0.105, training="decoder LoRA, AR + LoRA encoder", decoding=MASK_CTC)]}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps(stored))
    (tmp_path / "eval" / "decode_speed.md").write_text("| input | ratio |\n|---|---|\n| 30s | 9.9 |\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "speakers.tsv").write_text("source\tspeaker\tsplit\titems\nfsdd\tjackson\ttest\t8\n"
                                                    "sc\ta\ttest_real\t3\nsc\tb\ttest_real\t0\nso\tc\ttest_real\t2\n")
    out = write_digits_report(tmp_path, tmp_path / "RESULTS.md", "bash run.sh")
    text = out.read_text()
    real, fsdd = text.index("## `test_real`"), text.index("## `test`: FSDD")
    assert real < fsdd and "2 speakers (items per bucket: 5 s: 12)" in text[real:fsdd]
    assert f"| diffusion_ctc [decoder LoRA] {MASK_CTC} | 11.5 (+1.5 ✓) |" in text[real:fsdd]
    assert "| CTC head alone (greedy) [decoder LoRA] | 30.0 (+20.0) |" in text[real:fsdd]
    ar_encoder = text.index(f"| diffusion_ctc [decoder LoRA, AR + LoRA encoder] {MASK_CTC} | 10.5 (+0.5 ✓) |")
    assert real < ar_encoder < text.index(f"| diffusion_ctc [decoder LoRA] {MASK_CTC} | 11.5")
    assert f"| diffusion_ctc [decoder LoRA] {MASK_CTC} | 9.0 (+7.0) |" in text[fsdd:]
    assert "| 30s | 9.9 |" in text and "Regenerate: `bash run.sh`" in text
    assert len(json.loads((tmp_path / "results.json").read_text())["rows"]) == 6
