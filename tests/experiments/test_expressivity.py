"""The expressivity experiment: the hierarchy comes out of training, outputs are complete."""

import argparse
import json
import math

import pytest
import torch

from moa.cli import expressivity as cli
from moa.experiments.expressivity import (
    FIXED_VARIANTS, METRICS, PLOT, REPORT, RESULTS, VARIANTS, make_data, make_teacher, run_expressivity,
    write_report,
)
from moa.nn import build_ffn, ffn_config

TINY = dict(widths=[16], seeds=2, steps=800, samples=512)  # ~17 s; margins measured: A ~170x, B ~40x


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("expressivity") / "run"
    return out, run_expressivity(out, **TINY)


def test_hierarchy_holds_with_margin(tiny):
    _, res = tiny
    s = res["summary"]
    la_a, moa_a = s["A"]["la-mlp"]["16"]["mean"], s["A"]["moa-mlp"]["16"]["mean"]
    best_fixed_a = min(s["A"][v]["16"]["mean"] for v in FIXED_VARIANTS)
    assert 10 * la_a < best_fixed_a, (la_a, best_fixed_a)
    assert 10 * moa_a < best_fixed_a, (moa_a, best_fixed_a)  # MoA contains LA
    la_b, moa_b = s["B"]["la-mlp"]["16"]["mean"], s["B"]["moa-mlp"]["16"]["mean"]
    assert 10 * moa_b < la_b, (moa_b, la_b)
    assert res["verdicts"]["A"]["held"] and res["verdicts"]["B"]["held"]
    assert "held at every width" in res["verdicts"]["A"]["line"]


def test_numbers_come_from_training(tiny):
    out, res = tiny
    assert len(res["runs"]) == 2 * len(VARIANTS) * 1 * 2
    curves = {}
    for line in (out / METRICS).read_text().splitlines():
        c = json.loads(line)
        curves[c["target"], c["variant"], c["width"], c["seed"]] = c["curve"]
    for r in res["runs"]:
        assert math.isfinite(r["floor"]) and 0 < r["floor"] <= r["final"] + 1e-12 and not r["diverged"]
        assert math.isfinite(r["test_mse"])
        # the numbers are the recorded loss curve's: it ends at the final loss, never dips
        # below the floor, and training at least halved the loss it started from
        curve = curves[r["target"], r["variant"], r["width"], r["seed"]]
        assert curve[-1] == [TINY["steps"], r["final"]] and curve[0][0] == 0
        assert r["floor"] <= min(v for _, v in curve) and r["floor"] < 0.5 * curve[0][1], r
    # the summary is the mean over seeds of these floors
    for t in ("A", "B"):
        for v in VARIANTS:
            floors = [r["floor"] for r in res["runs"] if (r["target"], r["variant"]) == (t, v)]
            assert len(floors) == 2 and math.isclose(res["summary"][t][v]["16"]["mean"], sum(floors) / 2)
    # relu/gelu/silu have a linear odd part, so they cannot beat the least-squares bound
    bounds = {(b["target"], b["seed"]): b["odd_bound"] for b in res["bounds"]}
    for r in res["runs"]:
        if r["variant"] in ("relu", "gelu", "silu"):
            assert r["floor"] >= bounds[r["target"], r["seed"]] * (1 - 1e-3), r


def test_outputs_exist_and_round_trip(tiny):
    out, res = tiny
    for name in (RESULTS, REPORT, PLOT, METRICS, "config.json", "environment.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with open(out / RESULTS) as f:
        assert json.load(f) == json.loads(json.dumps(res))
    curves = [json.loads(line) for line in (out / METRICS).read_text().splitlines()]
    assert len(curves) == len(res["runs"]) and all(c["curve"] for c in curves)
    md = (out / REPORT).read_text()
    (out / REPORT).unlink()
    (out / PLOT).unlink()
    assert write_report(out) == md  # the report is computed from results.json alone
    assert (out / PLOT).is_file()
    assert "## Target A" in md and "## Target B" in md and "| la-mlp |" in md
    with pytest.raises(ValueError, match="already holds"):
        run_expressivity(out, **TINY)


def test_odd_part_of_relu_gelu_silu_is_linear():
    x = make_data(8, 64, torch.Generator().manual_seed(0)).double()
    for v in VARIANTS:
        f = build_ffn(ffn_config(v, hidden_dim=16), 8).double()
        with torch.no_grad():
            odd = (f(x[:32]) - f(x[32:])) / 2
            gap = (odd - x[:32] @ (f.w2.weight @ f.w1.weight).T / 2).abs().max().item()
        assert (gap < 1e-12) == (v in ("relu", "gelu", "silu")), (v, gap)


def test_teachers_are_the_library_layers():
    g = torch.Generator().manual_seed(0)
    x = make_data(8, 256, g)
    la = make_teacher("A", 8, 8, 8.0, torch.Generator().manual_seed(1))
    moa = make_teacher("B", 8, 8, 8.0, torch.Generator().manual_seed(1))
    assert type(la).__name__ == "LAFFN" and type(moa).__name__ == "MoAFFN"
    with torch.no_grad():
        gates = moa.mixing_weights(x)[:, 0]  # (N, K)
        names = moa.config.activations
        relu, relu2 = gates[:, names.index("relu")], gates[:, names.index("relu2")]
        assert torch.allclose(relu + relu2, torch.ones_like(relu), atol=1e-6)
        assert relu.min() < 0.05 and relu.max() > 0.95  # token-dependent switch
        moa.gate.weight.zero_()  # without the token-dependent part, B is A (containment)
        assert torch.allclose(moa(x), la(x), atol=1e-5)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(widths=[0]), "width=0"), (dict(widths=[]), "widths=[]"), (dict(widths=[8, 8]), "distinct"),
    (dict(widths=["8"]), "width='8'"), (dict(steps=0), "steps=0"), (dict(seeds=0), "seeds=0"),
    (dict(seeds=[1, -1]), "seed=-1"), (dict(lr=-1.0), "lr=-1.0"), (dict(lr=float("nan")), "lr=nan"),
    (dict(samples=7), "samples=7"), (dict(d_model=0), "d_model=0"), (dict(teacher_width=0), "teacher_width=0"),
])
def test_bad_options(tmp_path, kwargs, needle):
    with pytest.raises(ValueError) as exc:
        run_expressivity(tmp_path / "r", **kwargs)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg, msg
    assert not (tmp_path / "r").exists()  # nothing written on a bad option


def _parse(argv):
    parser = argparse.ArgumentParser(prog="moa")
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["expressivity", *argv])


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.run(_parse(["--out", str(out), "--widths", "16", "--seeds", "1", "--steps", "20",
                           "--samples", "64", "--quiet"])) == 0
    text = capsys.readouterr().out
    assert "## Target A" in text and "target B:" in text and (out / PLOT).is_file()
    for argv, needle in [(["--widths", "8,x"], "--widths='x'"), (["--steps", "many"], "--steps='many'"),
                         (["--lr", "fast"], "--lr='fast'"), (["--seeds", "0"], "seeds=0")]:
        with pytest.raises(ValueError) as exc:
            cli.run(_parse(["--out", str(tmp_path / "bad"), *argv]))
        assert needle in str(exc.value), str(exc.value)
