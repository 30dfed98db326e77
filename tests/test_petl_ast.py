"""PETL-AST claims and the reference code's defects that must not come back."""
from __future__ import annotations

import pytest
import torch

from speech_peft.adapters import SeriesAdapterConfig, add_adapter, config_from_dict
from tiny_models import tiny_whisper_encoder, whisper_input


def test_twelve_pfeiffer_conformer_adapters_hold_about_029_percent_of_ast_base():
    from transformers import ASTConfig, ASTModel

    with torch.device("meta"):  # AST-base (12 layers, width 768) as shapes alone: no 86 M weights to fill
        model = ASTModel(ASTConfig())
    base = sum(p.numel() for p in model.parameters())
    report = add_adapter(model, SeriesAdapterConfig(kind="conformer", placement="pfeiffer", reduction_factor=96,
                                                    layer_norm=True))
    assert len(report.targets) == 12
    assert 100 * report.adapter_params / base == pytest.approx(0.29, abs=0.01)


def test_adapter_layer_norm_is_used_not_computed_and_discarded():
    model, x = tiny_whisper_encoder(), whisper_input()
    add_adapter(model, SeriesAdapterConfig(bottleneck_dim=4, layer_norm=True))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".up." in name:
                p.normal_(0, 0.1)
    norms = [p for n, p in model.named_parameters() if ".adapters." in n and ".norm." in n]
    assert norms
    model(x).last_hidden_state.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in norms)
    before = model(x).last_hidden_state.detach()
    with torch.no_grad():
        norms[0].add_(1.0)  # the LayerNorm weight: changing it must change the output
    assert not torch.allclose(model(x).last_hidden_state, before)


@pytest.mark.parametrize("text,expected", [("False", False), ("false", False), ("True", True), ("0", False),
                                           (False, False), (True, True)])
def test_boolean_flags_parse_false_as_false(text, expected):
    config = config_from_dict({"method": "series", "layer_norm": text})
    assert config.layer_norm is expected


def test_a_boolean_flag_that_is_not_a_boolean_is_an_error():
    with pytest.raises(ValueError, match="layer_norm must be true or false"):
        config_from_dict({"method": "series", "layer_norm": "maybe"})
