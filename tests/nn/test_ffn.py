"""FFN modules: fast paths vs an explicit reference, containment, causality, accounting."""

import itertools

import pytest
import torch

from moa.nn import functional
from moa.nn import (
    ACTIVATIONS, FFNConfig, build_ffn, convert_ffn, ffn_config, ffn_cost, mix_activations,
    mix_activations_reference, mixing_parameter_names, split_mixing_parameters,
)

D = 16


def reference_forward(ffn, x):
    """f(x) written out from the paper's formulas with an explicit per-activation sum."""
    c = ffn.config
    z = x @ ffn.w1.weight.T  # (..., m)
    acts = [ACTIVATIONS[a] for a in c.activations]
    if c.mixing == "fixed":
        h = acts[0](z)
    elif c.mixing == "la":
        a = ffn.la_coef  # (K,) or (m, K)
        h = sum((a[k] if a.dim() == 1 else a[:, k]) * acts[k](z) for k in range(len(acts)))
    else:
        logits = (x @ ffn.gate.weight.T + ffn.gate.bias) / c.temperature
        logits = logits.unflatten(-1, (c.gate_groups, len(acts)))
        g = {"softmax": lambda t: t.softmax(-1), "sigmoid": torch.sigmoid, "none": lambda t: t}[c.gate_norm](logits)
        g = g.repeat_interleave(ffn.hidden_dim // c.gate_groups, dim=-2)  # (..., m, K)
        h = sum(g[..., k] * acts[k](z) for k in range(len(acts)))
    if c.kind == "glu":
        return (h * (x @ ffn.w2.weight.T)) @ ffn.w3.weight.T
    return h @ ffn.w2.weight.T


def randomise(ffn, seed=0):
    """Random values for every parameter, gates included (inits are too symmetric to test)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ffn.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return ffn


def grads(fn, ffn, x):
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum()
    gs = torch.autograd.grad(loss, [x, *ffn.parameters()])
    return y.detach(), gs


CASES = (
    [dict(kind=k, mixing="fixed", activations=(a,)) for k in ("mlp", "glu") for a in ("relu", "gelu", "silu", "relu2")]
    + [dict(kind=k, mixing="la", activations=("relu", "gelu", "silu", "relu2"), la_granularity=g)
       for k in ("mlp", "glu") for g in ("layer", "channel")]
    + [dict(kind=k, mixing="moa", activations=("relu", "gelu", "silu", "relu2"), gate_groups=G, gate_norm=n,
            temperature=t)
       for k, G, n, t in itertools.product(("mlp", "glu"), (1, 4), ("softmax", "sigmoid", "none"), (1.0, 0.5))]
)


@pytest.mark.parametrize("impl", ["fused", "fused-chunked", "reference"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_module_matches_explicit_reference_float64(case, impl, monkeypatch):
    if impl == "fused-chunked":  # 2 tokens per chunk: 8 chunks of 15 tokens, the last one ragged
        monkeypatch.setattr(functional, "CHUNK_ELEMENTS_CPU", 2 * 64)
        impl = "fused"
    ffn = randomise(build_ffn(FFNConfig(**case, impl=impl), D).double())
    assert ffn.hidden_dim == 64
    x = torch.randn(3, 5, D, dtype=torch.float64)
    y, g = grads(ffn, ffn, x)
    y_ref, g_ref = grads(lambda t: reference_forward(ffn, t), ffn, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_op_gradcheck_every_activation():
    names = tuple(ACTIVATIONS)
    k = len(names)
    z = (torch.randn(6, 10, dtype=torch.float64) * 2).requires_grad_()  # m = 10, G = 2
    for coef in (torch.randn(6, 2, k, dtype=torch.float64), torch.randn(2, k, dtype=torch.float64),
                 torch.randn(k, dtype=torch.float64)):
        coef.requires_grad_()
        assert torch.autograd.gradcheck(lambda z, c: mix_activations(z, c, names), (z, coef))
        y, y_ref = mix_activations(z, coef, names), mix_activations_reference(z, coef, names)
        gz, gc = torch.autograd.grad(y.square().sum(), (z, coef))
        gz_ref, gc_ref = torch.autograd.grad(y_ref.square().sum(), (z, coef))
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gz, gz_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gc, gc_ref, rtol=1e-10, atol=1e-12)


def saved_bytes(fn):
    """Bytes of distinct storages autograd keeps for backward while ``fn`` runs."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize("kind, base", [("mlp", "relu"), ("glu", "swiglu")])
def test_fused_moa_keeps_no_activation_outputs(kind, base):
    d, tokens = 64, 256
    x = torch.randn(tokens, d, requires_grad=True)
    baseline = build_ffn(ffn_config(base), d)
    fused = build_ffn(ffn_config(f"moa-{kind}"), d)
    reference = build_ffn(ffn_config(f"moa-{kind}", impl="reference"), d)
    hidden = tokens * fused.hidden_dim * 4  # bytes of one (tokens, m) fp32 tensor
    b, f, r = (saved_bytes(lambda: m(x)) for m in (baseline, fused, reference))
    # the fused op adds only the gates (tokens x K) and the tiny gate input bookkeeping
    assert f <= b + hidden // 8, (b, f, r)
    # the reference keeps several (tokens, m) tensors per activation: K=4 → far more
    assert r >= b + 3 * hidden, (b, f, r)


@pytest.mark.parametrize("kind, act", [("mlp", "relu"), ("mlp", "gelu"), ("glu", "silu"), ("glu", "relu2")])
@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_la_one_hot_equals_fixed_exactly(kind, act, granularity):
    fixed = randomise(build_ffn(FFNConfig(kind=kind, activations=(act,)), D))
    la = convert_ffn(fixed, FFNConfig(kind=kind, mixing="la", activations=("relu", "gelu", "silu", "relu2"),
                                      la_granularity=granularity))
    assert la.la_coef.sum().item() == (la.la_coef.shape[0] if granularity == "channel" else 1.0)
    x = torch.randn(4, 7, D)
    assert torch.equal(la(x), fixed(x))


@pytest.mark.parametrize("kind", ["mlp", "glu"])
@pytest.mark.parametrize("norm", ["softmax", "sigmoid", "none"])
def test_function_preserving_init_equals_baseline(kind, norm):
    acts = ("relu", "gelu", "silu", "relu2")
    for j, act in enumerate(acts):
        fixed = randomise(build_ffn(FFNConfig(kind=kind, activations=(act,)), D).double(), seed=j)
        moa = convert_ffn(fixed, FFNConfig(kind=kind, mixing="moa", activations=acts, gate_norm=norm, gate_groups=2))
        assert moa.config.init == act and torch.all(moa.gate.weight == 0)
        x = torch.randn(4, 7, D, dtype=torch.float64)
        if norm == "none":
            assert torch.equal(moa(x), fixed(x))
        else:  # other gates are exp(-30) ≈ 1e-13, not exactly zero (see moa.nn.config)
            torch.testing.assert_close(moa(x), fixed(x), rtol=1e-11, atol=1e-11)
        # the init option on its own, without conversion, gives the same gates
        fresh = build_ffn(FFNConfig(kind=kind, mixing="moa", activations=acts, gate_norm=norm, init=act), D)
        w = fresh.mixing_weights(torch.randn(3, D))
        assert w.shape == (3, 1, 4)
        one_hot = torch.nn.functional.one_hot(torch.tensor(j), 4).to(w.dtype).expand(3, 1, 4)
        torch.testing.assert_close(w, one_hot, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["mlp", "glu"])
@pytest.mark.parametrize("norm, tau", [("none", 1.0), ("none", 0.7), ("softmax", 1.0), ("softmax", 2.0), ("sigmoid", 1.0)])
@pytest.mark.parametrize("granularity, groups", [("layer", 1), ("layer", 4), ("channel", None)])
def test_moa_with_zero_gate_weight_equals_la(kind, norm, tau, granularity, groups):
    acts = ("relu", "gelu", "silu", "relu2")
    la = randomise(build_ffn(FFNConfig(kind=kind, mixing="la", activations=acts, la_granularity=granularity), D)).double()
    with torch.no_grad():  # coefficients each gate normalisation can represent
        a = torch.rand(la.la_coef.shape, dtype=torch.float64) + 0.1
        la.la_coef.copy_(a / a.sum(-1, keepdim=True))
    groups = groups or la.hidden_dim
    moa = convert_ffn(la, FFNConfig(kind=kind, mixing="moa", activations=acts, gate_norm=norm, temperature=tau,
                                    gate_groups=groups)).double()
    x = torch.randn(4, 7, D, dtype=torch.float64)
    if norm == "none" and tau == 1.0:
        assert torch.equal(moa(x), la(x))
    torch.testing.assert_close(moa(x), la(x), rtol=1e-12, atol=1e-12)
    w = moa.mixing_weights(x)
    assert w.shape == (4, 7, groups, 4)


@pytest.mark.parametrize("kind", ["mlp", "glu"])
@pytest.mark.parametrize("groups", [1, 4])
def test_moa_gates_are_per_token(kind, groups):
    moa = randomise(build_ffn(ffn_config(f"moa-{kind}", gate_groups=groups), D).double())
    x = torch.randn(2, 6, D, dtype=torch.float64)
    y = moa(x)
    x2 = x.clone()
    x2[1, 3] += torch.randn(D, dtype=torch.float64)
    y2 = moa(x2)
    changed = (y2 - y).abs().amax(-1) > 0
    expected = torch.zeros(2, 6, dtype=torch.bool)
    expected[1, 3] = True
    assert torch.equal(changed, expected)
    # and the gates themselves differ between tokens (so the test is not vacuous)
    w = moa.mixing_weights(x)
    assert (w[0, 0] - w[0, 1]).abs().max() > 1e-3


def test_parameter_counts_and_overhead():
    for name in ["relu", "swiglu", "la-mlp", "la-glu", "moa-mlp", "moa-glu"]:
        for kw in ({}, {"gate_groups": 4}, {"la_granularity": "channel"}):
            if name in ("relu", "swiglu"):
                kw = {}
            cfg = ffn_config(name, **kw)
            ffn = build_ffn(cfg, 64)
            cost = ffn_cost(cfg, 64)
            assert cost.params == sum(p.numel() for p in ffn.parameters())
            mixing = sum(p.numel() for n, p in ffn.named_parameters() if n in mixing_parameter_names(ffn))
            assert cost.mixing_params == mixing
    # MoA adds exactly G·K·(d+1) parameters over the same-type baseline (docs/DESIGN.md §3.2)
    d, G, K = 64, 4, 4
    assert ffn_cost(ffn_config("moa-glu", gate_groups=G), d).params - ffn_cost(ffn_config("swiglu"), d).params == G * K * (d + 1)
    assert ffn_cost(ffn_config("la-mlp"), d).params - ffn_cost(ffn_config("relu"), d).params == K
    # Type-I and Type-II at default widths have about the same parameters
    r = ffn_cost(ffn_config("swiglu"), 768).params / ffn_cost(ffn_config("relu"), 768).params
    assert 0.95 < r < 1.05
    # forward matmul FLOPs = 2 x linear parameters (+ the gate's)
    c = ffn_cost(ffn_config("moa-mlp"), d)
    assert c.matmul_flops == 2 * (2 * d * 4 * d) + 2 * d * K and c.elementwise_flops > 0


def test_mixing_parameter_groups():
    model = torch.nn.Sequential(build_ffn(ffn_config("moa-glu"), D), build_ffn(ffn_config("la-mlp"), D),
                                build_ffn(ffn_config("swiglu"), D))
    names = mixing_parameter_names(model)
    assert names == {"0.gate.weight", "0.gate.bias", "1.la_coef"}
    mixing, rest = split_mixing_parameters(model)
    assert len(mixing) == 3 and len(rest) == 2 + 3 + 3
    assert {id(p) for p in mixing}.isdisjoint({id(p) for p in rest})


def test_same_mixing_conversion_refuses_settings_that_change_the_function():
    """Copying MoA's parameters under another temperature, normalisation or grouping (or LA's
    under another granularity) computes something else: refused in one line, naming them."""
    acts = ("relu", "gelu", "silu")
    moa = build_ffn(FFNConfig(kind="glu", mixing="moa", activations=acts, hidden_dim=8), 16)
    same = convert_ffn(moa, FFNConfig(kind="glu", mixing="moa", activations=acts, hidden_dim=8))
    x = torch.randn(5, 16)
    torch.testing.assert_close(same(x), moa(x), rtol=0, atol=0)
    for change, needle in [({"temperature": 2.0}, "temperature 1.0 → 2.0"), ({"gate_norm": "sigmoid"}, "gate_norm"),
                           ({"gate_groups": 2}, "gate_groups 1 → 2")]:
        with pytest.raises(ValueError, match=needle) as exc:
            convert_ffn(moa, FFNConfig(kind="glu", mixing="moa", activations=acts, hidden_dim=8, **change))
        assert "\n" not in str(exc.value) and "would not preserve the function" in str(exc.value)
    la = build_ffn(FFNConfig(kind="mlp", mixing="la", activations=acts, hidden_dim=8), 16)
    with pytest.raises(ValueError, match="la_granularity 'layer' → 'channel'"):
        convert_ffn(la, FFNConfig(kind="mlp", mixing="la", activations=acts, hidden_dim=8, la_granularity="channel"))


def test_double_backward_through_the_fused_ops_is_a_clear_error():
    """The fused ops' backward is not itself differentiable (no gradient penalties through
    them): asking for it fails naming the reason instead of a deep autograd error."""
    acts = ("relu", "gelu", "silu")
    ffn = build_ffn(FFNConfig(kind="glu", mixing="moa", activations=acts, hidden_dim=8, impl="fused"), 16)
    z, c = torch.randn(4, 8, requires_grad=True), torch.rand(4, 1, 3, requires_grad=True)
    x = torch.randn(4, 16, requires_grad=True)
    for out, wrt in ((ffn(x), x), (mix_activations(z, c, acts), z)):  # MixProject, MixActivations
        (g,) = torch.autograd.grad(out.square().sum(), wrt, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable"):
            g.sum().backward()
