"""torch.compile of every FFN variant, forward and backward, equals eager.

All variants (every preset plus the gate and LA options) sit in one module that is
compiled once with ``fullgraph=True`` (no graph break around the fused mixing op) through
AOTAutograd (``backend="aot_eager"``: the traced forward and backward graphs run with
eager kernels; one compile instead of sixteen keeps this fast on a CPU). Inductor code
generation, far slower to compile on a CPU, runs for a Type-I LA FFN here and for
moa-glu in ``test_compile.py``; the rest of the inductor matrix is marked slow there.
"""

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from moa.nn import FFN_PRESETS, build_ffn, ffn_config

D = 16

VARIANTS = [(name, {}) for name in FFN_PRESETS] + [
    ("moa-mlp", {"gate_norm": "sigmoid", "gate_groups": 2}), ("moa-glu", {"gate_norm": "none", "temperature": 0.5}),
    ("moa-glu", {"gate_groups": 4}), ("la-glu", {"la_granularity": "channel"}), ("moa-glu", {"impl": "reference"}),
]


class AllVariants(torch.nn.Module):
    def __init__(self, variants):
        super().__init__()
        self.ffns = torch.nn.ModuleList(build_ffn(ffn_config(name, **o), D) for name, o in variants)

    def forward(self, x):
        return [ffn(x) for ffn in self.ffns]


def _run(module, params_of, x, r):
    x = x.detach().clone().requires_grad_()
    ys = module(x)
    sum((y * r).sum() for y in ys).backward()
    return [y.detach() for y in ys], {"x": x.grad, **{n: p.grad.clone() for n, p in params_of.named_parameters()}}


def _check(variants, backend):
    torch.manual_seed(0)
    model = AllVariants(variants)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.4)  # gates and LA coefficients away from their symmetric inits
    g = torch.Generator().manual_seed(1)
    x, r = torch.randn(2, 5, D, generator=g), torch.randn(2, 5, D, generator=g)
    ys, grads = _run(model, model, x, r)
    model.zero_grad(set_to_none=True)
    counter = CompileCounterWithBackend(backend)
    ys_c, grads_c = _run(torch.compile(model, backend=counter, fullgraph=True), model, x, r)
    assert counter.frame_count == 1  # one graph: it really ran compiled
    for (name, o), y, yc in zip(variants, ys, ys_c):
        torch.testing.assert_close(yc, y, rtol=1e-5, atol=1e-6, msg=f"{name} {o}")
    assert set(grads_c) == set(grads)
    for key in grads:  # "ffns.<i>.<parameter>": variant i of VARIANTS
        torch.testing.assert_close(grads_c[key], grads[key], rtol=1e-4, atol=1e-6, msg=key)


def test_every_ffn_variant_compiles_and_equals_eager():
    assert {name for name, _ in VARIANTS} == set(FFN_PRESETS)
    _check(VARIANTS, "aot_eager")


def test_type1_la_ffn_inductor_equals_eager():
    _check([("la-mlp", {})], "inductor")
