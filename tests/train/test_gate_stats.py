"""Gate statistics at every evaluation: values against formulas written out here, and the metrics.jsonl events."""

import json
import math

import pytest
import torch

from moa.config import apply_overrides
from moa.nn import build_ffn, ffn_config
from moa.presets import get_preset
from moa.train import train
from moa.train.gate_stats import ffn_statistics, gate_slice, gate_statistics

TINY = ["train.batch_size=4", "train.seq_len=32", "train.tokens=2048", "train.eval_tokens=512",
        "train.log_every=4", "train.eval_every=8"]

# the default dictionary written out (erf GELU, z·sigmoid(z)), not taken from moa.nn
CLOSED_FORMS = {
    "relu": lambda z: z.clamp(min=0),
    "gelu": lambda z: 0.5 * z * (1 + torch.erf(z / math.sqrt(2))),
    "silu": lambda z: z / (1 + torch.exp(-z)),
    "relu2": lambda z: z.clamp(min=0) ** 2,
}


def rms(t):
    return float(t.double().pow(2).mean().sqrt())


@pytest.mark.parametrize("groups", [1, 2])
def test_moa_statistics_match_a_hand_computation(groups):
    torch.manual_seed(0)
    d, n = 16, 50
    ffn = build_ffn(ffn_config("moa-glu", gate_groups=groups, temperature=0.7), d)
    with torch.no_grad():
        ffn.gate.weight.normal_(0, 2.0)
        ffn.gate.bias.normal_(0, 1.0)
    x = torch.randn(n, d)
    s = ffn_statistics(ffn, x)
    names = ffn.config.activations
    k, m = len(names), ffn.hidden_dim
    logits = ((x @ ffn.gate.weight.T + ffn.gate.bias) / 0.7).detach()
    g = torch.softmax(logits.view(n, groups, k), -1)
    assert s["gate_max_logit"] == pytest.approx(float(logits.abs().max()), rel=1e-6)
    entropy = -(g * g.log()).sum(-1).mean() / math.log(k)
    assert s["gate_entropy"] == pytest.approx(float(entropy), rel=1e-5)
    z = (x @ ffn.w1.weight.T).detach()
    for a, name in enumerate(names):
        assert s[f"gate_mean.{name}"] == pytest.approx(float(g[..., a].mean()), rel=1e-5)
        top = sum(int(g[t, j].argmax() == a) for t in range(n) for j in range(groups)) / (n * groups)
        assert s[f"gate_top1.{name}"] == pytest.approx(top)
        act = CLOSED_FORMS[name](z)
        assert s[f"rms.{name}"] == pytest.approx(rms(act), rel=1e-5)
        weight = torch.stack([g[:, j // (m // groups), a] for j in range(m)], 1)  # unit j is in group j // (m/G)
        assert s[f"mix_rms.{name}"] == pytest.approx(rms(weight * act), rel=1e-5)
    assert s["z_rms"] == pytest.approx(rms(z), rel=1e-6)
    assert sum(s[f"gate_top1.{a}"] for a in names) == pytest.approx(1.0)


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_la_statistics_are_its_coefficients(granularity):
    torch.manual_seed(1)
    ffn = build_ffn(ffn_config("la-mlp", la_granularity=granularity), 8)
    with torch.no_grad():
        ffn.la_coef.normal_()
    x = torch.randn(20, 8)
    s = ffn_statistics(ffn, x, prefix="L3.")
    coef = ffn.la_coef if granularity == "layer" else ffn.la_coef.mean(0)
    z = x @ ffn.w1.weight.T
    for a, name in enumerate(ffn.config.activations):
        assert s[f"L3.gate_mean.{name}"] == pytest.approx(float(coef[a]), rel=1e-6)
        w = ffn.la_coef[a] if granularity == "layer" else ffn.la_coef[:, a]
        assert s[f"L3.mix_rms.{name}"] == pytest.approx(rms(w * CLOSED_FORMS[name](z)), rel=1e-5)
    assert not any("entropy" in key or "logit" in key for key in s)


def test_every_evaluation_logs_gate_statistics_for_mixing_models_only(tmp_path):
    cfg = apply_overrides(get_preset("debug"), [*TINY, "model.ffn=moa-glu"])
    train(cfg, tmp_path / "moa", progress=False)
    events = [json.loads(line) for line in (tmp_path / "moa" / "metrics.jsonl").read_text().splitlines()]
    evals = [e["step"] for e in events if e["event"] == "eval"]
    gates = [e for e in events if e["event"] == "gates"]
    assert evals == [8, 16] and [e["step"] for e in gates] == evals
    for layer in (0, 1):
        assert 0 <= gates[-1][f"L{layer}.gate_entropy"] <= 1
        assert sum(gates[-1][f"L{layer}.gate_mean.{a}"] for a in CLOSED_FORMS) == pytest.approx(1.0, rel=1e-5)
        assert gates[-1][f"L{layer}.rms.relu2"] > 0
    # the logged numbers are those of the final model on the fixed slice of the first eval batch
    from moa.data import prepare_data, val_batches
    from moa.train.runs import load_run

    model, _, cfg = load_run(tmp_path / "moa")
    data = prepare_data(cfg.data)
    x = val_batches(data.val_tokens, cfg.train.seq_len, cfg.train.batch_size, cfg.train.eval_tokens)[0][0]
    again = gate_statistics(model, gate_slice(x))
    assert {k: pytest.approx(v, rel=1e-5, abs=1e-7) for k, v in again.items()} == \
        {k: v for k, v in gates[-1].items() if k not in ("event", "step", "tokens")}
    # a fixed-activation model logs none
    train(cfg.replace(model=cfg.model.replace(ffn="swiglu", vocab_size=None)), tmp_path / "swiglu", progress=False)
    assert '"gates"' not in (tmp_path / "swiglu" / "metrics.jsonl").read_text()


def test_moe_statistics_pool_every_routed_assignment():
    """An MoE layer of MoA experts: each expert's statistics on the tokens routed to it, and
    layer keys equal to the statistics of all (token, expert) assignments computed at once."""
    from moa.nn import MoE, MoEConfig
    from moa.train.gate_stats import moe_statistics

    torch.manual_seed(0)
    d, n = 16, 60
    moe = MoE(MoEConfig(num_experts=4, top_k=2, shared_experts=1, expert_hidden=24), ffn_config("moa-glu"), d)
    with torch.no_grad():
        for e in [*moe.experts, *moe.shared_experts]:
            e.gate.weight.normal_(0, 2.0)
        moe.router.weight.normal_(0, 1.0)
    x = torch.randn(n, d)
    s = moe_statistics(moe, x)
    experts_Nk = moe.route(x)[2]
    names = moe.experts[0].config.activations
    k = len(names)
    logits, gates, z_all = [], [], []
    for e, expert in enumerate(moe.experts):
        rows = (experts_Nk == e).any(-1)
        assert s[f"E{e}.share"] == pytest.approx(float(rows.sum()) / (2 * n))
        lg = (x[rows] @ expert.gate.weight.T + expert.gate.bias).detach()
        logits.append(lg)
        gates.append(torch.softmax(lg, -1))
        z_all.append((x[rows] @ expert.w1.weight.T).detach())
        if rows.any():
            ge = gates[-1]
            assert s[f"E{e}.gate_entropy"] == pytest.approx(float(-(ge * ge.log()).sum(-1).mean() / math.log(k)), rel=1e-5)
    g, lg = torch.cat(gates), torch.cat(logits)
    assert g.shape[0] == 2 * n  # every token twice: top-2
    assert s["gate_max_logit"] == pytest.approx(float(lg.abs().max()), rel=1e-6)
    assert s["gate_entropy"] == pytest.approx(float(-(g * g.log()).sum(-1).mean() / math.log(k)), rel=1e-5)
    for a, name in enumerate(names):
        assert s[f"gate_mean.{name}"] == pytest.approx(float(g[:, a].mean()), rel=1e-5)
        assert s[f"gate_top1.{name}"] == pytest.approx(float((g.argmax(-1) == a).float().mean()))
        acts = torch.cat([CLOSED_FORMS[name](z) for z in z_all])
        assert s[f"rms.{name}"] == pytest.approx(rms(acts), rel=1e-5)
        weighted = torch.cat([CLOSED_FORMS[name](z) * ge[:, a:a + 1] for z, ge in zip(z_all, gates)])
        assert s[f"mix_rms.{name}"] == pytest.approx(rms(weighted), rel=1e-5)
    assert s["z_rms"] == pytest.approx(rms(torch.cat(z_all)), rel=1e-6)
    # the shared expert sees every token
    assert s == pytest.approx({**s, **ffn_statistics(moe.shared_experts[0], x, prefix="S0.")})


def test_moe_training_logs_pooled_gate_statistics(tmp_path):
    cfg = apply_overrides(get_preset("debug"), [*TINY, "model.ffn=moa-glu", "model.moe.num_experts=4",
                                                "model.moe.top_k=2", "model.moe.expert_hidden=32"])
    train(cfg, tmp_path / "moe", progress=False)
    gates = [json.loads(line) for line in (tmp_path / "moe" / "metrics.jsonl").read_text().splitlines()
             if '"gates"' in line]
    assert [g["step"] for g in gates] == [8, 16]
    for layer in (0, 1):
        last = gates[-1]
        assert 0 <= last[f"L{layer}.gate_entropy"] <= 1
        assert sum(last[f"L{layer}.E{e}.share"] for e in range(4)) == pytest.approx(1.0)
        assert sum(last[f"L{layer}.gate_top1.{a}"] for a in CLOSED_FORMS) == pytest.approx(1.0)
