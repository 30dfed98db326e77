"""The adapter family, part 1: each method's defining property (sparse adapters, MoSA, low-bit storage)."""
from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from speech_peft.adapters import (MoSAConfig, ParallelAdapterConfig, SparseAdapterConfig, add_adapter, load_adapter,
                                  merge_mosa, save_adapter, snip_prune)
from speech_peft.adapters.injection import adapter_modules, records
from speech_peft.adapters.storage import dequantise, pack, quantise, unpack
from tiny_models import tiny_whisper_encoder, whisper_input


def _train(model, steps: int = 3, lr: float = 0.05) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    x = whisper_input()
    target = torch.randn_like(model(x).last_hidden_state)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x).last_hidden_state, target).backward()
        opt.step()


# --- SparseAdapter -------------------------------------------------------------------------------------

def test_a_sparse_adapter_keeps_its_mask_through_training_and_saves_only_the_kept_weights(tmp_path):
    model = tiny_whisper_encoder()
    add_adapter(model, SparseAdapterConfig(bottleneck_dim=16, sparsity=0.6, saliency="random"))
    _train(model)
    for module in adapter_modules(model, "default").values():
        for weight, mask in ((module.down.weight, module.down_mask), (module.up.weight, module.up_mask)):
            assert abs(mask.float().mean().item() - 0.4) < 0.02
            assert torch.all(weight[~mask] == 0) and torch.any(weight[mask] != 0)
    save_adapter(model, tmp_path / "sparse")
    dense = tiny_whisper_encoder()
    add_adapter(dense, ParallelAdapterConfig(bottleneck_dim=16))
    _train(dense)
    save_adapter(dense, tmp_path / "dense")
    size = lambda d: os.path.getsize(tmp_path / d / "adapter.safetensors") - _header(tmp_path / d)  # noqa: E731
    assert size("sparse") < 0.55 * size("dense")  # 40% of the values plus a bit per weight for each mask
    again = tiny_whisper_encoder()
    load_adapter(again, tmp_path / "sparse")
    x = whisper_input()
    model.eval(), again.eval()
    torch.testing.assert_close(again(x).last_hidden_state, model(x).last_hidden_state, rtol=0, atol=0)


def test_snip_keeps_the_weights_whose_gradient_times_value_is_largest():
    model = tiny_whisper_encoder()
    add_adapter(model, SparseAdapterConfig(bottleneck_dim=8, sparsity=0.5, saliency="snip"))
    x = whisper_input()
    target = torch.randn_like(model.eval()(x).last_hidden_state)
    with pytest.raises(RuntimeError, match="pruned before training"):
        model.train()(x)
    model.eval()
    loss_of = lambda batch: nn.functional.mse_loss(model(batch).last_hidden_state, target)  # noqa: E731
    module = next(iter(adapter_modules(model, "default").values()))
    weights = [module.down.weight, module.up.weight]
    grads = torch.autograd.grad(loss_of(x), weights)
    expected = (grads[1].abs().flatten().topk(grads[1].numel() // 2).indices)
    assert snip_prune(model, [x], loss_of, steps=1) == len(adapter_modules(model, "default"))
    assert torch.equal(module.up_mask.flatten().nonzero().squeeze(1).sort().values, expected.sort().values)
    assert snip_prune(model, [x], loss_of) == 0  # pruned once, never again


def test_large_sparse_keeps_as_many_weights_as_the_dense_adapter():
    dense, large = SparseAdapterConfig(bottleneck_dim=None, reduction_factor=4), \
        SparseAdapterConfig(bottleneck_dim=None, reduction_factor=4, sparsity=0.6, large=True, saliency="random")
    assert large.hidden(64) == round(dense.hidden(64) / 0.4)
    model = tiny_whisper_encoder()
    add_adapter(model, large)
    kept = sum(int(m.down_mask.sum() + m.up_mask.sum()) for m in adapter_modules(model, "default").values())
    width = model.config.d_model
    assert abs(kept - 2 * width * dense.hidden(width) * len(adapter_modules(model, "default"))) <= 8


# --- MoSA ----------------------------------------------------------------------------------------------

def test_mosa_sub_adapters_partition_the_adapter_and_a_step_trains_only_the_chosen_ones():
    model = tiny_whisper_encoder()
    add_adapter(model, MoSAConfig(bottleneck_dim=8, modules=4, active=0.5))
    module = next(iter(adapter_modules(model, "default").values()))
    owners = torch.cat([module.down_owner.flatten(), module.up_owner.flatten()])
    assert set(owners.tolist()) == {0, 1, 2, 3}  # every weight belongs to exactly one sub-adapter
    with torch.no_grad():
        module.up.weight.normal_()
    before = module.down.weight.detach().clone()
    torch.manual_seed(3)
    chosen = torch.randperm(4)[:2]
    torch.manual_seed(3)
    opt = torch.optim.SGD([module.down.weight], lr=0.1)
    model.train()
    nn.functional.mse_loss(model(whisper_input()).last_hidden_state, torch.zeros(1)).backward()
    opt.step()
    changed = module.down.weight != before
    down_mask, _ = module.sub_adapter_masks(chosen)
    assert changed.any() and not (changed & ~down_mask).any()


@pytest.mark.parametrize("hierarchical", [False, True])
def test_merged_mosa_adapter_computes_exactly_what_all_its_sub_adapters_compute(hierarchical, tmp_path):
    model = tiny_whisper_encoder()
    add_adapter(model, MoSAConfig(bottleneck_dim=8, modules=4, active=0.5, hierarchical=hierarchical))
    _train(model)
    model.eval()
    x = whisper_input()
    before = model(x).last_hidden_state
    merge_mosa(model, "default")
    assert records(model)["default"].config.method == "parallel"
    torch.testing.assert_close(model(x).last_hidden_state, before, rtol=0, atol=0)
    save_adapter(model, tmp_path / "merged")
    again = tiny_whisper_encoder()
    load_adapter(again, tmp_path / "merged")
    torch.testing.assert_close(again.eval()(x).last_hidden_state, before, rtol=0, atol=0)


# --- low-bit storage -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_packing_round_trips_every_code(bits):
    codes = torch.randint(0, 2 ** bits, (1001,), dtype=torch.uint8)
    packed = pack(codes, bits)
    assert len(packed) == -(-1001 * bits // 8) and torch.equal(unpack(packed, bits, 1001), codes)


def test_the_one_bit_scale_is_the_error_minimising_one():
    w = torch.randn(4096)
    codes, scales = quantise(w, 1, 256)
    best = ((dequantise(codes, scales, 1, 256, [4096]) - w) ** 2).sum()
    for factor in (0.8, 0.9, 1.1, 1.25):
        other = ((dequantise(codes, scales * factor, 1, 256, [4096]) - w) ** 2).sum()
        assert best < other


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_low_bit_storage_takes_bits_per_weight_plus_one_scale_per_group(bits):
    from speech_peft.adapters.storage import encode

    tensors = {"down": torch.randn(24, 384), "up": torch.randn(384, 24), "up_bias": torch.randn(384),
               "small": torch.randn(24)}
    stored, layout = encode(tensors, bits, group=256)
    count = 2 * 24 * 384 + 384
    low = sum(v.numel() * v.element_size() for k, v in stored.items() if k != "small")
    assert low == sum(-(-n * bits // 8) + 2 * -(-n // 256) for n in (24 * 384, 24 * 384, 384))
    assert layout["small"]["kind"] == "dense" and count * 4 / low > 32 / bits * 0.8


@pytest.mark.parametrize("bits,tolerance", [(1, 0.65), (2, 0.4), (4, 0.12), (8, 0.01)])
def test_a_low_bit_adapter_reloads_within_the_error_its_bit_count_allows(bits, tolerance, tmp_path):
    model = tiny_whisper_encoder()
    add_adapter(model, ParallelAdapterConfig(bottleneck_dim=64))
    with torch.no_grad():
        for module in adapter_modules(model, "default").values():
            for p in module.parameters():
                p.normal_(0, 0.05)
    save_adapter(model, tmp_path / "low", bits=bits)
    again = tiny_whisper_encoder()
    load_adapter(again, tmp_path / "low")
    for path, module in adapter_modules(model, "default").items():
        for key, value in module.state_dict().items():
            restored = adapter_modules(again, "default")[path].state_dict()[key]
            relative = ((restored - value).norm() / value.norm()).item()
            assert relative <= tolerance, (key, relative)


def _header(directory) -> int:
    import struct

    with open(directory / "adapter.safetensors", "rb") as handle:
        return 8 + struct.unpack("<Q", handle.read(8))[0]


def test_a_saved_adapter_keeps_its_bits_in_the_manifest_and_plain_files_still_load(tmp_path):
    import json

    model = tiny_whisper_encoder()
    add_adapter(model, ParallelAdapterConfig(bottleneck_dim=64))
    save_adapter(model, tmp_path / "one_bit", bits=1)
    assert json.loads((tmp_path / "one_bit" / "manifest.json").read_text())["storage_bits"] == 1
    with pytest.raises(ValueError, match="3-bit storage"):
        save_adapter(copy.deepcopy(model), tmp_path / "three", bits=3)


# --- merging -------------------------------------------------------------------------------------------

def _trained(config, seed: int, tmp_path, name: str):
    torch.manual_seed(seed)
    model = tiny_whisper_encoder()
    add_adapter(model, config)
    with torch.no_grad():
        for module in adapter_modules(model, "default").values():
            for p in module.parameters():
                p.normal_(0, 0.1)
    return model, save_adapter(model, tmp_path / name)


def _outputs(directory, x):
    model = tiny_whisper_encoder()
    load_adapter(model, directory)
    return model.eval()(x).last_hidden_state


@pytest.mark.parametrize("method", ["average", "task_arithmetic", "ties", "dare", "mera"])
@pytest.mark.parametrize("kind", ["parallel", "lora"])
def test_merging_an_adapter_with_itself_returns_it(method, kind, tmp_path):
    from speech_peft.adapters import LoRAConfig
    from speech_peft.adapters.merging import merge_adapters

    config = ParallelAdapterConfig(bottleneck_dim=8) if kind == "parallel" else LoRAConfig(r=4)
    model, saved = _trained(config, 0, tmp_path, "a")
    options = {"ties": {"density": 1.0}, "dare": {"drop": 0.0}, "task_arithmetic": {"weights": [0.5, 0.5]}}
    merged = merge_adapters([saved, saved], tmp_path / "merged", method, **options.get(method, {}))
    x = whisper_input()
    torch.testing.assert_close(_outputs(merged, x), _outputs(saved, x), rtol=1e-4, atol=1e-5)


def test_mera_alignment_recovers_a_known_permutation_of_the_bottleneck_units(tmp_path):
    from speech_peft.adapters.merging import align_units, merge_adapters, permute_units
    from speech_peft.adapters.io import read_tensors, write_adapter_files, read_manifest
    import json

    _, saved = _trained(ParallelAdapterConfig(bottleneck_dim=16), 0, tmp_path, "a")
    tensors = read_tensors(saved / "adapter.safetensors")
    order = torch.randperm(16, generator=torch.Generator().manual_seed(5))
    shuffled = {}
    for path in {k.split(".inner.")[0] for k in tensors}:
        inner = {k.split(".inner.")[1]: v for k, v in tensors.items() if k.startswith(path + ".inner.")}
        recovered = align_units(inner, permute_units(inner, order))
        assert torch.equal(order[recovered], torch.arange(16))  # the permutation undone exactly
        activity = torch.randn(200, 16, generator=torch.Generator().manual_seed(1))  # units' outputs on 200 tokens
        by_activity = align_units(inner, permute_units(inner, order), activity, activity[:, order])
        assert torch.equal(order[by_activity], torch.arange(16))
        shuffled.update({f"{path}.inner.{k}": v for k, v in permute_units(inner, order).items()})
    shuffled.update({k: v for k, v in tensors.items() if ".inner." not in k})
    manifest = read_manifest(saved)
    other = write_adapter_files(tmp_path / "b", shuffled, json.loads((saved / "adapter_config.json").read_text()),
                                {k: manifest[k] for k in ("name", "method", "targets", "base_model", "base_fingerprint")})
    x = whisper_input()
    torch.testing.assert_close(_outputs(other, x), _outputs(saved, x), rtol=1e-5, atol=1e-6)  # same function
    mera = merge_adapters([saved, other], tmp_path / "mera", "mera")
    plain = merge_adapters([saved, other], tmp_path / "plain", "average")
    torch.testing.assert_close(_outputs(mera, x), _outputs(saved, x), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(_outputs(plain, x), _outputs(saved, x), atol=1e-4)  # averaging unaligned units


def test_adapters_of_different_methods_or_places_are_refused(tmp_path):
    from speech_peft.adapters import LoRAConfig
    from speech_peft.adapters.merging import merge_adapters

    _, a = _trained(ParallelAdapterConfig(bottleneck_dim=8), 0, tmp_path, "a")
    _, b = _trained(LoRAConfig(r=4), 0, tmp_path, "b")
    with pytest.raises(ValueError, match="same method and places"):
        merge_adapters([a, b], tmp_path / "m")


def test_the_family_tables_replace_their_own_section_and_leave_the_main_table_alone(tmp_path):
    from speech_peft.reports.adapter_family import BEGIN, END, write_family_report

    out = tmp_path / "RESULTS.md"
    out.write_text("# main\n\n| method | acc |\n|---|---|\n| lora | 96 |\n")
    result = {"methods": [{"method": "sparse", "folds": 6, "acc_mean": 0.95, "acc_std": 0.02, "trainable": 10,
                           "total": 1000, "adapter_bytes": 2048, "relative_time": 1.01}],
              "storage": [{"fold": "george", "float32": 0.9, "1-bit": 0.91, "bytes": {"32": 4096, "1": 256}}],
              "merging": {"fold": "nicolas", "inputs": [0.9, 0.92], "ensemble": 0.93, "average": 0.5,
                          "task_arithmetic": 0.5, "ties": 0.6, "dare": 0.4, "mera": 0.91}}
    write_family_report(tmp_path, out, result)
    write_family_report(tmp_path, out, result)  # a rerun replaces the section instead of adding another
    text = out.read_text()
    assert text.startswith("# main") and "| lora | 96 |" in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "| sparse | 95.00 ± 2.00 | 6 | 1.000 | 2 KiB | 1.01x |" in text and "| 90.0 / 92.0 | 93.0 |" in text


def test_each_family_section_is_replaced_in_place_and_the_others_are_kept(tmp_path):
    from speech_peft.reports.adapter_family import markers, write_family_report

    out = tmp_path / "RESULTS.md"
    out.write_text("# main\n")
    row = {"method": "sparse", "folds": 6, "acc_mean": 0.95, "acc_std": 0.02, "trainable": 10, "total": 1000,
           "adapter_bytes": 2048, "relative_time": 1.01}
    coda = {**row, "method": "coda_4x", "speedup_vs_dense": 2.5}
    write_family_report(tmp_path, out, {"methods": [row], "storage": [], "merging": None})
    curve = {"method": "coda_4x", "folds": 6, "rows": [{"reduction": 1, "accuracy": 0.97, "time_vs_dense": 1.0},
                                                       {"reduction": 4, "accuracy": 0.9, "time_vs_dense": 0.4}]}
    write_family_report(tmp_path, out, {"methods": [coda], "storage": [], "merging": None, "coda": curve},
                        section="routed")
    write_family_report(tmp_path, out, {"methods": [{**row, "acc_mean": 0.97}], "storage": [], "merging": None})
    text = out.read_text()
    for section in ("sparse", "routed"):
        begin, end = markers(section)
        assert text.count(begin) == 1 and text.count(end) == 1
    assert text.index(markers("sparse")[0]) < text.index(markers("routed")[0])  # rewritten where it stood
    assert "| sparse | 97.00 ± 2.00 |" in text and "| sparse | 95.00" not in text
    assert "| coda_4x | 95.00 ± 2.00 | 6 | 1.000 | 2 KiB | 1.01x | 2.50x |" in text
    assert "| all | 97.00 | 1.00x | 1.00x |" in text and "| 1 in 4 | 90.00 | 0.40x | 2.50x |" in text
