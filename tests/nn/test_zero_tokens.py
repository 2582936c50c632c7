"""Every FFN and MoE layer takes an empty batch: (0, D) in, (0, D) out, zero gradients.

An MoE expert (routed or shared) can be handed zero rows, and a data-parallel rank can
end up with an empty micro-batch; the layers must behave like a sum over no tokens.
"""

import pytest
import torch

from moa.nn import FFN_PRESETS, MoE, MoEConfig, build_ffn, ffn_config, mix_activations, mix_project

D = 16


def _check_empty(module, x):
    x = x.detach().clone().requires_grad_()
    y = module(x)
    assert isinstance(y, torch.Tensor) and y.shape == x.shape and y.dtype == x.dtype
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    for name, p in module.named_parameters():
        # a sum over no tokens: every parameter gets a zero gradient, idle experts included
        # (a data-parallel rank with an empty micro-batch must still hand DDP every gradient)
        assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any(), name


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("preset", list(FFN_PRESETS))
def test_ffn_presets_on_empty_batch(preset, impl):
    torch.manual_seed(0)
    ffn = build_ffn(ffn_config(preset, impl=impl, hidden_dim=32), D).double()
    _check_empty(ffn, torch.randn(0, D, dtype=torch.float64))
    _check_empty(ffn, torch.randn(2, 0, D, dtype=torch.float64))


@pytest.mark.parametrize("preset", ["la-mlp", "la-glu"])
def test_channel_la_on_empty_batch(preset):
    ffn = build_ffn(ffn_config(preset, hidden_dim=32, la_granularity="channel"), D)
    _check_empty(ffn, torch.randn(0, D))


@pytest.mark.parametrize("v", [False, True])
def test_mix_ops_on_zero_rows(v):
    names = ("relu", "gelu", "silu")
    z = torch.randn(0, 8, requires_grad=True)
    gates = torch.randn(0, 2, 3, requires_grad=True)
    w = torch.randn(5, 8, requires_grad=True)
    vv = torch.randn(0, 8, requires_grad=True) if v else None
    y = mix_project(z, gates, names, w, vv)
    assert y.shape == (0, 5)
    y.sum().backward()
    assert z.grad.shape == z.shape and gates.grad.shape == gates.shape
    assert w.grad.shape == w.shape and not w.grad.any()
    coef = torch.rand(3, requires_grad=True)  # shared coefficients: gradient is a sum over no tokens
    mix_project(z, coef, names, w, vv).sum().backward()
    assert coef.grad.shape == coef.shape and not coef.grad.any()
    assert mix_activations(z, gates, names).shape == z.shape


@pytest.mark.parametrize("dispatch", ["loop", "grouped"])
@pytest.mark.parametrize("expert", ["moa-glu", "la-mlp", "swiglu"])
def test_moe_with_shared_expert_on_empty_batch(expert, dispatch):
    torch.manual_seed(0)
    cfg = MoEConfig(num_experts=4, top_k=2, shared_experts=1, dispatch=dispatch, balance="aux")
    moe = MoE(cfg, ffn_config(expert, hidden_dim=32), D)
    _check_empty(moe, torch.randn(0, D))
    _check_empty(moe, torch.randn(3, 0, D))
    assert all(torch.isfinite(v) for v in moe.last_losses.values())
