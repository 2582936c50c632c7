"""LA/MoA FFNs under bf16 autocast: outputs and every gradient within a relative error
bound of the float64 result, including near-one-hot gates.

Two fp32 safeguards are what these bounds check: gates are normalised in fp32
(:func:`moa.nn.ffn.normalize_gates`; a bf16 softmax backward loses the small
``g_k (1 − g_k)`` terms of a near-one-hot gate) and the fused op accumulates the output
projection's weight gradient over token chunks in fp32 (:class:`moa.nn.MixProject`).
Chunks are made tiny here (4 rows) so that accumulation runs over ~500 chunks, as it
does for long sequences at full size.
"""

import copy

import pytest
import torch

from moa.nn import build_ffn, ffn_config, functional

D, N, ROWS_PER_CHUNK = 32, 2048, 4


def _rel(a, b):
    """Norm-wise relative error ‖a − b‖ / ‖b‖ in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _run(ffn, x, r, autocast):
    ffn.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = ffn(x)
    (y.to(r.dtype) * r).sum().backward()
    return y.detach(), {"x": x.grad, **{n: p.grad for n, p in ffn.named_parameters()}}


def _ffn(name, near_one_hot, overrides):
    torch.manual_seed(0)
    ffn = build_ffn(ffn_config(name, **overrides), D)
    with torch.no_grad():
        for n, p in ffn.named_parameters():
            if n.startswith("w"):
                p.normal_(0.0, D ** -0.5)
        if hasattr(ffn, "la_coef"):
            ffn.la_coef.normal_(0.3, 0.3)
        if hasattr(ffn, "gate"):
            ffn.gate.weight.normal_(0.0, 0.05 if near_one_hot else 0.3)
            if near_one_hot:  # gelu's logit 7 above the others: its gate ≈ 1 − 3e-3
                bias_GK = torch.zeros(ffn.config.gate_groups, ffn.config.num_activations)
                bias_GK[:, ffn.config.activations.index("gelu")] = 7.0
                ffn.gate.bias.copy_(bias_GK.flatten())
    return ffn


# relative-error bounds; measured on this configuration (torch 2.13 CPU): outputs ≤ 0.7%,
# output-projection weight gradient ≤ 0.7% (3.3–3.8% if accumulated in bf16), other
# matrices and inputs ≤ 1.4%, gate weights ≤ 1.6% (80–94% with a bf16 gate softmax),
# gate biases and LA coefficients ≤ 9% (sums over tokens that largely cancel)
BOUNDS = {"y": 0.012, "output_proj": 0.012, "matrix": 0.025, "gate.weight": 0.03, "sum": 0.15}

CASES = [
    ("la-mlp", {}, False), ("la-glu", {}, False), ("la-glu", {"la_granularity": "channel"}, False),
    ("moa-mlp", {}, False), ("moa-glu", {"gate_groups": 2}, False),
    ("moa-mlp", {}, True), ("moa-glu", {"gate_groups": 2, "gate_norm": "softmax"}, True),
]


@pytest.mark.parametrize("name, overrides, near_one_hot", CASES,
                         ids=[f"{n}-{'-'.join(map(str, o.values()))}{'-near-one-hot' if h else ''}" for n, o, h in CASES])
def test_bf16_autocast_matches_float64(name, overrides, near_one_hot, monkeypatch):
    ffn = _ffn(name, near_one_hot, overrides)
    monkeypatch.setattr(functional, "CHUNK_ELEMENTS_CPU", ROWS_PER_CHUNK * ffn.hidden_dim)
    g = torch.Generator().manual_seed(1)
    x, r = torch.randn(N, D, generator=g), torch.randn(N, D, generator=g)
    if near_one_hot:
        assert ffn.mixing_weights(x).max(-1).values.min() > 0.99
    reference = copy.deepcopy(ffn).double()
    y64, grads64 = _run(reference, x.double(), r.double(), autocast=False)
    y, grads = _run(ffn, x, r, autocast=True)
    assert y.dtype == torch.bfloat16
    errors = {"y": (_rel(y, y64), BOUNDS["y"])}
    output_proj = "w3.weight" if ffn.config.kind == "glu" else "w2.weight"
    for key, grad in grads.items():
        assert grad is not None and grad.dtype == torch.float32, key
        kind = ("output_proj" if key == output_proj else "sum" if key in ("gate.bias", "la_coef")
                else key if key == "gate.weight" else "matrix")
        errors[key] = (_rel(grad, grads64[key]), BOUNDS[kind])
    assert set(errors) >= {"y", "x", "w1.weight", "w2.weight"}
    bad = {k: f"{e:.4f} > {b}" for k, (e, b) in errors.items() if not e <= b}
    assert not bad, bad
