"""Activations against independent references: closed forms written out with numpy and
derivatives by central finite differences of those closed forms (float64), never the
torch kernels the library calls. Covers every derivative the fused mixing ops use
(``Activation.vjp`` inside :class:`moa.nn.MixActivations` / :class:`moa.nn.MixProject`),
and the FFNs' fused and reference paths against a hand-written NumPy forward that does
not touch ``ACTIVATIONS``.
"""

import math

import numpy as np
import pytest
import torch

from moa.nn import ACTIVATIONS, FFNConfig, build_ffn, mix_activations, mix_activations_reference, mix_project

_erf = np.vectorize(math.erf)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + e^-z), overflow-free


CLOSED_FORMS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "gelu": lambda z: 0.5 * z * (1.0 + _erf(z / math.sqrt(2.0))),  # z Φ(z)
    "gelu_tanh": lambda z: 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3))),
    "silu": lambda z: z * _sigmoid(z),
    "relu2": lambda z: np.maximum(z, 0.0) ** 2,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "softplus": lambda z: np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z))),  # log(1 + e^z), stable
    "identity": lambda z: z,
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
}
NAMES = sorted(CLOSED_FORMS)


def _points():
    """Float64 points over [-25, 25] (both tails, the softplus threshold at 20), none
    within 1e-3 of the kinks at 0 so that finite differences are valid everywhere."""
    rng = np.random.default_rng(0)
    z = np.concatenate([np.linspace(-25.0, 25.0, 1001), rng.normal(0.0, 2.0, 1000), [-19.99, 20.01, 0.5, -0.5]])
    return z[np.abs(z) > 1e-3]


def _fd_derivative(f, z, h=1e-5):
    return (f(z + h) - f(z - h)) / (2 * h)


def test_every_activation_has_a_closed_form_here():
    assert set(CLOSED_FORMS) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", NAMES)
def test_values_equal_closed_form(name):
    z = _points()
    got = ACTIVATIONS[name](torch.from_numpy(z)).numpy()
    # softplus returns z exactly above torch's threshold 20: |log1p(e^-z)| < 2.1e-9 there
    np.testing.assert_allclose(got, CLOSED_FORMS[name](z), rtol=1e-12, atol=3e-9 if name == "softplus" else 1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_derivative_equals_finite_differences(name):
    z = _points()
    fd = _fd_derivative(CLOSED_FORMS[name], z)
    zt = torch.from_numpy(z)
    g = torch.from_numpy(np.random.default_rng(1).normal(size=z.shape))
    np.testing.assert_allclose(ACTIVATIONS[name].derivative(zt).numpy(), fd, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(ACTIVATIONS[name].vjp(g, zt).numpy(), g.numpy() * fd, rtol=1e-7, atol=1e-8)


def _coefficients(k):
    return np.random.default_rng(2).normal(size=k)


def test_fused_mix_value_and_gradients_equal_closed_forms():
    """All ten in one mixture: h = Σ_k c_k σ_k(z); dh/dz by finite differences of the
    closed forms, dL/dc_k = Σ g ⊙ σ_k(z), through the fused op and the reference."""
    z = _points()[:600].reshape(20, 30)
    c = _coefficients(len(NAMES))
    g = np.random.default_rng(3).normal(size=z.shape)
    h_expected = sum(c[k] * CLOSED_FORMS[n](z) for k, n in enumerate(NAMES))
    dz_expected = g * sum(c[k] * _fd_derivative(CLOSED_FORMS[n], z) for k, n in enumerate(NAMES))
    dc_expected = np.array([(g * CLOSED_FORMS[n](z)).sum() for n in NAMES])
    for op in (mix_activations, mix_activations_reference):
        zt = torch.from_numpy(z).requires_grad_()
        ct = torch.from_numpy(c).requires_grad_()
        h = op(zt, ct, tuple(NAMES))
        h.backward(torch.from_numpy(g))
        np.testing.assert_allclose(h.detach().numpy(), h_expected, rtol=1e-12, atol=1e-8)
        np.testing.assert_allclose(zt.grad.numpy(), dz_expected, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(ct.grad.numpy(), dc_expected, rtol=1e-10, atol=1e-7)


def test_fused_mix_project_gradients_equal_closed_forms():
    """The output-projection op (eager, chunked): y = (h ⊙ v) Wᵀ with per-token gates."""
    rng = np.random.default_rng(4)
    n, m, d, k = 40, 10, 3, len(NAMES)
    z = rng.normal(0.0, 3.0, size=(n, m))
    v = rng.normal(size=(n, m))
    w = rng.normal(size=(d, m))
    c = rng.normal(size=(n, 1, k))
    gy = rng.normal(size=(n, d))
    sig = np.stack([CLOSED_FORMS[name](z) for name in NAMES], -1)  # (n, m, K)
    dsig = np.stack([_fd_derivative(CLOSED_FORMS[name], z) for name in NAMES], -1)
    h = (sig * c).sum(-1)
    gp = gy @ w  # dL/d(h ⊙ v)
    tensors = [torch.from_numpy(a).requires_grad_() for a in (z, c, v, w)]
    y = mix_project(tensors[0], tensors[1], tuple(NAMES), tensors[3], tensors[2])
    y.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(y.detach().numpy(), (h * v) @ w.T, rtol=1e-10, atol=1e-8)
    expected = {
        "z": gp * v * (dsig * c).sum(-1),
        "c": ((gp * v)[..., None] * sig).sum(1, keepdims=True),
        "v": gp * h,
        "w": gy.T @ (h * v),
    }
    for name, t in zip("zcvw", tensors):
        np.testing.assert_allclose(t.grad.numpy(), expected[name], rtol=1e-7, atol=1e-6, err_msg=name)


def _numpy_ffn(ffn, x):
    """The FFN written out from the paper's formulas in NumPy with the closed forms above."""
    c = ffn.config
    p = {k: v.detach().numpy() for k, v in ffn.named_parameters()}
    z = x @ p["w1.weight"].T  # (N, m)
    sig = [CLOSED_FORMS[a](z) for a in c.activations]
    if c.mixing == "fixed":
        h = sig[0]
    elif c.mixing == "la":
        a = p["la_coef"]  # (K,) or (m, K)
        h = sum((a[k] if a.ndim == 1 else a[:, k]) * sig[k] for k in range(len(sig)))
    else:
        logits = (x @ p["gate.weight"].T + p["gate.bias"]) / c.temperature
        logits = logits.reshape(len(x), c.gate_groups, len(sig))
        if c.gate_norm == "softmax":
            e = np.exp(logits - logits.max(-1, keepdims=True))
            gates = e / e.sum(-1, keepdims=True)
        elif c.gate_norm == "sigmoid":
            gates = 1.0 / (1.0 + np.exp(-logits))
        else:
            gates = logits
        gates = np.repeat(gates, ffn.hidden_dim // c.gate_groups, axis=1)  # (N, m, K)
        h = sum(gates[..., k] * sig[k] for k in range(len(sig)))
    if c.kind == "glu":
        return (h * (x @ p["w2.weight"].T)) @ p["w3.weight"].T
    return h @ p["w2.weight"].T


FFN_CASES = (
    [dict(mixing="fixed", activations=(a,)) for a in NAMES]
    + [dict(mixing="la", activations=tuple(NAMES)), dict(mixing="la", activations=("gelu", "silu"), la_granularity="channel")]
    + [dict(mixing="moa", activations=tuple(NAMES), gate_groups=2, gate_norm=g, temperature=t)
       for g, t in (("softmax", 0.7), ("sigmoid", 1.0), ("none", 1.0))]
)


@pytest.mark.parametrize("kind", ["mlp", "glu"])
@pytest.mark.parametrize("case", FFN_CASES, ids=lambda c: "-".join(str(v) for v in c.values() if not isinstance(v, tuple)) + "-" + "+".join(c["activations"][:2]))
def test_ffn_fused_and_reference_equal_numpy_forward(kind, case):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(13, 8))
    expected = None
    for impl in ("fused", "reference"):
        torch.manual_seed(0)
        ffn = build_ffn(FFNConfig(kind=kind, impl=impl, hidden_dim=12, **case), 8).double()
        with torch.no_grad():
            for p in ffn.parameters():
                p.copy_(torch.randn(p.shape, dtype=p.dtype) * 0.7)
        if expected is None:
            expected = _numpy_ffn(ffn, x)
        got = ffn(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, err_msg=impl)
