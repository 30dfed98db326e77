"""Task-ID-free adapter fusion (Audio-AdapterFusion): single-task adapters stay exactly as trained,
every combiner starts where the paper's recipe says it starts, routing is per utterance inside a
mixed batch, and oracle routing by task ID is the single adapter itself."""
from __future__ import annotations

import pytest
import torch
from tiny_models import WHISPER_FRAMES, tiny_whisper_encoder

from speech_peft.adapters import ParallelAdapterConfig, add_adapter, adapter_parameters, set_active_adapters
from speech_peft.adapters.fusion import (FusionConfig, add_fusion, average_adapters, combiners, fusion_parameters,
                                         fusion_weights, set_active_fusion, set_mask, set_routing, task_logits,
                                         value_regulariser)

TASKS = ["read", "far", "phone"]


def _encoder_with_task_adapters(seed: int = 0):
    encoder = tiny_whisper_encoder()
    torch.manual_seed(seed)
    for name in TASKS:
        add_adapter(encoder, ParallelAdapterConfig(bottleneck_dim=8), name)
        with torch.no_grad():  # as if trained: adapters that differ from each other and from zero
            for p in adapter_parameters(encoder, name):
                p.normal_(0, 0.2)
    set_active_adapters(encoder, [])
    return encoder


def _out(encoder, feats):
    with torch.no_grad():
        return encoder(feats).last_hidden_state


@pytest.fixture
def feats():
    torch.manual_seed(1)
    return torch.randn(3, 16, WHISPER_FRAMES)


def _alone(encoder, name, feats):
    set_active_fusion(encoder, None)
    set_active_adapters(encoder, [name])
    out = _out(encoder, feats)
    set_active_adapters(encoder, [])
    return out


def test_oracle_routing_by_task_id_gives_each_utterance_its_own_adapter_in_one_mixed_batch(feats):
    encoder = _encoder_with_task_adapters()
    singles = {name: _alone(encoder, name, feats) for name in TASKS}
    add_fusion(encoder, TASKS, FusionConfig(kind="oracle"))
    task_of = [2, 0, 1]  # a batch that mixes tasks
    set_routing(encoder, torch.nn.functional.one_hot(torch.tensor(task_of), len(TASKS)).float())
    mixed = _out(encoder, feats)
    for i, task in enumerate(task_of):
        torch.testing.assert_close(mixed[i], singles[TASKS[task]][i], atol=1e-5, rtol=1e-5)


def test_a_zero_initialised_router_starts_at_the_plain_average_of_the_adapters(feats):
    encoder = _encoder_with_task_adapters()
    add_fusion(encoder, TASKS, FusionConfig(kind="average"), name="mean")
    averaged = _out(encoder, feats)
    add_fusion(encoder, TASKS, FusionConfig(kind="router"), name="router")
    torch.testing.assert_close(_out(encoder, feats), averaged, atol=1e-6, rtol=1e-6)
    weights = fusion_weights(encoder)
    assert len(weights) == 2 and all(torch.allclose(w, torch.full_like(w, 1 / 3)) for w in weights.values())


def test_attention_fusion_starts_with_identity_values_so_one_adapter_passes_through_unchanged(feats):
    encoder = _encoder_with_task_adapters()
    single = _alone(encoder, "far", feats)
    add_fusion(encoder, ["far", "phone"], FusionConfig(kind="attention"))
    # with both adapters equal, any attention weights give exactly that adapter
    with torch.no_grad():
        for p_far, p_phone in zip(adapter_parameters(encoder, "far"), adapter_parameters(encoder, "phone")):
            p_phone.copy_(p_far)
    torch.testing.assert_close(_out(encoder, feats), single, atol=1e-5, rtol=1e-5)
    assert float(value_regulariser(encoder).detach()) == 0.0


def test_training_a_combiner_changes_no_single_task_adapter_and_no_frozen_weight(feats):
    encoder = _encoder_with_task_adapters()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    for kind in ("attention", "router", "task"):
        add_fusion(encoder, TASKS, FusionConfig(kind=kind), name=kind)
        params = fusion_parameters(encoder, kind)
        assert params and all(p.requires_grad for p in params)
        assert {id(p) for p in encoder.parameters() if p.requires_grad} == {id(p) for p in params}
        optimiser = torch.optim.SGD(params, lr=0.5)
        for _ in range(3):
            loss = encoder(feats).last_hidden_state.square().mean()
            if kind == "task":
                loss = loss + torch.nn.functional.cross_entropy(task_logits(encoder), torch.tensor([0, 1, 2]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    after = encoder.state_dict()
    for key, value in before.items():  # adapters and the base: bit for bit
        assert torch.equal(after[key], value), key


def test_router_and_task_weights_are_per_utterance_and_unaffected_by_batch_neighbours(feats):
    encoder = _encoder_with_task_adapters()
    for kind in ("router", "task"):
        add_fusion(encoder, TASKS, FusionConfig(kind=kind), name=kind)
        with torch.no_grad():
            for p in fusion_parameters(encoder, kind):
                p.normal_(0, 0.5)
        together = _out(encoder, feats)
        weights = fusion_weights(encoder)
        assert all(w.shape == (3, 3) for w in weights.values())
        for i in range(3):
            torch.testing.assert_close(_out(encoder, feats[i:i + 1])[0], together[i], atol=1e-5, rtol=1e-5)


def test_the_utterance_mean_ignores_padding_frames_and_the_router_uses_the_mask(feats):
    from speech_peft.adapters.fusion import masked_mean

    x = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    padded = x.clone()
    padded[0, 3:] = 100.0
    torch.testing.assert_close(masked_mean(padded, mask)[0], x[0, :3].mean(0))
    torch.testing.assert_close(masked_mean(padded, mask)[1], padded[1].mean(0))
    encoder = _encoder_with_task_adapters()
    add_fusion(encoder, TASKS, FusionConfig(kind="router"))
    with torch.no_grad():
        for p in fusion_parameters(encoder):
            p.normal_(0, 0.5)
    _out(encoder, feats)
    unmasked = {k: v.clone() for k, v in fusion_weights(encoder).items()}
    mask = torch.zeros(3, WHISPER_FRAMES // 2, dtype=torch.bool)
    mask[:, :4] = True
    set_mask(encoder, mask)
    _out(encoder, feats)
    assert all(not torch.allclose(fusion_weights(encoder)[k], unmasked[k]) for k in unmasked)


def test_hard_top1_routing_uses_one_adapter_per_utterance_at_inference(feats):
    encoder = _encoder_with_task_adapters()
    add_fusion(encoder, TASKS, FusionConfig(kind="router", hard=True))
    with torch.no_grad():
        for p in fusion_parameters(encoder):
            p.normal_(0, 0.5)
    encoder.eval()
    _out(encoder, feats)
    for weights in fusion_weights(encoder).values():
        assert torch.equal(weights.sum(-1), torch.ones(3)) and set(weights.unique().tolist()) <= {0.0, 1.0}


def test_the_weight_space_average_holds_the_mean_of_the_adapters_weights():
    encoder = _encoder_with_task_adapters()
    average_adapters(encoder, TASKS, "average")
    for mean, *parts in zip(*(adapter_parameters(encoder, n) for n in ["average", *TASKS])):
        torch.testing.assert_close(mean, torch.stack(parts).mean(0))


def test_fusing_adapters_that_share_no_site_is_a_clear_error():
    encoder = tiny_whisper_encoder()
    add_adapter(encoder, ParallelAdapterConfig(bottleneck_dim=4, layers="0"), "a")
    add_adapter(encoder, ParallelAdapterConfig(bottleneck_dim=4, layers="1"), "b")
    with pytest.raises(ValueError, match="share no site"):
        add_fusion(encoder, ["a", "b"])


def test_one_hot_routing_runs_each_adapter_only_on_the_utterances_routed_to_it(feats):
    from speech_peft.adapters import adapter_modules

    encoder = _encoder_with_task_adapters()
    add_fusion(encoder, TASKS, FusionConfig(kind="oracle"))
    rows_seen = {name: [] for name in TASKS}
    for name in TASKS:
        for module in adapter_modules(encoder, name).values():
            module.register_forward_hook(lambda m, args, out, name=name: rows_seen[name].append(args[0].shape[0]))
    set_routing(encoder, torch.nn.functional.one_hot(torch.tensor([2, 0, 2]), len(TASKS)).float())
    _out(encoder, feats)
    assert set(rows_seen["read"]) == {1} and set(rows_seen["phone"]) == {2} and rows_seen["far"] == []


def test_the_base_model_as_an_expert_leaves_an_utterance_routed_to_it_exactly_as_the_frozen_model_hears_it(feats):
    """base_expert: "no adapter" is one more expert. A router that picks it for an utterance gives that
    utterance the frozen model's own output, and the others their adapters', in one batch."""
    encoder = _encoder_with_task_adapters()
    frozen = _out(encoder, feats)
    singles = {name: _alone(encoder, name, feats) for name in TASKS}
    add_fusion(encoder, TASKS, FusionConfig(kind="router", hard=True, base_expert=True))
    gates = [combiner.gate for combiner in combiners(encoder).values()]
    assert all(g.out_features == len(TASKS) + 1 for g in gates)
    encoder.eval()
    with torch.no_grad():  # every utterance to the base expert, then every one to "far"
        for gate in gates:
            gate.weight.zero_()
            gate.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0]))
    torch.testing.assert_close(_out(encoder, feats), frozen, atol=1e-6, rtol=1e-6)
    assert all(torch.equal(w[:, -1], torch.ones(3)) for w in fusion_weights(encoder).values())
    with torch.no_grad():
        for gate in gates:
            gate.bias.copy_(torch.tensor([0.0, 5.0, 0.0, 0.0]))
    torch.testing.assert_close(_out(encoder, feats), singles["far"], atol=1e-5, rtol=1e-5)
    encoder.train()  # soft: the base expert's weight scales every adapter's delta down
    with torch.no_grad():
        for gate in gates:
            gate.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0]))
    soft = _out(encoder, feats)
    assert (soft - frozen).abs().mean() < (singles["far"] - frozen).abs().mean()


def test_attention_fusion_with_the_base_expert_weighs_it_last_and_other_kinds_refuse_it(feats):
    encoder = _encoder_with_task_adapters()
    add_fusion(encoder, TASKS, FusionConfig(kind="attention", base_expert=True))
    _out(encoder, feats)
    assert all(w.shape == (3, len(TASKS) + 1) for w in fusion_weights(encoder).values())
    for kind in ("task", "oracle", "average"):
        with pytest.raises(ValueError, match="base_expert is for the attention and router fusions"):
            FusionConfig(kind=kind, base_expert=True)
