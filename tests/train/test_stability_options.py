"""MoA stability options (issue 14.3): a scale-normalised dictionary, a gate z-loss, a mixing-LR multiplier."""

import json
import math

import pytest
import torch
from scipy import integrate

from moa.config import apply_overrides
from moa.model import Transformer
from moa.nn import build_ffn, ffn_config, gate_z_loss
from moa.nn.activations import gaussian_rms
from moa.presets import get_preset
from moa.train import train
from moa.train.optim import build_optimizers

CLOSED_FORMS = {
    "relu": lambda z: z.clamp(min=0),
    "gelu": lambda z: 0.5 * z * (1 + torch.erf(z / math.sqrt(2))),
    "silu": lambda z: z / (1 + torch.exp(-z)),
    "relu2": lambda z: z.clamp(min=0) ** 2,
}


def test_gaussian_rms_matches_closed_forms_and_quadrature():
    assert gaussian_rms("relu") == pytest.approx(math.sqrt(0.5), rel=1e-9)
    assert gaussian_rms("relu2") == pytest.approx(math.sqrt(1.5), rel=1e-9)  # E[z⁴; z > 0] = 3/2
    assert gaussian_rms("identity") == pytest.approx(1.0, rel=1e-9)
    for name in ("gelu", "silu"):
        f = CLOSED_FORMS[name]
        second, _ = integrate.quad(lambda z: float(f(torch.tensor(z, dtype=torch.float64))) ** 2
                                   * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -math.inf, math.inf)
        assert gaussian_rms(name) == pytest.approx(math.sqrt(second), rel=1e-8)


@pytest.mark.parametrize("preset", ["moa-glu", "la-mlp"])
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_rms_dictionary_divides_each_activation_by_its_gaussian_rms(preset, impl):
    torch.manual_seed(0)
    cfg = ffn_config(preset, dictionary_scale="rms", impl=impl)
    ffn = build_ffn(cfg, 12).double()
    with torch.no_grad():
        for p in ffn.parameters():
            if p.dim() == 1 or p.shape[0] <= 4:
                p.normal_()
    if hasattr(ffn, "gate"):
        with torch.no_grad():
            ffn.gate.weight.normal_()
    x = torch.randn(7, 12, dtype=torch.float64)
    z = x @ ffn.w1.weight.T
    g = torch.softmax(x @ ffn.gate.weight.T + ffn.gate.bias, -1) if hasattr(ffn, "gate") else ffn.la_coef
    h = sum(g[..., k:k + 1] * CLOSED_FORMS[a](z) / gaussian_rms(a) for k, a in enumerate(cfg.activations))
    want = (h * (x @ ffn.w2.weight.T)) @ ffn.w3.weight.T if cfg.kind == "glu" else h @ ffn.w2.weight.T
    torch.testing.assert_close(ffn(x), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="needs init='uniform'"):
        ffn_config(preset, dictionary_scale="rms", init="relu")
    with pytest.raises(ValueError, match="dictionary_scale='max' is invalid; valid: none, rms"):
        ffn_config(preset, dictionary_scale="max")


def test_gate_z_loss_is_the_squared_logsumexp_and_is_cleared():
    torch.manual_seed(0)
    ffn = build_ffn(ffn_config("moa-glu", gate_groups=2, gate_z_loss=0.01, temperature=0.5), 8)
    with torch.no_grad():
        ffn.gate.weight.normal_()
    x = torch.randn(3, 5, 8)
    ffn(x)
    logits = (x @ ffn.gate.weight.T + ffn.gate.bias).view(3, 5, 2, 4) / 0.5
    want = 0.01 * torch.logsumexp(logits, -1).square().mean()
    torch.testing.assert_close(gate_z_loss(ffn), want)
    assert gate_z_loss(ffn) == 0.0  # taken once
    ffn.eval()
    ffn(x)
    assert gate_z_loss(ffn) == 0.0  # evaluation adds nothing
    with pytest.raises(ValueError, match="gate_z_loss=-1"):
        ffn_config("moa-glu", gate_z_loss=-1)


TINY = ["train.batch_size=4", "train.seq_len=32", "train.eval_tokens=256", "train.log_every=1", "model.ffn=moa-glu"]


def test_z_loss_trains_but_is_not_in_the_reported_loss(tmp_path):
    losses = {}
    for c in (0.0, 0.5):
        cfg = apply_overrides(get_preset("debug"), [*TINY, "train.tokens=512", f"model.gate_z_loss={c}"])
        train(cfg, tmp_path / str(c), progress=False)
        events = [json.loads(line) for line in (tmp_path / str(c) / "metrics.jsonl").read_text().splitlines()]
        losses[c] = [e["train_loss"] for e in events if e["event"] == "train"]
    assert losses[0.0][0] == losses[0.5][0]  # step 1: same model, same batch, the z-loss is not reported
    # ... but it is trained on: zero with its gradient at the uniform init (logsumexp = 0), not after a step
    assert losses[0.0][3] != losses[0.5][3]


def test_mixing_lr_multiplier_scales_only_the_gates():
    cfg = apply_overrides(get_preset("debug"), ["model.ffn=moa-glu", "model.vocab_size=256", "optim.mixing_lr_mult=0.1"])
    (opt,) = build_optimizers(Transformer(cfg.model), cfg.optim)
    lrs = {g["name"]: (g["lr"], g["base_lr"]) for g in opt.param_groups}
    assert lrs["mixing"] == (pytest.approx(cfg.optim.lr * 0.1),) * 2
    assert all(lr == (cfg.optim.lr, cfg.optim.lr) for name, lr in lrs.items() if name != "mixing")
    with pytest.raises(ValueError, match="optim.mixing_lr_mult=0"):
        apply_overrides(get_preset("debug"), ["optim.mixing_lr_mult=0"])
