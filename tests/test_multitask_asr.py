"""Multi-task ASR by adapter fusion on the real frozen Whisper tiny.en: training the fusion leaves the
single-task adapters and the base bit-for-bit unchanged, routing is per utterance in a batch that
mixes tasks (greedy and beam search alike), the export transcribes alone, and oracle routing refuses
to run without task IDs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speech_peft.adapters import ParallelAdapterConfig, add_adapter, adapter_parameters, save_adapter
from speech_peft.data.audio import load_audio
from speech_peft.data.dataset import Batch
from speech_peft.encoders.whisper import load_whisper
from speech_peft.tasks.multitask_asr import WhisperAdapterFusion

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"
TASKS = ["read", "phone"]


@pytest.fixture(scope="module")
def task_adapters(tmp_path_factory) -> dict[str, str]:
    """Two single-task parallel adapters on the encoder, as if trained (small random weights)."""
    import copy

    model = copy.deepcopy(load_whisper("whisper-tiny.en").model)
    root = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    for task in TASKS:
        add_adapter(model, ParallelAdapterConfig(bottleneck_dim=16, stack="*encoder*", scale=1.0), task)
        with torch.no_grad():
            for p in adapter_parameters(model, task):
                p.normal_(0, 0.02)
        save_adapter(model, root / task, name=task, base_model_name="whisper-tiny.en")
    return {task: str(root / task) for task in TASKS}


def _batch() -> Batch:
    waves = [load_audio(DATA / f"{stem}.wav") for stem in ("spk1_snt1", "spk2_snt2")]
    lengths = torch.tensor([len(w) for w in waves])
    padded = torch.zeros(2, int(lengths.max()))
    for i, w in enumerate(waves):
        padded[i, : len(w)] = w
    texts = ["The child almost hurt the small dog.", "x"]
    return Batch(["a", "b"], padded, lengths, texts, [None, None], ["phone", "read"])


def test_training_the_router_changes_neither_the_single_task_adapters_nor_whisper(task_adapters):
    module = WhisperAdapterFusion(task_adapters, fusion={"kind": "router"}).train()
    before = {k: v.clone() for k, v in module.model.state_dict().items() if ".combiners." not in k}
    optimiser = module.configure_optimizers()
    for _ in range(2):
        loss = module.training_loss(_batch())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = module.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in after.items() if ".combiners." in k)
    assert 0 < module.trainable_fraction() < 0.01


def test_joint_training_updates_copies_of_the_adapters_and_keeps_the_originals(task_adapters):
    module = WhisperAdapterFusion(task_adapters, fusion={"kind": "task"}, algorithm="joint").train()
    originals = {t: [p.clone() for p in adapter_parameters(module.model, t)] for t in TASKS}
    optimiser = module.configure_optimizers()
    loss = module.training_loss(_batch())
    loss.backward()
    optimiser.step()
    for task in TASKS:
        assert all(torch.equal(a, b) for a, b in zip(adapter_parameters(module.model, task), originals[task]))
        copies = adapter_parameters(module.model, f"{task}_joint")
        assert any(not torch.equal(a, b) for a, b in zip(copies, originals[task]))


def test_a_mixed_task_batch_transcribes_each_utterance_as_it_would_alone_and_the_export_reloads(
        task_adapters, tmp_path):
    module = WhisperAdapterFusion(task_adapters, fusion={"kind": "router"}).eval()
    with torch.no_grad():
        for path, combiner in module.model.named_modules():
            if path.endswith("combiners.fusion"):
                for p in combiner.parameters():
                    p.normal_(0, 0.5)
    batch = _batch()
    for beam in (1, 3):
        together = module.transcribe(batch.waveforms, batch.lengths, beam_size=beam)
        weights_together = {k: v.clone() for k, v in module.routing_weights().items()}
        for i in range(2):
            n = int(batch.lengths[i])
            alone = module.transcribe(batch.waveforms[i:i + 1, :n], batch.lengths[i:i + 1], beam_size=beam)
            assert alone[0] == together[i]
            for key, value in module.routing_weights().items():
                torch.testing.assert_close(value[0], weights_together[key][i], atol=1e-4, rtol=1e-4)
    assert "child almost hurt the small dog" in together[0].lower()
    module.export(tmp_path / "export")
    reloaded = WhisperAdapterFusion.from_export(tmp_path / "export")
    assert reloaded.transcribe(batch.waveforms, batch.lengths) == module.transcribe(batch.waveforms, batch.lengths)


def test_oracle_routing_needs_the_task_of_every_utterance(task_adapters):
    module = WhisperAdapterFusion(task_adapters, fusion={"kind": "oracle"}).eval()
    batch = _batch()
    with pytest.raises(ValueError, match="oracle routing needs each utterance's task"):
        module.transcribe(batch.waveforms, batch.lengths)
    assert len(module.transcribe(batch.waveforms, batch.lengths, tasks=batch.tasks)) == 2


def test_speech_peft_transcribe_runs_a_fusion_export_with_no_other_argument(task_adapters, tmp_path):
    from cli_runner import speech_peft

    WhisperAdapterFusion(task_adapters, fusion={"kind": "router"}).export(tmp_path / "fusion")
    done = speech_peft("transcribe", DATA / "spk1_snt1.wav", "--model", tmp_path / "fusion")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "child almost hurt the small dog" in done.stdout.lower()


def test_the_report_shows_harm_set_by_set_so_a_looping_frozen_set_cannot_carry_the_mean(tmp_path):
    """Per set: the mean relative change from the frozen model and the real-speech sets made worse. A system that
    fixes the frozen model's looping on one set and harms real speech on another has the lower mean WER, but its
    harm is counted and its mean change is not carried by the looping set."""
    import json

    from speech_peft.reports.multitask import best_fusion, write_multitask_report

    weights = {"model.encoder.layers.0.fc2": [0.7, 0.1, 0.1, 0.1, 0.0],
               "model.encoder.layers.1.fc2": [0.4, 0.2, 0.2, 0.1, 0.1]}  # the last: the base expert
    sets = {"read_real": "read", "read_tts": "read", "digits": "digits"}

    def system(wer, kind="fusion", export=None, **extra):
        return {"wer": dict(zip(sets, wer)), "mean_wer": round(sum(wer) / 3, 2), "trained_fraction": 0.02,
                "adapters_per_site": 4, "kind": kind, "export": export, "weights": {}, **extra}
    results = {"test_sets": sets, "systems": {
        "frozen base model": system([10.0, 20.0, 300.0], "baseline"),
        "fusion: router_joint": system([12.0, 10.0, 5.0], export="router_joint"),
        "fusion: router_joint_base": system([10.0, 16.0, 150.0], export="router_joint_base",
                                            weights={s: weights for s in sets})}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "report" / "RESULTS.md"
    out.parent.mkdir()
    text = write_multitask_report(tmp_path, out, "bash run.sh").read_text()
    # (12-10)/10 = +20%, (10-20)/20 = -50%, (5-300)/300 = -98.3%: mean -42.8%; read_real worse by 2 points
    assert "| fusion: router_joint | 12.0 | 10.0 | 5.0 | 9.00 | **-42.8%** | 1: read_real | 2.00 | 4 |" in text
    assert "| fusion: router_joint_base | 10.0 | 16.0 | 150.0 | 58.67 | **-23.3%** | 0 | 2.00 | 4 |" in text
    assert "real sets worse (of 2)" in text
    assert (out.parent / "fusion_weights_router_joint_base.png").stat().st_size > 1000
    stored = json.loads((out.parent / "results.json").read_text())["systems"]
    assert stored["fusion: router_joint"]["worse_real_sets"] == ["read_real"]
    assert best_fusion(tmp_path).name == "router_joint_base"  # no real set harmed beats the lower mean


def test_full_fine_tuning_trains_every_weight_and_its_export_restores_them(tmp_path):
    from speech_peft.tasks.asr import WhisperARFineTune

    module = WhisperARFineTune(adapter={"method": "full"})
    assert all(p.requires_grad for p in module.model.parameters())
    with torch.no_grad():
        module.model.model.encoder.layers[0].fc1.weight.add_(0.01)
    module.export(tmp_path / "full")
    reloaded = WhisperARFineTune.from_export(tmp_path / "full")
    torch.testing.assert_close(reloaded.model.model.encoder.layers[0].fc1.weight,
                               module.model.model.encoder.layers[0].fc1.weight)
    assert reloaded.model.proj_out.weight is reloaded.model.model.decoder.embed_tokens.weight
    assert not any(p.requires_grad for p in reloaded.model.parameters())


def test_a_soft_router_export_runs_hard_top1_at_inference_when_asked(task_adapters, tmp_path):
    module = WhisperAdapterFusion(task_adapters, fusion={"kind": "router"})
    with torch.no_grad():
        for path, combiner in module.model.named_modules():
            if path.endswith("combiners.fusion"):
                for p in combiner.parameters():
                    p.normal_(0, 0.5)
    module.export(tmp_path / "router")
    hard = WhisperAdapterFusion.from_export(tmp_path / "router", hard=True)
    batch = _batch()
    hard.transcribe(batch.waveforms, batch.lengths)
    for weights in hard.routing_weights().values():
        assert set(weights.unique().tolist()) <= {0.0, 1.0} and torch.equal(weights.sum(-1), torch.ones(2))


def test_the_shipped_adapter_fusion_transcribes_without_task_ids():
    from speech_peft.jobs.transcribe import transcribe_entries
    from speech_peft.data.builders import from_folder

    shipped = Path(__file__).resolve().parents[1] / "speech_peft" / "pretrained" / "whisper-tiny.en-adapterfusion"
    assert (shipped / "export.json").is_file(), "the multi-task recipe's best fusion ships with the package"
    entries = [e for e in from_folder(DATA) if e.id in ("spk1_snt1", "spk2_snt1")]
    hyps = transcribe_entries(entries, model=str(shipped), progress=False)
    assert "child almost hurt the small dog" in hyps["spk1_snt1"].lower()


def test_a_system_is_rescored_only_when_its_files_or_the_test_sets_change(tmp_path):
    from speech_peft.data.manifest import Entry
    from speech_peft.evaluation.multitask import _identity

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "fusion.safetensors").write_bytes(b"a")
    tests = {"read_real": [Entry("u1", "u1.wav", 1.0, 16000, text="x", task="read")]}
    first = _identity([str(tmp_path / "export")], tests)
    assert _identity([str(tmp_path / "export")], tests) == first
    (tmp_path / "export" / "fusion.safetensors").write_bytes(b"b")
    assert _identity([str(tmp_path / "export")], tests) != first
    assert _identity([str(tmp_path / "export")], {"read_real": tests["read_real"] * 2}) != \
        _identity([str(tmp_path / "export")], tests)


def test_training_the_task_router_on_a_manifest_without_tasks_names_the_missing_field(task_adapters):
    module = WhisperAdapterFusion(task_adapters, fusion={"kind": "task"}).train()
    batch = _batch()
    batch.tasks = [None, None]
    with pytest.raises(ValueError, match="task routing needs each utterance's task \\(the manifest's 'task' field\\)"):
        module.training_loss(batch)


def test_an_export_whose_combiners_do_not_match_its_config_is_a_clear_error(task_adapters, tmp_path):
    import json

    WhisperAdapterFusion(task_adapters, fusion={"kind": "router"}).export(tmp_path / "fusion")
    info = json.loads((tmp_path / "fusion" / "export.json").read_text())
    info["config"]["fusion"]["kind"] = "attention"  # router weights under an attention config
    (tmp_path / "fusion" / "export.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="does not hold the combiners of the attention fusion"):
        WhisperAdapterFusion.from_export(tmp_path / "fusion")


def test_cached_encoder_states_give_the_ar_loss_of_the_running_encoder_and_spare_it_the_second_time(tmp_path):
    from speech_peft.tasks.asr import WhisperARFineTune

    decoder_only = {"method": "lora", "r": 4, "target_roles": ["attn.q", "attn.v"], "stack": "*decoder*"}
    plain = WhisperARFineTune(adapter=decoder_only)
    cached = WhisperARFineTune(adapter=decoder_only, cache_dir=str(tmp_path / "states"))
    cached.load_state_dict(plain.state_dict())
    batch = _batch()
    torch.testing.assert_close(cached.training_loss(batch), plain.training_loss(batch), rtol=1e-4, atol=1e-5)
    assert (cached.cache.hits, cached.cache.misses) == (0, len(batch))
    cached.training_loss(batch)
    assert (cached.cache.hits, cached.cache.misses) == (len(batch), len(batch))
    with pytest.raises(ValueError, match="trains the encoder"):
        WhisperARFineTune(adapter={"method": "lora", "r": 4, "target_roles": ["attn.q"]}, cache_dir=str(tmp_path / "x"))


def test_a_killed_evaluation_keeps_every_system_it_had_scored(tmp_path, monkeypatch):
    """results.json is written as each system is scored: a run stopped by the next one loses nothing before it."""
    import json

    import numpy as np
    import soundfile as sf

    from speech_peft.data.manifest import Entry, write_manifest
    from speech_peft.evaluation import multitask

    sf.write(tmp_path / "u1.wav", np.zeros(8000, dtype=np.float32), 16000)
    write_manifest([Entry("u1", str(tmp_path / "u1.wav"), 0.5, 16000, text="one two", task="read")],
                   tmp_path / "tasks" / "test_read_real.jsonl", relative=False)

    def broken():
        raise RuntimeError("killed")
    info = {"kind": "baseline", "adapters_per_site": 0, "made_from": []}
    monkeypatch.setattr(multitask, "_systems", lambda exp, name: {
        "frozen base model": (lambda: ((lambda batch: ["one two"]), None), info), "next": (broken, info)})
    with pytest.raises(RuntimeError, match="killed"):
        multitask.evaluate_multitask(tmp_path)
    stored = json.loads((tmp_path / "results.json").read_text())["systems"]
    assert list(stored) == ["frozen base model"] and stored["frozen base model"]["wer"] == {"read_real": 0.0}
