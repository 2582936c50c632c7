"""The fused MoA/LA path under torch.compile equals eager, forward and gradients."""

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from moa.nn import build_ffn, ffn_config


def _run(module, x):
    x = x.detach().clone().requires_grad_()
    y = module(x)
    (y.square().mean()).backward()
    return y.detach(), [x.grad] + [p.grad.clone() for p in module.parameters()]


def _check(name, **overrides):
    torch.manual_seed(0)
    ffn = build_ffn(ffn_config(name, **overrides), 32)
    if hasattr(ffn, "gate"):
        with torch.no_grad():
            ffn.gate.weight.normal_(0, 0.3)
    x = torch.randn(3, 8, 32)
    y, g = _run(ffn, x)
    ffn.zero_grad(set_to_none=True)
    counter = CompileCounterWithBackend("inductor")
    yc, gc = _run(torch.compile(ffn, backend=counter, fullgraph=True), x)
    assert counter.frame_count == 1  # it really ran compiled
    torch.testing.assert_close(yc, y, rtol=1e-5, atol=1e-6)
    for a, b in zip(gc, g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_compiled_moa_glu_matches_eager():
    _check("moa-glu", gate_groups=4, gate_norm="softmax")


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides", [
    ("moa-mlp", {}), ("moa-mlp", {"gate_norm": "sigmoid", "gate_groups": 2}),
    ("la-mlp", {}), ("la-glu", {"la_granularity": "channel"}), ("moa-glu", {"gate_norm": "none"}),
])
def test_compiled_matches_eager_matrix(name, overrides):
    _check(name, **overrides)
