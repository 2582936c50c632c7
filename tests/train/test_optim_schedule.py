"""Optimizer parameter groups and LR schedules."""

import math

import pytest
import torch

from moa.config import OptimConfig, ScheduleConfig
from moa.model import ModelConfig, Transformer
from moa.train.optim import build_optimizers, param_groups
from moa.train.schedule import lr_multiplier


def model(ffn="moa-glu", tie=True):
    return Transformer(ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, ffn=ffn, tie_embeddings=tie))


@pytest.mark.parametrize("ffn", ["moa-glu", "la-mlp"])
@pytest.mark.parametrize("opt_name", ["adamw", "muon"])
def test_param_groups(ffn, opt_name):
    m = model(ffn, tie=False)
    opts = build_optimizers(m, OptimConfig(name=opt_name, weight_decay=0.1))
    seen = {}
    for opt in opts:
        for g in opt.param_groups:
            for p in g["params"]:
                assert id(p) not in seen, "a parameter in two groups"
                seen[id(p)] = (type(opt).__name__, g["name"], g["weight_decay"])
    assert len(seen) == len(list(m.parameters()))
    for name, p in m.named_parameters():
        kind, group, wd = seen[id(p)]
        is_mixing = name.endswith(("la_coef", "gate.weight", "gate.bias"))
        if is_mixing or p.dim() < 2:  # gates, LA, norms: never decayed, never Muon
            assert (kind, wd) == ("AdamW", 0.0), name
            assert group == ("mixing" if is_mixing else "no_decay")
        elif name.startswith(("embed", "head")):
            assert (kind, group, wd) == ("AdamW", "embedding", 0.1), name
        else:  # hidden matrices
            assert group == "hidden" and wd == 0.1
            assert kind == ("Muon" if opt_name == "muon" else "AdamW"), name
    assert any(g == "mixing" for _, g, _ in seen.values())


def test_tied_embedding_counted_once():
    m = model(tie=True)
    groups = param_groups(m)
    emb = [n for n, _ in groups["embedding"]]
    assert emb == ["embed.weight"]


def test_muon_step_updates_hidden_matrices():
    """A hidden matrix takes torch.optim.Muon's step (not only the weight decay, which alone
    would also change it) with the config's lr, momentum and decay."""
    cfg = OptimConfig(name="muon")
    m = model()
    opts = build_optimizers(m, cfg)
    w1 = m.blocks[0].ffn.w1.weight
    muon = [o for o in opts if type(o).__name__ == "Muon"]
    assert len(muon) == 1 and any(p is w1 for g in muon[0].param_groups for p in g["params"])
    x = torch.randint(0, 64, (2, 8))
    m(x).float().square().mean().backward()
    ref = torch.nn.Parameter(w1.detach().clone())
    ref.grad = w1.grad.clone()
    torch.optim.Muon([ref], lr=cfg.lr, momentum=cfg.muon_momentum, weight_decay=cfg.weight_decay,
                     adjust_lr_fn="match_rms_adamw").step()
    decayed = w1.detach() * (1 - cfg.lr * cfg.weight_decay)
    for o in opts:
        o.step()
    assert torch.equal(w1.detach(), ref.detach())
    assert (w1.detach() - decayed).abs().max() > 0.1 * cfg.lr  # more than the decay: an orthogonalised step


def test_schedules():
    total = 100
    cos = ScheduleConfig(name="cosine", warmup=0.1, min_lr_ratio=0.1)
    assert lr_multiplier(0, total, cos) == pytest.approx(0.1)
    assert lr_multiplier(9, total, cos) == pytest.approx(1.0)
    assert lr_multiplier(10, total, cos) == pytest.approx(1.0)
    mid = 10 + 45
    assert lr_multiplier(mid, total, cos) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(100, total, cos) == pytest.approx(0.1)
    wsd = ScheduleConfig(name="wsd", warmup=0.1, decay=0.2, min_lr_ratio=0.0)
    assert [lr_multiplier(s, total, wsd) for s in (10, 50, 79)] == [1.0, 1.0, 1.0]
    assert lr_multiplier(80, total, wsd) == pytest.approx(1 - 1 / 20)
    assert lr_multiplier(99, total, wsd) == pytest.approx(0.0)
    const = ScheduleConfig(name="constant", warmup=0.0)
    assert {lr_multiplier(s, total, const) for s in range(total)} == {1.0}
