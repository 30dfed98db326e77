"""Claims of the adapter core, checked on every (block type x method) pair."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from speech_peft.adapters import (AdapterBiasConfig, AdapterBudgetError, AdapterMergeError, AdapterTargetError,
                                  BitFitConfig, CrossAttentionConfig, LoRAConfig, MoAConfig,
                                  ParallelAdapterConfig, PrefixTuningConfig, PromptTuningConfig,
                                  SeriesAdapterConfig, adapter_memory, add_adapter,
                                  merge_adapter, remove_adapter, set_active_adapters, unmerge_adapter)
from speech_peft.adapters import CoDAConfig, HDPiSSAConfig, HydraConfig, HyperAdapterConfig, LTEConfig, PolyConfig
from speech_peft.adapters.mosa import MoSAConfig
from speech_peft.adapters.site import AdapterSite
from speech_peft.adapters.sparse import SparseAdapterConfig
from tiny_models import ast_input, conformer_input, tiny_ast, tiny_conformer, tiny_whisper_encoder, whisper_input

ENCODERS = {"whisper": (tiny_whisper_encoder, whisper_input), "ast": (tiny_ast, ast_input),
            "conformer": (tiny_conformer, conformer_input)}
METHODS = {
    "lora": lambda: LoRAConfig(r=4),
    "lora_gaussian": lambda: LoRAConfig(r=4, init="gaussian"),
    "pissa": lambda: LoRAConfig(r=4, init="pissa"),
    "series_houlsby": lambda: SeriesAdapterConfig(placement="houlsby", bottleneck_dim=8),
    "series_pfeiffer": lambda: SeriesAdapterConfig(placement="pfeiffer", bottleneck_dim=8),
    "series_conformer": lambda: SeriesAdapterConfig(kind="conformer", bottleneck_dim=4, kernel_size=5),
    "parallel": lambda: ParallelAdapterConfig(bottleneck_dim=8),
    "sparse": lambda: SparseAdapterConfig(bottleneck_dim=8, sparsity=0.5, saliency="random"),
    "sparse_large": lambda: SparseAdapterConfig(bottleneck_dim=8, sparsity=0.6, saliency="magnitude", large=True),
    "mosa": lambda: MoSAConfig(bottleneck_dim=8, modules=4, active=0.75),  # 3 of 4: two steps share one
    "mosa_hierarchical": lambda: MoSAConfig(bottleneck_dim=8, modules=4, active=0.75, hierarchical=True),
    "hydra": lambda: HydraConfig(r=2),
    "hyper": lambda: HyperAdapterConfig(bottleneck_dim=4, tasks=["a", "b"], task="b"),
    "poly": lambda: PolyConfig(r=2, skills=3, heads=1),
    "mhr": lambda: PolyConfig(r=2, skills=3, heads=4),
    "coda": lambda: CoDAConfig(bottleneck_dim=4, reduction=1),
    "coda_half": lambda: CoDAConfig(bottleneck_dim=4, reduction=2),  # half the tokens skip each block
    "hd_pissa": lambda: HDPiSSAConfig(r=2),
    "lte": lambda: LTEConfig(r=2),
    "adapter_bias": lambda: AdapterBiasConfig(),
    "cross_attention": lambda: CrossAttentionConfig(memory_dim=12, num_heads=4),
    "prompt_shallow": lambda: PromptTuningConfig(num_tokens=3, depth="shallow"),
    "prompt_deep": lambda: PromptTuningConfig(num_tokens=3, depth="deep"),
    "prefix": lambda: PrefixTuningConfig(num_tokens=3),
    "bitfit": lambda: BitFitConfig(),
    "dense_moa": lambda: MoAConfig(mode="dense", num_experts=3, bottleneck_dim=4),
    "soft_moa": lambda: MoAConfig(mode="soft", num_experts=3, slots_per_expert=2, bottleneck_dim=4),
    "soft_moa_series": lambda: MoAConfig(mode="soft", placement="series", num_experts=2, bottleneck_dim=4),
}
# torchaudio's Conformer fuses q/k/v into one MultiheadAttention: LoRA goes on its feed-forward
# projections there, and prompt/prefix tuning (which need the q/k/v projections) are refused.
ON_CONFORMER = {"lora": lambda: LoRAConfig(r=4, target_roles=["ffn.up", "ffn.down"]),
                "lora_gaussian": lambda: LoRAConfig(r=4, init="gaussian", target_roles=["ffn.up", "ffn.down"]),
                "pissa": lambda: LoRAConfig(r=4, init="pissa", target_roles=["ffn.up", "ffn.down"]),
                "hydra": lambda: HydraConfig(r=2, target_roles=["ffn.up", "ffn.down"]),
                "poly": lambda: PolyConfig(r=2, skills=3, heads=1, target_roles=["ffn.up", "ffn.down"]),
                "mhr": lambda: PolyConfig(r=2, skills=3, heads=4, target_roles=["ffn.up", "ffn.down"]),
                "hd_pissa": lambda: HDPiSSAConfig(r=2, target_roles=["ffn.up", "ffn.down"]),
                "lte": lambda: LTEConfig(r=2, target_roles=["ffn.up", "ffn.down"])}
NOT_ON_CONFORMER = ("prompt_shallow", "prompt_deep", "prefix")
CASES = [(e, m) for e in ENCODERS for m in METHODS if not (e == "conformer" and m in NOT_ON_CONFORMER)]
CHANGES_AT_START = ("coda_half",)  # tokens the router leaves out skip the frozen block from the first step


def config_for(encoder: str, method: str):
    return (ON_CONFORMER if encoder == "conformer" and method in ON_CONFORMER else METHODS)[method]()
MEMORY = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(7))


def run(model, x):
    with adapter_memory(model, MEMORY):
        return model(x).last_hidden_state


@pytest.mark.parametrize("encoder,method", [c for c in CASES if c[1] not in CHANGES_AT_START])
def test_adapter_starts_as_identity(encoder, method):
    make, inputs = ENCODERS[encoder]
    model, x = make(), inputs()
    before = model(x).last_hidden_state
    add_adapter(model, config_for(encoder, method))
    torch.testing.assert_close(run(model, x), before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("encoder,method", CASES)
def test_every_adapter_parameter_learns_within_two_steps_and_base_stays_frozen(encoder, method):
    make, inputs = ENCODERS[encoder]
    model, x = make(), inputs()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    add_adapter(model, config_for(encoder, method))
    params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    assert params, "the adapter must have trainable parameters"
    learned = _parameters_that_learn(model, params, x, steps=2)
    assert learned == set(params), f"never received a gradient: {sorted(set(params) - learned)}"
    for name, value in model.state_dict().items():
        if ".adapters." in name:
            continue
        original = name.replace(".base.", ".").removesuffix(".base")
        assert torch.equal(value, base[original]), f"frozen weight {original} changed"


def _parameters_that_learn(model, params, x, steps):
    opt = torch.optim.SGD(params.values(), lr=0.1)
    target = torch.randn_like(run(model, x))
    learned = set()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(run(model, x), target).backward()
        learned |= {n for n, p in params.items() if p.grad is not None and p.grad.abs().sum() > 0}
        opt.step()
    return learned


def test_bottleneck_with_zero_down_and_up_leaves_only_a_bias_learning():
    """The defect the two-step check exists to catch: zeroing both projections strands the weights."""
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, SeriesAdapterConfig(bottleneck_dim=8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".down." in name:
                p.zero_()
    params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    learned = _parameters_that_learn(model, params, x, steps=3)
    assert {n.rsplit(".", 2)[-2:][0] + "." + n.rsplit(".", 1)[-1] for n in learned} == {"up.bias"}


@pytest.mark.parametrize("method", NOT_ON_CONFORMER)
def test_prompt_and_prefix_tuning_are_refused_on_fused_attention_with_a_reason(method):
    with pytest.raises(AdapterTargetError, match="q/k/v"):
        add_adapter(tiny_conformer(), METHODS[method]())


def test_token_mixing_adapters_see_time_first_blocks_batch_first():
    """Soft MoA averages over time: on the time-first Conformer it must never mix the utterances of a batch."""
    model, x = tiny_conformer(), conformer_input(batch=3)
    add_adapter(model, MoAConfig(mode="soft", num_experts=2, bottleneck_dim=4))
    _randomise(model)
    together = model(x).last_hidden_state
    alone = model(x[1:2]).last_hidden_state
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_no_active_adapter_gives_the_base_model_bit_for_bit(encoder):
    make, inputs = ENCODERS[encoder]
    model, x = make(), inputs()
    before = model(x).last_hidden_state
    add_adapter(model, config_for(encoder, "lora"), "a")
    add_adapter(model, ParallelAdapterConfig(bottleneck_dim=4), "b")
    _randomise(model)
    set_active_adapters(model, [])
    assert torch.equal(model(x).last_hidden_state, before)
    set_active_adapters(model, ["a"])
    assert not torch.allclose(model(x).last_hidden_state, before)


def test_two_active_lora_adapters_sum_their_updates():
    model, x = tiny_whisper_encoder(), whisper_input()
    base = model(x).last_hidden_state
    # LoRA on the last layer's final projections: its effect on the output is linear in each update.
    for name in ("a", "b"):
        add_adapter(model, LoRAConfig(r=2, target_roles=["ffn.down"], layers="1"), name)
    _randomise(model)
    outputs = {}
    for active in (["a"], ["b"], ["a", "b"]):
        set_active_adapters(model, active)
        outputs["+".join(active)] = model(x).last_hidden_state
    # The final LayerNorm is not linear, so compare before it.
    model.layer_norm = nn.Identity()
    deltas = {}
    for active in (["a"], ["b"], ["a", "b"], []):
        set_active_adapters(model, active)
        deltas["+".join(active)] = model(x).last_hidden_state
    torch.testing.assert_close(deltas["a+b"] - deltas[""], (deltas["a"] - deltas[""]) + (deltas["b"] - deltas[""]),
                               atol=1e-5, rtol=0)
    assert not torch.allclose(outputs["a+b"], base)


MERGEABLE = {
    "lora": LoRAConfig(r=4, target_roles=["attn.q", "attn.v", "ffn.up"]),
    "pissa": LoRAConfig(r=4, init="pissa", target_roles=["attn.q", "attn.v"]),
    "adapter_bias": AdapterBiasConfig(target_roles=["ffn.down"]),
    "bitfit": BitFitConfig(),
    "hydra": HydraConfig(r=2, target_roles=["attn.q", "attn.v"]),
    "hd_pissa": HDPiSSAConfig(r=2, target_roles=["attn.q", "attn.v"]),
    "lte": LTEConfig(r=2, target_roles=["attn.q", "attn.v"]),
}


@pytest.mark.parametrize("encoder,method", [(e, m) for e in ENCODERS for m in MERGEABLE])
def test_merged_output_equals_unmerged_output(encoder, method):
    make, inputs = ENCODERS[encoder]
    model, x = make(), inputs()
    base = model(x).last_hidden_state
    config = copy.deepcopy(MERGEABLE[method])
    if encoder == "conformer" and method in ("lora", "pissa", "hydra", "hd_pissa", "lte"):
        config.target_roles = ["ffn.up", "ffn.down"]
    add_adapter(model, config)
    _randomise(model)
    unmerged = model(x).last_hidden_state
    assert not torch.allclose(unmerged, base, atol=1e-4)
    merge_adapter(model, "default")
    torch.testing.assert_close(model(x).last_hidden_state, unmerged, atol=1e-5, rtol=0)
    set_active_adapters(model, [])  # merged weights stay in force while merged
    torch.testing.assert_close(model(x).last_hidden_state, unmerged, atol=1e-5, rtol=0)
    unmerge_adapter(model, "default")
    torch.testing.assert_close(model(x).last_hidden_state, base, atol=1e-5, rtol=0)


@pytest.mark.parametrize("config", [SeriesAdapterConfig(), ParallelAdapterConfig(), AdapterBiasConfig()],
                         ids=["series", "parallel", "adapter_bias_reading_the_norm"])
def test_merging_a_non_linear_adapter_is_refused(config):
    model = tiny_whisper_encoder()
    add_adapter(model, config)
    with pytest.raises(AdapterMergeError, match="cannot be folded"):
        merge_adapter(model, "default")


def test_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(AdapterTargetError, match="matches no module"):
        add_adapter(tiny_whisper_encoder(), LoRAConfig(target_modules=["*.query_proj"]))


def test_unknown_role_and_empty_layer_range_are_errors():
    with pytest.raises(AdapterTargetError, match="does not exist"):
        add_adapter(tiny_whisper_encoder(), LoRAConfig(target_roles=["attn.qq"]))
    with pytest.raises(AdapterTargetError, match="select no layer"):
        add_adapter(tiny_whisper_encoder(), LoRAConfig(layers="7-9"))


def test_trainable_fraction_over_budget_is_refused_and_leaves_the_model_untouched():
    model, x = tiny_whisper_encoder(), whisper_input()
    before = model(x).last_hidden_state
    with pytest.raises(AdapterBudgetError, match="over the budget"):
        add_adapter(model, SeriesAdapterConfig(bottleneck_dim=32, placement="houlsby", max_trainable_fraction=0.01))
    assert not any(isinstance(m, AdapterSite) for m in model.modules())
    assert torch.equal(model(x).last_hidden_state, before)


def test_roles_and_layer_ranges_select_the_named_modules():
    model = tiny_whisper_encoder()
    report = add_adapter(model, LoRAConfig(target_roles=["attn.q", "attn.v"], layers="0"))
    assert [t.write for t in report.targets] == ["layers.0.self_attn.q_proj", "layers.0.self_attn.v_proj"]
    report = add_adapter(model, ParallelAdapterConfig(), "par")
    assert [(t.write, t.read) for t in report.targets] == [
        ("layers.0.fc2", "layers.0.final_layer_norm"), ("layers.1.fc2", "layers.1.final_layer_norm")]
    report = add_adapter(model, LoRAConfig(target_modules=[r"re:layers\.1\.fc[12]"]), "rx")
    assert [t.write for t in report.targets] == ["layers.1.fc1", "layers.1.fc2"]


def test_report_counts_trainable_parameters_and_fraction():
    model = tiny_whisper_encoder()
    total = sum(p.numel() for p in model.parameters())
    report = add_adapter(model, LoRAConfig(r=4, target_roles=["attn.q"]))
    expected = 2 * (4 * 32 + 32 * 4)
    assert report.trainable_params == expected
    assert report.total_params == total + expected
    assert report.trainable_fraction == pytest.approx(expected / (total + expected))
    assert "trainable 512" in str(report)


def test_shallow_prompt_sits_in_the_first_layer_and_deep_prompt_in_every_layer():
    shallow = add_adapter(tiny_ast(), PromptTuningConfig(depth="shallow"))
    deep = add_adapter(tiny_ast(), PromptTuningConfig(depth="deep"))
    assert [t.layer for t in shallow.targets] == [0]
    assert [t.layer for t in deep.targets] == [0, 1]


def test_cross_attention_adapter_needs_a_memory_and_ignores_padded_memory():
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, CrossAttentionConfig(memory_dim=12))
    _randomise(model)
    with pytest.raises(RuntimeError, match="needs a memory"):
        model(x)
    mask = torch.tensor([[True] * 3 + [False] * 2] * 2)
    changed = MEMORY.clone()
    changed[:, 3:] = 100.0
    with adapter_memory(model, MEMORY, mask):
        a = model(x).last_hidden_state
    with adapter_memory(model, changed, mask):
        b = model(x).last_hidden_state
    torch.testing.assert_close(a, b)


def test_fused_multihead_attention_projection_is_never_a_silent_target():
    block = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True))
    with pytest.raises(AdapterTargetError):
        add_adapter(block, LoRAConfig(target_modules=["*out_proj"]))


def test_remove_adapter_restores_the_original_modules():
    model = tiny_whisper_encoder()
    names = [n for n, _ in model.named_modules()]
    add_adapter(model, BitFitConfig())
    remove_adapter(model, "default")
    assert [n for n, _ in model.named_modules()] == names


class ToyBlock(nn.Module):
    """A two-linear block with a pre-norm, registered under its own layout (as a user would)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(2, eps=0.0, elementwise_affine=False)
        self.up = nn.Linear(2, 3)
        self.down = nn.Linear(3, 2)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(self.norm(x))))


def test_golden_values_for_lora_and_parallel_adapter_from_a_fixed_initialisation():
    from speech_peft.adapters import BlockLayout, Sublayer, register_layout
    register_layout("ToyBlock", BlockLayout(linears={"ffn.up": "up", "ffn.down": "down"},
                                            sublayers={"ffn": Sublayer(write="down", read="norm")}))
    model = nn.Sequential(nn.ModuleList([ToyBlock()]))
    model.forward = lambda x: model[0][0](x)
    with torch.no_grad():
        block = model[0][0]
        block.up.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        block.up.bias.zero_()
        block.down.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        block.down.bias.zero_()
    x = torch.tensor([[[3.0, 1.0]]])
    assert model(x).tolist() == [[[4.0, 1.0]]]  # norm(x) = [1, -1]; relu(up) = [1, 0, 0]; down = [1, 0]

    add_adapter(model, LoRAConfig(r=1, alpha=2.0, target_roles=["ffn.down"]), "lora")
    add_adapter(model, ParallelAdapterConfig(bottleneck_dim=1, scale=0.5), "par")
    with torch.no_grad():
        lora = block.down.adapters["lora"]
        lora.lora_A.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
        lora.lora_B.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        par = block.down.adapters["par"].inner
        par.down.weight.copy_(torch.tensor([[2.0, 1.0]]))
        par.down.bias.copy_(torch.tensor([0.5]))
        par.up.weight.copy_(torch.tensor([[1.0], [3.0]]))
        par.up.bias.copy_(torch.tensor([0.0, 1.0]))
    set_active_adapters(model, ["lora"])
    # LoRA on down's input [1, 0, 0]: A -> 1, B -> [1, -1], scale 2 -> [2, -2]
    assert model(x).tolist() == [[[6.0, -1.0]]]
    set_active_adapters(model, ["par"])
    # parallel reads norm(x) = [1, -1]: down -> 1.5, relu, up -> [1.5, 5.5], scale 0.5 -> [0.75, 2.75]
    assert model(x).tolist() == [[[4.75, 3.75]]]
    set_active_adapters(model, ["lora", "par"])
    assert model(x).tolist() == [[[6.75, 1.75]]]


def test_adapter_site_passes_attribute_reads_to_the_wrapped_module():
    model = tiny_whisper_encoder()
    add_adapter(model, BitFitConfig())
    assert isinstance(model.conv1, AdapterSite) and model.conv1.stride == (1,)


def _randomise(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapters." in name:
                p.copy_(0.05 * torch.randn_like(p))


def test_lora_rank_from_a_reduction_factor_follows_each_layer_width():
    model = tiny_whisper_encoder()
    add_adapter(model, LoRAConfig(reduction_factor=8, alpha=8, target_roles=["attn.q", "ffn.down"], layers="0"))
    q, down = model.layers[0].self_attn.q_proj.adapters["default"], model.layers[0].fc2.adapters["default"]
    assert q.lora_A.weight.shape[0] == 32 // 8 and down.lora_A.weight.shape[0] == 64 // 8
    assert q.scale == 8 / 4 and down.scale == 8 / 8


def test_adapters_take_the_precision_of_the_frozen_model():
    model = tiny_whisper_encoder().to(torch.float64)
    add_adapter(model, ParallelAdapterConfig(bottleneck_dim=4))
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model(whisper_input().double()).last_hidden_state.dtype == torch.float64


def test_an_open_layer_range_selects_every_layer_from_its_start():
    model = tiny_whisper_encoder()
    report = add_adapter(model, LoRAConfig(r=2, target_roles=["attn.q"], layers="1-"))
    assert [t.layer for t in report.targets] == [1]
