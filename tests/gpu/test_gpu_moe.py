"""MoE on CUDA: the grouped-GEMM dispatch equals the per-expert loop (bf16 autocast)."""

import pytest
import torch

from moa.nn import FFNConfig, MoE, MoEConfig, moe_reference_forward

pytestmark = pytest.mark.gpu

DICT = ("relu", "gelu", "silu", "relu2")
EXPERTS = {
    "swiglu": FFNConfig(kind="glu", mixing="fixed", activations=("silu",), hidden_dim=128),
    "la-glu": FFNConfig(kind="glu", mixing="la", activations=DICT, hidden_dim=128),
    "moa-glu": FFNConfig(kind="glu", mixing="moa", activations=DICT, hidden_dim=128, gate_groups=2),
    "moa-mlp": FFNConfig(kind="mlp", mixing="moa", activations=DICT, hidden_dim=128),
}
D = 64


def rel_err(a, b) -> float:
    a, b = a.detach().float(), b.detach().float()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def _layer(ffn, dispatch, device):
    torch.manual_seed(0)
    layer = MoE(MoEConfig(num_experts=8, top_k=2, shared_experts=1, dispatch=dispatch), EXPERTS[ffn], D)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return layer.to(device)


def _grads(layer, x):
    x = x.detach().clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        y = layer(x)
    weight = torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)
    params = list(layer.parameters())
    grads = torch.autograd.grad((y.float() * weight).sum(), [x, *params], allow_unused=True)
    return y, [torch.zeros_like(t) if g is None else g for g, t in zip(grads, [x, *params])]


@pytest.mark.parametrize("ffn", list(EXPERTS))
def test_grouped_gemm_matches_loop(ffn, device):
    loop, grouped = _layer(ffn, "loop", device), _layer(ffn, "grouped", device)
    x = torch.randn(512 if device.type == "cuda" else 32, D, device=device)
    if device.type == "cuda":
        auto = _layer(ffn, "auto", device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert auto._use_grouped(x)  # auto takes the grouped GEMM on CUDA (sm90+)
    (yg, gg), (yl, gl) = _grads(grouped, x), _grads(loop, x)
    assert rel_err(yg, yl) < 2e-2
    names = ["x"] + [n for n, _ in loop.named_parameters()]
    for name, a, b in zip(names, gg, gl):
        assert rel_err(a, b) < 3e-2 or b.norm() < 1e-6, name
    # and the loop path itself (fp32) against the per-token reference
    with torch.no_grad():
        torch.testing.assert_close(loop(x), moe_reference_forward(loop, x), rtol=1e-4, atol=1e-4)
