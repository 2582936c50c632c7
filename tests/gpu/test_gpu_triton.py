"""impl="triton" on CUDA: compiled kernels vs the reference in fp32, fp64 and bf16 autocast,
``auto`` picks Triton, and torch.compile of a Triton FFN equals eager."""

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from moa.nn import FFNConfig, build_ffn
from moa.nn import ffn as ffn_module
from moa.nn.triton_mix import kernel_codes, mix_backward_reference, mix_forward_reference

pytestmark = pytest.mark.gpu

DICT = ("relu", "gelu", "silu", "relu2")
CASES = [
    dict(kind="glu", mixing="moa", activations=DICT, gate_groups=1),
    dict(kind="glu", mixing="moa", activations=DICT, gate_groups=4, gate_norm="sigmoid"),
    dict(kind="mlp", mixing="moa", activations=DICT, gate_groups=4, gate_norm="none"),
    dict(kind="glu", mixing="la", activations=DICT, la_granularity="layer"),
    dict(kind="glu", mixing="la", activations=DICT, la_granularity="channel"),
]


def rel_err(a, b) -> float:
    a, b = a.detach().float(), b.detach().float()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def _sizes(device):
    """(tokens, d_model, hidden): realistic on CUDA, tiny for the CPU interpreter."""
    return (4096, 256, 680) if device.type == "cuda" else (24, 16, 20)  # 680 = 4 groups of 170: masked tiles


def _pair(case, d, m, device, impl="triton"):
    torch.manual_seed(0)
    fast = build_ffn(FFNConfig(**case, hidden_dim=m, impl=impl), d).to(device)
    with torch.no_grad():
        for name, p in fast.named_parameters():
            if "gate" in name or "la_coef" in name:
                p.normal_(0, 0.5)  # non-uniform gates
    ref = build_ffn(FFNConfig(**case, hidden_dim=m, impl="reference"), d).to(device)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def _step(ffn, x, autocast=False):
    x = x.detach().clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        y = ffn(x)
    grads = torch.autograd.grad(y.float().square().mean(), [x, *ffn.parameters()])
    return y.detach(), grads


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['mixing']}-{c['kind']}-" + str(c.get("gate_groups", c.get("la_granularity"))))
def test_triton_matches_reference_fp32(case, device):
    n, d, m = _sizes(device)
    fast, ref = _pair(case, d, m, device)
    x = torch.randn(n, d, device=device)
    (y, g), (y_ref, g_ref) = _step(fast, x), _step(ref, x)
    assert rel_err(y, y_ref) < 1e-5
    for (name, _), a, b in zip([("x", None), *fast.named_parameters()], g, g_ref):
        assert rel_err(a, b) < 1e-4, name


@pytest.mark.parametrize("case", CASES[:3], ids=["moa-glu-G1", "moa-glu-G4", "moa-mlp-G4"])
def test_triton_bf16_autocast_at_least_as_accurate_as_fused(case, device):
    """bf16 autocast vs the fp32 reference: the Triton op (fp32 math inside) is within the
    error of the fused eager op (bf16 elementwise math) plus a margin."""
    n, d, m = _sizes(device)
    fast, ref = _pair(case, d, m, device)
    fused, _ = _pair(case, d, m, device, impl="fused")
    x = torch.randn(n, d, device=device)
    y_ref, g_ref = _step(ref, x)
    (y_t, g_t), (y_f, g_f) = _step(fast, x, autocast=True), _step(fused, x, autocast=True)
    # Triton's CPU interpreter truncates fp32 -> bf16 (CUDA rounds to nearest): there the
    # comparison with the fused op does not hold, only the absolute bounds
    compare = device.type == "cuda"
    assert y_t.dtype == torch.bfloat16
    assert rel_err(y_t, y_ref) < 2e-2
    assert not compare or rel_err(y_t, y_ref) <= 1.25 * rel_err(y_f, y_ref) + 2e-3
    names = ["x", *(name for name, _ in fast.named_parameters())]
    for name, a, b, c in zip(names, g_t, g_ref, g_f):  # the input's gradient too
        assert a.dtype == torch.float32, name
        assert rel_err(a, b) < 3e-2, name
        assert not compare or rel_err(a, b) <= 1.25 * rel_err(c, b) + 2e-3, name


@pytest.mark.parametrize("layout", ["moa", "la-channel"])
def test_kernels_float64_exact(layout, device):
    """The compiled kernels in fp64 equal the fp64 reference to rounding (fp64 math on GPU)."""
    n, m, g = (1000, 300, 4) if device.type == "cuda" else (9, 20, 4)
    gen = torch.Generator().manual_seed(0)
    z, v, gp = (torch.randn(n, m, generator=gen, dtype=torch.float64).to(device) for _ in range(3))
    c = torch.randn((n, g, 4) if layout == "moa" else (1, m, 4), generator=gen, dtype=torch.float64).to(device)
    from moa.nn import triton_kernels as tk

    codes = kernel_codes(DICT)
    torch.testing.assert_close(tk.mix_forward(z, c, v, codes), mix_forward_reference(z, c, v, DICT),
                               rtol=1e-12, atol=1e-12)
    got = tk.mix_backward(z, c, v, gp.clone(), codes)
    want = mix_backward_reference(z, c, v, gp, DICT)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_auto_uses_triton_on_cuda(device, monkeypatch):
    calls = []
    real = ffn_module.mix_project_triton

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ffn_module, "mix_project_triton", counting)
    ffn = build_ffn(FFNConfig(kind="glu", mixing="moa", activations=DICT, hidden_dim=64), 32).to(device)
    assert ffn.config.impl == "auto"
    ffn(torch.randn(8, 32, device=device))
    assert len(calls) == (1 if device.type == "cuda" else 0)  # CPU: auto is the fused path


def test_compiled_triton_ffn_matches_eager_bf16(device):
    """torch.compile(fullgraph=True): the custom op is one opaque call in the graph."""
    n, d, m = _sizes(device)
    fast, _ = _pair(CASES[1], d, m, device)
    x = torch.randn(n, d, device=device)
    y, g = _step(fast, x, autocast=True)
    counter = CompileCounterWithBackend("inductor")
    yc, gc = _step(torch.compile(fast, backend=counter, fullgraph=True), x, autocast=True)
    assert counter.frame_count == 1  # it really ran compiled
    assert rel_err(yc, y) < 1e-2
    for a, b in zip(gc, g):
        assert rel_err(a, b) < 2e-2
