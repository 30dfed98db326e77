"""The adapter family, part 2: multi-head (Hydra), generated (hyper-adapters), routed (Poly/MHR), conditional
(CoDA) and rank-parallel (HD-PiSSA, LTE) adapters, each checked against the claim that defines it."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from speech_peft.adapters import (CoDAConfig, HDPiSSAConfig, HydraConfig, HyperAdapterConfig, LoRAConfig,
                                  LTEConfig, ParallelAdapterConfig, PolyConfig, SeriesAdapterConfig,
                                  adapt_routing, adapter_modules, add_adapter, average_routing, finalize_adapter,
                                  load_adapter, materialise_hyper, merge_rank_updates, read_manifest,
                                  records, save_adapter, set_hyper_task)
from speech_peft.adapters.rank_parallel import assign_ranks, rank_parallel_layers
from tiny_models import (ast_input, conformer_input, tiny_ast, tiny_conformer, tiny_whisper_encoder,
                         whisper_input)

ROOT = Path(__file__).resolve().parents[1]
ENCODERS = {"whisper": (tiny_whisper_encoder, whisper_input), "ast": (tiny_ast, ast_input),
            "conformer": (tiny_conformer, conformer_input)}


def _out(model, x):
    return model(x).last_hidden_state


def _randomise(model, std: float = 0.1, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapters." in name:
                p.copy_(std * torch.randn(p.shape, generator=g))


# Hydra ---------------------------------------------------------------------------------------------------

def test_hydra_with_its_sequential_branch_zeroed_is_lora():
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, HydraConfig(r=2, alpha=4))
    _randomise(model)
    lora_model = tiny_whisper_encoder()
    add_adapter(lora_model, LoRAConfig(r=2, alpha=4))
    with torch.no_grad():
        for path, hydra in adapter_modules(model, "default").items():
            hydra.sequential_B.weight.zero_()
            lora = adapter_modules(lora_model, "default")[path]
            lora.lora_A.weight.copy_(hydra.parallel_A.weight)
            lora.lora_B.weight.copy_(hydra.parallel_B.weight)
    torch.testing.assert_close(_out(model, x), _out(lora_model, x), rtol=0, atol=0)


def test_hydra_with_its_parallel_branch_zeroed_is_a_linear_series_adapter_on_the_layer_output():
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, HydraConfig(r=2, alpha=4))
    _randomise(model)
    series_model = tiny_whisper_encoder()
    add_adapter(series_model, SeriesAdapterConfig(target_roles=["attn.q", "attn.v"], bottleneck_dim=2,
                                                  activation="identity", scale=2.0))
    with torch.no_grad():
        for path, hydra in adapter_modules(model, "default").items():
            hydra.parallel_B.weight.zero_()
            inner = adapter_modules(series_model, "default")[path].inner
            inner.down.weight.copy_(hydra.sequential_A.weight)
            inner.up.weight.copy_(hydra.sequential_B.weight)
            inner.down.bias.zero_()
            inner.up.bias.zero_()
    torch.testing.assert_close(_out(model, x), _out(series_model, x), rtol=0, atol=1e-6)


# Hyper-adapters ------------------------------------------------------------------------------------------

def test_materialised_hyper_adapter_equals_the_generated_one_and_saves_as_a_plain_parallel_adapter(tmp_path):
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, HyperAdapterConfig(bottleneck_dim=4, tasks=["en", "de"], task="de"))
    _randomise(model)
    generated = _out(model, x)
    materialise_hyper(model, "default")
    torch.testing.assert_close(_out(model, x), generated, rtol=0, atol=1e-6)
    save_adapter(model, tmp_path / "plain")
    assert read_manifest(tmp_path / "plain")["method"] == "parallel"
    reloaded = tiny_whisper_encoder()
    load_adapter(reloaded, tmp_path / "plain")
    torch.testing.assert_close(_out(reloaded, x), generated, rtol=0, atol=1e-6)


def test_one_hypernetwork_serves_every_layer_is_saved_once_and_reloads_exactly(tmp_path):
    model, x = tiny_whisper_encoder(), whisper_input()
    report = add_adapter(model, HyperAdapterConfig(bottleneck_dim=4, tasks=["en", "de"]))
    placed = adapter_modules(model, "default")
    hypers = {id(m.hypernetwork) for m in placed.values()}
    assert len(placed) == 2 and len(hypers) == 1
    owned = [path for path, m in placed.items() if "hyper" in m._modules]
    assert len(owned) == 1
    assert report.adapter_params == sum(p.numel() for p in next(iter(placed.values())).hypernetwork.parameters())
    _randomise(model)
    before = _out(model, x)
    save_adapter(model, tmp_path / "hyper")
    reloaded = tiny_whisper_encoder()
    load_adapter(reloaded, tmp_path / "hyper")
    torch.testing.assert_close(_out(reloaded, x), before, rtol=0, atol=0)


def test_hyper_adapters_differ_by_task_and_layer_and_are_rescaled_to_an_initialised_layers_scale():
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, HyperAdapterConfig(bottleneck_dim=4, tasks=["en", "de"]))
    _randomise(model)
    first, second = adapter_modules(model, "default").values()
    assert not torch.allclose(first.generate("en")[0], second.generate("en")[0])
    assert not torch.allclose(first.generate("en")[0], first.generate("de")[0])
    en = _out(model, x)
    set_hyper_task(model, "default", "de")
    assert not torch.allclose(_out(model, x), en)
    with pytest.raises(ValueError, match="not 'fr'"):
        set_hyper_task(model, "default", "fr")
    fresh = tiny_whisper_encoder()
    add_adapter(fresh, HyperAdapterConfig(bottleneck_dim=4))
    down = next(iter(adapter_modules(fresh, "default").values())).generate()[0]
    width = down.shape[1]
    assert 0.2 < float(down.detach().std() * width ** 0.5) < 5.0  # the scale of an initialised layer, 1 / sqrt(fan-in)


# Poly / MHR ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("heads", [1, 4], ids=["poly", "mhr"])
def test_one_hot_routing_reproduces_the_selected_module_exactly(heads):
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, PolyConfig(r=2, skills=3, heads=heads))
    _randomise(model)
    lora_model = tiny_whisper_encoder()
    add_adapter(lora_model, LoRAConfig(r=2, alpha=8.0))
    with torch.no_grad():
        for path, poly in adapter_modules(model, "default").items():
            chosen = torch.arange(heads) % 3  # head h takes module h mod 3
            logits = torch.full_like(poly.routing_logits, -float("inf"))
            logits[0, torch.arange(heads), chosen] = float("inf")
            poly.routing_logits.copy_(logits)
            a = torch.cat([poly.skills_A[k, h] for h, k in enumerate(chosen.tolist())], dim=0)  # (d_in, r)
            b = torch.cat([poly.skills_B[k, h] for h, k in enumerate(chosen.tolist())], dim=1)  # (r, d_out)
            lora = adapter_modules(lora_model, "default")[path]
            lora.lora_A.weight.copy_(a.T)
            lora.lora_B.weight.copy_(b.T)
    torch.testing.assert_close(_out(model, x), _out(lora_model, x), rtol=0, atol=1e-6)


def test_resolved_routing_is_the_same_model_as_one_plain_lora(tmp_path):
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, PolyConfig(r=2, skills=3, heads=4, tasks=["a", "b"], task="b"))
    _randomise(model)
    routed = _out(model, x)
    assert finalize_adapter(model, "default") == "lora"
    torch.testing.assert_close(_out(model, x), routed, rtol=0, atol=1e-6)
    save_adapter(model, tmp_path / "lora")
    reloaded = tiny_whisper_encoder()
    load_adapter(reloaded, tmp_path / "lora")
    torch.testing.assert_close(_out(reloaded, x), routed, rtol=0, atol=1e-6)


def test_mhr_z_trains_only_the_new_tasks_routing_and_mhr_mu_is_the_inventorys_mean():
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, PolyConfig(r=2, skills=3, heads=4, tasks=["a", "b"]))
    _randomise(model)
    mu_model = copy.deepcopy(model)
    inventory = {n: p.detach().clone() for n, p in model.named_parameters() if "skills_" in n}

    adapt_routing(model, "default", "new")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith("routing_logits") for n in trainable)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("routing_logits")}
    nn.functional.mse_loss(_out(model, x), torch.randn_like(_out(model, x))).backward()
    opt.step()
    for n, p in model.named_parameters():
        if "skills_" in n:
            assert torch.equal(p, inventory[n]), f"MHR-z moved the inventory ({n})"
    changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(p[:2], before[n][:2])]
    assert not changed, "the trained tasks' routing rows must stay as they were"
    assert all(not torch.equal(p[2], before[n][2]) for n, p in model.named_parameters() if n in before)

    uniform = copy.deepcopy(mu_model)
    with torch.no_grad():
        for poly in adapter_modules(uniform, "default").values():
            poly.routing_logits.zero_()  # equal logits: each head averages the modules
    average_routing(mu_model, "default")
    assert records(mu_model)["default"].config.method == "lora"
    torch.testing.assert_close(_out(mu_model, x), _out(uniform, x), rtol=0, atol=1e-6)


# CoDA ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoder", ENCODERS)
def test_coda_with_every_token_selected_is_the_dense_block_with_a_parallel_adapter(encoder):
    make, inputs = ENCODERS[encoder]
    model, x = make(), inputs()
    add_adapter(model, CoDAConfig(bottleneck_dim=4, reduction=1))
    _randomise(model)
    dense = make()
    add_adapter(dense, ParallelAdapterConfig(target_roles=["block"], bottleneck_dim=4, scale=1.0))
    with torch.no_grad():
        for path, coda in adapter_modules(model, "default").items():
            adapter_modules(dense, "default")[path].load_state_dict(coda.light.state_dict())
    torch.testing.assert_close(_out(model, x), _out(dense, x), rtol=0, atol=1e-5)


def test_coda_runs_the_frozen_block_on_one_token_in_reduction_and_the_rest_take_the_light_path_only():
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, CoDAConfig(bottleneck_dim=4, reduction=4), )
    _randomise(model)
    seen = []
    block = model.layers[1].base
    block.fc1.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))  # the feed-forward's rows
    captured = {}
    model.layers[0].register_forward_hook(lambda m, i, o: captured.__setitem__("x", o))
    out = _out(model, x)
    steps = x.shape[-1] // 2
    assert seen == [steps // 4]
    coda = model.layers[1].adapters["default"]
    index, _ = coda.selected(captured["x"])
    skipped = torch.ones(x.shape[0], steps, dtype=torch.bool)
    skipped[torch.arange(x.shape[0])[:, None], index] = False
    light = captured["x"] + coda.light(captured["x"], None)
    final_norm = model.layer_norm
    torch.testing.assert_close(out[skipped], final_norm(light)[skipped], rtol=0, atol=1e-6)


@pytest.mark.parametrize("encoder", ["whisper", "ast"])
def test_coda_selected_tokens_attend_to_every_token_so_their_block_output_is_the_dense_one(encoder):
    model = ENCODERS[encoder][0]()
    add_adapter(model, CoDAConfig(bottleneck_dim=4, reduction=3, attend="all"))
    _randomise(model)
    site = model.layers[1]
    coda, block = site.adapters["default"], site.base
    states = torch.randn(2, 12, coda.router.in_features)
    with torch.no_grad():
        index, _ = coda.selected(states)
        routed = coda.route(block, (states, None), {})
        dense = block(states, None)
        dense = dense[0] if isinstance(dense, tuple) else dense
    rows = torch.arange(2)[:, None]
    torch.testing.assert_close(routed[rows, index], dense[rows, index], rtol=0, atol=1e-5)
    left_out = torch.ones(2, 12, dtype=torch.bool)
    left_out[rows, index] = False
    torch.testing.assert_close(routed[left_out], states[left_out], rtol=0, atol=0)  # skipped: unchanged here

    only_selected = copy.deepcopy(model)
    only_selected.layers[1].adapters["default"].attend = "selected"
    with torch.no_grad():
        among = only_selected.layers[1].adapters["default"].route(only_selected.layers[1].base, (states, None), {})
    assert not torch.allclose(among[rows, index], dense[rows, index], atol=1e-3)


def test_coda_interpolate_picks_one_token_per_window_and_skipped_tokens_take_the_interpolated_update():
    model = tiny_whisper_encoder()
    add_adapter(model, CoDAConfig(bottleneck_dim=4, reduction=4, skipped="interpolate", attend="all"))
    _randomise(model)
    site = model.layers[1]
    coda, block = site.adapters["default"], site.base
    states = torch.randn(2, 10, coda.router.in_features)  # windows 0-3, 4-7 and the short one 8-9
    with torch.no_grad():
        index, _ = coda.selected(states)
        routed = coda.route(block, (states, None), {})
        scores = torch.sigmoid(coda.router(states).squeeze(-1))
        dense = block(states, None)
        dense = dense[0] if isinstance(dense, tuple) else dense
    for window, (start, stop) in enumerate([(0, 4), (4, 8), (8, 10)]):
        assert torch.equal(index[:, window], scores[:, start:stop].argmax(-1) + start)
    rows = torch.arange(2)[:, None]
    # a selected token's output is the dense block's; a skipped one between two selected tokens a and b
    # takes (1 - s) update_a + s update_b, s its share of the way from a to b
    torch.testing.assert_close(routed[rows, index], dense[rows, index], rtol=0, atol=1e-5)
    update = dense[rows, index] - states[rows, index]
    for b in range(2):
        a_pos, b_pos = int(index[b, 0]), int(index[b, 1])
        for t in range(10):
            if t <= a_pos:
                expected = update[b, 0]
            elif t <= b_pos:
                share = (t - a_pos) / (b_pos - a_pos)
                expected = (1 - share) * update[b, 0] + share * update[b, 1]
            else:
                continue
            torch.testing.assert_close(routed[b, t], states[b, t] + expected, rtol=0, atol=1e-5)


def test_coda_router_learns_through_its_straight_through_gate():
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, CoDAConfig(bottleneck_dim=4, reduction=2))
    nn.functional.mse_loss(_out(model, x), torch.randn_like(_out(model, x))).backward()
    for coda in adapter_modules(model, "default").values():
        assert coda.router.weight.grad is not None and coda.router.weight.grad.abs().sum() > 0


# HD-PiSSA and LTE ----------------------------------------------------------------------------------------

def test_hd_pissa_ranks_hold_orthogonal_principal_slices_that_together_are_the_top_components():
    model = tiny_whisper_encoder()
    add_adapter(model, HDPiSSAConfig(r=2, alpha=2.0))
    slices = []
    for rank in range(2):
        assign_ranks(model, rank, world=2)
        slices.append([(m.lora_A.weight.clone(), m.lora_B.weight.clone()) for _, m in rank_parallel_layers(model)])
    for (base, _), (a0, b0), (a1, b1) in zip(rank_parallel_layers(model), slices[0], slices[1]):
        torch.testing.assert_close(a0 @ a1.T, torch.zeros(2, 2), atol=1e-5, rtol=0)
        torch.testing.assert_close(b0.T @ b1, torch.zeros(2, 2), atol=1e-5, rtol=0)
        u, s, vh = torch.linalg.svd(base.weight, full_matrices=False)
        top4 = (u[:, :4] * s[:4]) @ vh[:4]
        torch.testing.assert_close(b0 @ a0 + b1 @ a1, top4, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="exceed"):
        assign_ranks(model, 0, world=64)


@pytest.mark.parametrize("config", [HDPiSSAConfig(r=2), LTEConfig(r=2)], ids=["hd_pissa", "lte"])
def test_a_merge_moves_the_update_into_the_merged_weight_and_leaves_the_function_unchanged(config):
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, config)
    with torch.no_grad():
        for _, module in rank_parallel_layers(model):
            module.lora_B.weight.add_(0.05)
    before = _out(model, x)
    pairs = merge_rank_updates(model)
    for (local, total), (_, module) in zip(pairs, rank_parallel_layers(model)):
        torch.testing.assert_close(total, local)  # one process: its own update
        torch.testing.assert_close(module.local_update(), torch.zeros_like(local))
    torch.testing.assert_close(_out(model, x), before, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hd_pissa", "lte"])
def test_ddp_on_two_cpu_processes_merges_the_sum_or_mean_of_the_ranks_updates(method, tiny_whisper_dir,
                                                                               fsdd_folds, tmp_path):
    """Lightning's DDP, 2 processes (gloo): each rank trains its own factors; every merged update is the sum
    (HD-PiSSA) or mean (LTE) of the ranks' updates, and every rank ends with the same merged weights."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_rank_parallel.py"), method, tiny_whisper_dir,
                          str(fsdd_folds), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert len(ranks[0]["locals"]) >= 2 and len(ranks[0]["locals"]) == len(ranks[1]["locals"]), "no merges ran"
    for step in range(len(ranks[0]["locals"])):
        local0, local1 = ranks[0]["locals"][step], ranks[1]["locals"][step]
        expected = local0 + local1 if method == "hd_pissa" else (local0 + local1) / 2
        for rank in ranks:
            torch.testing.assert_close(rank["totals"][step], expected, atol=1e-6, rtol=1e-5)
        assert not torch.allclose(local0, local1), "the ranks must train different factors"
    if method == "hd_pissa":
        a0, a1 = ranks[0]["first_A"], ranks[1]["first_A"]
        assert float((a0 @ a1.T).abs().max()) < 1e-4 * float(a0.abs().max() * a1.abs().max()) * a0.shape[1]
    torch.testing.assert_close(ranks[0]["merged"], ranks[1]["merged"], rtol=0, atol=0)
    # The head is averaged by DDP and clipped apart from each rank's own factors: the replicas stay equal.
    torch.testing.assert_close(ranks[0]["head"], ranks[1]["head"], rtol=0, atol=0)
    result = json.loads((tmp_path / "exp" / "fit_result.json").read_text())
    assert result["epochs"] == 2 and (tmp_path / "exp" / "export" / "adapter").is_dir()
