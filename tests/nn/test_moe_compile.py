"""The MoE layer under torch.compile: equal to eager (forward and gradients), and the loop
dispatch compiles a bounded set of graphs instead of recompiling for every routing."""

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from moa.nn import MoE, MoEConfig, ffn_config, moe_aux_loss

D = 16


def make(expert="moa-glu", **moe):
    torch.manual_seed(0)
    cfg = MoEConfig(**{"num_experts": 4, "top_k": 2, "shared_experts": 1, "dispatch": "loop", **moe})
    layer = MoE(cfg, ffn_config(expert, hidden_dim=32), D)
    with torch.no_grad():  # a spread-out router and non-uniform gates: routing varies per batch
        for p in layer.parameters():
            p.normal_(0, 0.5)
    return layer


def step(module, layer, x):
    """Output, d(loss)/dx and parameter gradients of one forward+backward."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    y = module(x)
    loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + moe_aux_loss(layer)
    loss.backward()
    return y.detach(), [x.grad] + [p.grad.clone() for p in layer.parameters()]


def assert_same(compiled, eager, tol):
    (yc, gc), (ye, ge) = compiled, eager
    torch.testing.assert_close(yc, ye, rtol=tol, atol=tol)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("expert, top_k", [("moa-glu", 2), ("la-mlp", 1)])
def test_loop_dispatch_compiles_a_bounded_set_of_graphs(expert, top_k):
    """Ten batches with ten different per-expert row counts: after the first few batches
    no new graph is compiled (before the fix every new split recompiled, until dynamo's
    recompile limit sent the layer back to eager), and every step equals eager."""
    torch._dynamo.reset()
    layer = make(expert, top_k=top_k, renormalize=top_k > 1)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(layer, backend=counter)
    frames, splits = [], set()
    for i in range(10):
        x = torch.randn(12, D, generator=torch.Generator().manual_seed(i))
        result = step(compiled, layer, x)
        splits.add(tuple((layer.last_load * 12 * top_k).round().int().tolist()))
        assert_same(result, step(layer, layer, x), 1e-5)
        frames.append(counter.frame_count)
    assert len(splits) >= 6  # the routing really changed from batch to batch
    # router + combine, and the expert graph (shared by all experts) with torch's 0/1
    # specialisations of a block's row count and storage offset
    assert frames[-1] <= 6, frames
    assert frames[3:] == [frames[3]] * 7, frames  # nothing compiled after the first batches


def test_compiled_moe_matches_eager_inductor():
    """One inductor compile of the layer (MoA experts; kept small, CPU inductor compiles are
    slow): forward and every gradient equal eager."""
    torch._dynamo.reset()
    layer = make("moa-mlp", shared_experts=0)
    x = torch.randn(2, 8, D)
    eager = step(layer, layer, x)
    counter = CompileCounterWithBackend("inductor")
    assert_same(step(torch.compile(layer, backend=counter), layer, x), eager, 1e-4)
    assert counter.frame_count >= 1  # it really ran compiled
