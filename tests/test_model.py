"""The Llama-style LM: causality, GQA, parameter accounting, presets."""

import pytest
import torch

from moa.train.runs import describe
from moa.model import ModelConfig, Transformer, param_counts
from moa.nn import ffn_cost
from moa.presets import PRESETS, get_preset


@pytest.mark.parametrize("kv", [None, 1])
def test_causal(kv):
    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=kv, ffn="moa-glu"))
    x = torch.randint(0, 50, (2, 12))
    y = m(x)
    x2 = x.clone()
    x2[:, 7] = (x2[:, 7] + 1) % 50
    y2 = m(x2)
    assert torch.equal(y[:, :7], y2[:, :7])
    assert not torch.allclose(y[:, 7:], y2[:, 7:])


@pytest.mark.parametrize("tie", [True, False])
def test_param_counts(tie):
    cfg = ModelConfig(vocab_size=100, d_model=32, n_layers=3, n_heads=2, ffn="moa-mlp", tie_embeddings=tie)
    m = Transformer(cfg)
    c = param_counts(m)
    attn = 4 * 32 * 32
    norms = 2 * 32
    per_layer = attn + norms + ffn_cost(cfg.ffn_config(), 32).params
    emb = 100 * 32
    assert c["non_embedding"] == 3 * per_layer + 32
    assert c["total"] == c["non_embedding"] + emb * (1 if tie else 2)


def test_model_config_errors():
    with pytest.raises(ValueError, match="not divisible by model.n_heads"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="n_kv_heads=3"):
        ModelConfig(d_model=32, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="model.ffn='x'"):
        ModelConfig(ffn="x")
    with pytest.raises(ValueError, match="gate_groups=7"):
        ModelConfig(d_model=32, gate_groups=7)


def test_every_preset_resolves_and_reports_sizes():
    sizes = {}
    for name in PRESETS:
        d = describe(get_preset(name))
        assert d["total"] > d["non_embedding"] > 0
        sizes[name] = d["total"]
    # the paper's GPU sizes: ≈0.12B, 0.35B, 0.7B, 1.3B, 2B
    for name, target in [("gpu-125m", 0.12e9), ("gpu-350m", 0.35e9), ("gpu-760m", 0.7e9), ("gpu-1.3b", 1.3e9),
                         ("gpu-2b", 2e9)]:
        assert 0.8 * target < sizes[name] < 1.2 * target, (name, sizes[name])
