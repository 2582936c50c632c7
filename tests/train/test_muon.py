"""moa's Muon on one process is torch.optim.Muon, bit for bit (its FSDP2 path: tests/distributed)."""

import copy

import pytest
import torch

from moa.train.muon import Muon, zeropower_via_newtonschulz

SHAPES = [(6, 4), (4, 6), (5, 5), (1, 7)]  # tall (transposed inside), wide, square, a single row


def run(opt_cls, dtype, steps=4, shapes=SHAPES, **kw):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
    opt = opt_cls(params, **kw)
    for step in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
        if step == 2:
            params[1].grad = None  # a parameter without a gradient is skipped: no decay, no momentum
        opt.step()
    return params, opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", [
    {},
    {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.9, "nesterov": False, "adjust_lr_fn": "original"},
    {"lr": 0.01, "weight_decay": 0.0, "adjust_lr_fn": "match_rms_adamw", "ns_steps": 3},
    # lr·(0.2·√9) ≠ (lr·0.2)·√9 in the last bit: the per-matrix scale must be torch's product order
    {"lr": 0.02, "weight_decay": 0.1, "adjust_lr_fn": "match_rms_adamw", "shapes": [(9, 4), (3, 2)]},
])
def test_equals_torch_muon_bit_for_bit(dtype, kw):
    ours, opt = run(Muon, dtype, **kw)
    ref, ref_opt = run(torch.optim.Muon, dtype, **kw)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    for a, b in zip(ours, ref):
        assert torch.equal(opt.state[a]["momentum_buffer"], ref_opt.state[b]["momentum_buffer"])


def test_state_dict_is_torch_muon_layout():
    """A checkpoint written with torch.optim.Muon resumes in moa's Muon and continues identically."""
    ref, ref_opt = run(torch.optim.Muon, torch.float64, steps=2, lr=0.02)
    ours = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    opt = Muon(ours, lr=0.02)
    opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))  # load_state_dict shares tensors
    for a, b in zip(ours, ref):
        a.grad = b.grad = torch.full_like(a, 0.3)
    opt.step()
    ref_opt.step()
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


def test_newton_schulz_orthogonalises():
    """Singular values land in the quintic's band around 1 (~[0.7, 1.2]), whatever the input scale."""
    g = torch.randn(16, 8, dtype=torch.float64) * 1e3
    s = torch.linalg.svdvals(zeropower_via_newtonschulz(g).double())
    assert s.min() > 0.6 and s.max() < 1.25, s


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="match_rms_adamw"):
        Muon([torch.nn.Parameter(torch.zeros(3, 3))], adjust_lr_fn="rms")
