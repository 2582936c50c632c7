"""What the trainer hands the optimizer and what it reports, checked where no invariance
hides an error: AdamW and gradient clipping are scale-invariant, so equal losses after
training would not notice a gradient off by the accumulation factor. These tests take the
``.grad`` of every parameter at the first optimizer step (float64, clipping off) instead.
"""

import pytest
import torch

from moa.train import loop, train
from moa.train.records import read_metrics


def _first_step(cfg, out, monkeypatch):
    """Run one optimizer step; return ({name: grad at the step}, logged step-1 train_loss)."""
    grads = {}
    real_build = loop.build_optimizers

    def build(model, optim_cfg, **kwargs):
        optimizers = real_build(model, optim_cfg, **kwargs)
        first, real_step = optimizers[0], optimizers[0].step

        def step(*args, **kwargs):  # the first optimizer steps first: every .grad is final
            if not grads:
                grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
            return real_step(*args, **kwargs)

        first.step = step
        return optimizers

    monkeypatch.setattr(loop, "build_optimizers", build)
    train(cfg, out, progress=False, stop_after=1)
    (event,) = [e for e in read_metrics(out) if e["event"] == "train"]
    assert event["step"] == 1
    return grads, event["train_loss"]


@pytest.mark.parametrize("micro", [2, 4])
def test_accumulated_grad_equals_full_batch_grad(micro, tmp_path, tiny, monkeypatch):
    """8 sequences as 8/micro micro-batches give the full-batch gradient and loss."""
    base = ("train.dtype=float64", "optim.grad_clip=0")
    full, full_loss = _first_step(tiny(*base, steps=2), tmp_path / "full", monkeypatch)
    accum, accum_loss = _first_step(tiny(*base, f"train.micro_batch_size={micro}", steps=2), tmp_path / "acc",
                                    monkeypatch)
    assert full and set(accum) == set(full)
    assert all(g.dtype == torch.float64 for g in full.values())
    for name, g in full.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(accum[name], g, rtol=1e-9, atol=1e-13, msg=name)
    assert accum_loss == pytest.approx(full_loss, rel=1e-12)


def test_moe_reported_loss_excludes_balance_losses(tmp_path, tiny, monkeypatch):
    """README: the balance losses are trained but not in the reported loss. At step 1 the
    model is the same for any coefficient, so the logged loss must be identical, while
    the router gradient (the losses are trained) must differ."""
    moe = ("model.moe.num_experts=4", "model.moe.balance=aux", "train.dtype=float64", "optim.grad_clip=0")
    off, loss_off = _first_step(tiny(*moe, "model.moe.aux_coef=0", "model.moe.z_coef=0", steps=2),
                                tmp_path / "off", monkeypatch)
    on, loss_on = _first_step(tiny(*moe, "model.moe.aux_coef=0.5", "model.moe.z_coef=0.5", steps=2),
                              tmp_path / "on", monkeypatch)
    assert loss_on == loss_off
    routers = [n for n in off if "router" in n]
    assert routers, sorted(off)
    assert all(not torch.allclose(on[n], off[n], rtol=1e-6, atol=0) for n in routers)
