"""Adapters save alone (safetensors, small), reload exactly, refuse another base, and trade with PEFT."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from speech_peft.adapters import (AdapterMismatchError, LoRAConfig, ParallelAdapterConfig, PromptTuningConfig,
                                  export_peft_lora, import_peft_lora, load_adapter, save_adapter)
from speech_peft.adapters import add_adapter
from tiny_models import tiny_whisper_encoder, whisper_input


def _trained(model, config, name="default"):
    add_adapter(model, config, name)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("config", [LoRAConfig(r=4), LoRAConfig(r=2, init="pissa"),
                                    ParallelAdapterConfig(bottleneck_dim=4), PromptTuningConfig(num_tokens=2)],
                         ids=["lora", "pissa", "parallel", "prompt"])
def test_saved_adapter_reloads_onto_a_fresh_base_with_identical_outputs(tmp_path, config):
    x = whisper_input()
    model = _trained(tiny_whisper_encoder(), copy.deepcopy(config))
    expected = model(x).last_hidden_state
    save_adapter(model, tmp_path / "adapter", base_model_name="tiny-test")

    fresh = tiny_whisper_encoder()
    report = load_adapter(fresh, tmp_path / "adapter")
    assert report.method == config.method
    torch.testing.assert_close(fresh(x).last_hidden_state, expected, rtol=0, atol=0)


def test_saved_file_holds_only_adapter_tensors(tmp_path):
    model = _trained(tiny_whisper_encoder(), LoRAConfig(r=4))
    save_adapter(model, tmp_path)
    tensors = load_file(tmp_path / "adapter.safetensors")
    adapter_params = sum(p.numel() for n, p in model.named_parameters() if ".adapters." in n)
    assert sum(t.numel() for t in tensors.values()) == adapter_params
    assert all("lora_" in k for k in tensors)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["method"] == "lora" and manifest["speech_peft_version"]
    assert set(manifest["base_fingerprint"]) == {t["write"] for t in manifest["targets"]}


def test_adapter_saved_for_another_base_model_is_refused_naming_the_module(tmp_path):
    save_adapter(_trained(tiny_whisper_encoder(seed=0), LoRAConfig(r=4)), tmp_path, base_model_name="tiny-a")
    with pytest.raises(AdapterMismatchError, match=r"tiny-a.*layers\.0\.self_attn\.q_proj.*differ"):
        load_adapter(tiny_whisper_encoder(seed=1), tmp_path)


def test_adapter_saved_for_another_width_is_refused_naming_the_shapes(tmp_path):
    import dataclasses

    from tiny_models import tiny_whisper_config
    save_adapter(_trained(tiny_whisper_encoder(), LoRAConfig(r=4)), tmp_path)
    wider = dataclasses.replace(tiny_whisper_config(), d_model=64)
    with pytest.raises(AdapterMismatchError, match="shapes"):
        load_adapter(tiny_whisper_encoder(config=wider), tmp_path)


def test_loading_a_directory_that_is_not_an_adapter_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter.safetensors is missing"):
        load_adapter(tiny_whisper_encoder(), tmp_path)


peft = pytest.importorskip("peft")


def test_our_lora_loads_into_peft_with_the_same_outputs(tmp_path):
    x = whisper_input()
    ours = _trained(tiny_whisper_encoder(), LoRAConfig(r=4, alpha=8, target_roles=["attn.q", "attn.v", "ffn.up"]))
    expected = ours(x).last_hidden_state
    export_peft_lora(ours, tmp_path)
    wrapped = peft.PeftModel.from_pretrained(tiny_whisper_encoder(), tmp_path)
    torch.testing.assert_close(wrapped(x).last_hidden_state, expected, atol=1e-5, rtol=0)


def test_pissa_exports_to_peft_as_an_exact_rank_2r_lora(tmp_path):
    x = whisper_input()
    ours = _trained(tiny_whisper_encoder(), LoRAConfig(r=2, init="pissa"))
    expected = ours(x).last_hidden_state
    export_peft_lora(ours, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == 4
    wrapped = peft.PeftModel.from_pretrained(tiny_whisper_encoder(), tmp_path)
    torch.testing.assert_close(wrapped(x).last_hidden_state, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_peft_lora_imports_with_the_same_outputs(tmp_path, use_rslora):
    x = whisper_input()
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"], use_rslora=use_rslora)
    theirs = peft.get_peft_model(tiny_whisper_encoder(), config)
    with torch.no_grad():
        for n, p in theirs.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn_like(p))
    expected = theirs(x).last_hidden_state
    theirs.save_pretrained(tmp_path)
    ours = tiny_whisper_encoder()
    report = import_peft_lora(ours, tmp_path)
    assert len(report.targets) == 6
    torch.testing.assert_close(ours(x).last_hidden_state, expected, atol=1e-5, rtol=0)
