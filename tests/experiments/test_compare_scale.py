"""compare and scale: every output file, resumable sweeps, and a power-law fit that recovers its truth."""

import json
import math

import numpy as np
import pytest

from moa.cli import main
from moa.experiments.scaling_fit import bootstrap_fits, compute_multiplier, fit_power_law

TINY = ["train.batch_size=4", "train.seq_len=32", "train.tokens=2048", "train.eval_tokens=512", "train.log_every=4"]


def test_fit_recovers_known_power_law():
    n = np.geomspace(1e4, 1e7, 6)
    E, A, alpha = 1.7, 40.0, 0.31
    fit = fit_power_law(n, E + A * n ** -alpha)
    assert fit.E == pytest.approx(E, rel=1e-4) and fit.A == pytest.approx(A, rel=1e-3)
    assert fit.alpha == pytest.approx(alpha, rel=1e-4) and fit.rmse < 1e-6
    rng = np.random.default_rng(0)
    points = {float(x): list(E + A * x ** -alpha + rng.normal(0, 0.002, 3)) for x in n}
    boots = bootstrap_fits(points, samples=100)
    lo, hi = np.percentile([b.alpha for b in boots], [2.5, 97.5])
    assert lo < alpha < hi
    assert not fit.degenerate and not any(b.degenerate for b in boots)
    with pytest.raises(ValueError, match="at least 3 distinct sizes"):
        fit_power_law([1e4, 1e5], [2.0, 1.9])


def test_compute_multiplier_counts_each_variants_own_flops_and_tokens():
    from moa.experiments.scaling_fit import compute_multiplier_flops, fit_compute

    n = np.geomspace(1e4, 1e7, 5)
    base = fit_power_law(n, 1.5 + 30 * n ** -0.3)
    compute = fit_compute(n, 6 * n * 20 * n)  # 6 FLOPs per parameter and token, 20 tokens per parameter
    assert compute.beta == pytest.approx(2.0) and compute(1e5) == pytest.approx(1.2e12)
    # the same loss curve at 1.25× the FLOPs per token: the baseline needs only 1/1.25 of the variant's compute
    assert compute_multiplier_flops(base, compute, float(base(1e5)), 1.25 * 6 * 1e5 * 20 * 1e5) == pytest.approx(0.8)
    # the baseline's loss at 2N reached with the baseline's compute at N: 4× (C ∝ N²)
    assert compute_multiplier_flops(base, compute, float(base(2e5)), 6 * 1e5 * 20 * 1e5) == pytest.approx(4.0)
    # ... or with twice the tokens at N: 2×
    assert compute_multiplier_flops(base, compute, float(base(2e5)), 6 * 1e5 * 40 * 1e5) == pytest.approx(2.0)
    assert compute_multiplier_flops(base, compute, 1.4, 1.0) == math.inf  # below the baseline's floor


def test_compute_multiplier():
    n = np.geomspace(1e4, 1e7, 5)
    base = fit_power_law(n, 1.5 + 30 * n ** -0.3)
    # a variant whose loss at N equals the baseline's at 2N needs 4x the compute (C ∝ N² at fixed D/N)
    assert compute_multiplier(base, float(base(2e5)), 1e5) == pytest.approx(4.0, rel=1e-3)
    assert compute_multiplier(base, 1.4, 1e5) == math.inf  # below the baseline's floor


def test_compare_writes_everything_and_resumes_without_rerunning(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--preset", "debug", "--out", str(out), "--variants", "swiglu,moa-glu", "--seeds", "2",
            "--search-seeds", "2", "--lr-factors", "0.5,1", "--extend-edges", "0", *TINY]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "| moa-glu |" in first and "Δ loss vs swiglu [95% CI]" in first and "MDE (80% power)" in first
    for name in ("results.md", "results.json", "loss_curves.png"):
        assert (out / name).exists()
    res = json.loads((out / "results.json").read_text())
    assert res["protocol"] == 2 and res["report_seeds"] == [0, 1] and res["search_seeds"] == [1000, 1001]
    for v in ("swiglu", "moa-glu"):
        r = res["variants"][v]
        assert len(r["val_loss_per_seed"]) == 2 and set(r["lr_search"]) == {"0.005", "0.01"}
        assert r["val_loss"][1] > 0 and r["params_total"] > 0 and r["tokens_per_s"] > 0
        assert r["best_lr"] == min((float(k) for k in r["lr_search"]), key=lambda k: r["lr_search"][f"{k:.6g}"])
        # the LR is chosen on the mean over the search seeds, whose runs are never the reported ones
        for lr, per_seed in r["lr_search_per_seed"].items():
            assert r["lr_search"][lr] == pytest.approx(sum(per_seed) / 2)
        searched = {json.loads((out / d / "config.json").read_text())["seed"] for d in r["search_run_dirs"]}
        reported = {json.loads((out / d / "config.json").read_text())["seed"] for d in r["run_dirs"]}
        assert searched == {1000, 1001} and reported == {0, 1}
        assert not set(r["search_run_dirs"]) & set(r["run_dirs"])
    assert res["variants"]["swiglu"]["delta_vs_first"] is None  # the baseline has no Δ to itself
    assert res["tokens_trained"] == res["tokens"] == 2048 and res["search_tokens_trained"] == 2048
    summaries = sorted(out.glob("runs/*/*/summary.json"))
    assert len(summaries) == 2 * (2 * 2 + 2)  # per variant: 2 LRs × 2 search seeds, then 2 report seeds
    mtimes = {p: p.stat().st_mtime_ns for p in summaries}
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "  train " not in second and second.count("  reuse ") == 2 * 6
    assert {p: p.stat().st_mtime_ns for p in summaries} == mtimes
    assert json.loads((out / "results.json").read_text())["variants"] == res["variants"]
    check_paired_deltas(res, out)


def check_paired_deltas(res: dict, out=None) -> int:
    """Recompute each variant's Δ from per-seed losses (and from the runs' own summaries); returns #checked."""
    from moa.experiments.stats import paired_summary

    base = res["variants"][res["baseline"]]
    checked = 0
    for name, v in res["variants"].items():
        if res.get("protocol", 1) >= 2 and name == res["baseline"]:
            assert v["delta_vs_first"] is None
            continue
        diffs = [a - b for a, b in zip(v["val_loss_per_seed"], base["val_loss_per_seed"])]
        d = v["delta_vs_first"]
        mean = d["mean"] if isinstance(d, dict) else d[0]  # protocol-1 files store [mean, std]
        assert mean == pytest.approx(sum(diffs) / len(diffs), abs=1e-12), (name, mean, diffs)
        if isinstance(d, dict):
            assert d["per_seed"] == pytest.approx(diffs, abs=1e-12)
            assert d == pytest.approx(paired_summary(v["val_loss_per_seed"], base["val_loss_per_seed"]))
        if out is not None:  # the per-seed losses are the runs' own final losses, in seed order
            own = [json.loads((out / r / "summary.json").read_text())["final_val_loss"] for r in v["run_dirs"]]
            assert own == v["val_loss_per_seed"]
        checked += 1
    return checked


def test_committed_compare_results_have_variant_minus_baseline_deltas():
    from pathlib import Path

    results = Path(__file__).resolve().parents[2] / "docs" / "results"
    found = sorted([*results.glob("compare-*/results.json"), *results.glob("prereg-*/results.json")])
    assert len(found) >= 5, found
    for path in found:
        assert check_paired_deltas(json.loads(path.read_text()), path.parent) >= 2


def test_compare_errors(capsys, tmp_path):
    for extra, needle in [(["--variants", "swiglu,nope"], "'nope'"), (["--seeds", "0"], "seeds=0"),
                          (["--lr-factors", "1,x"], "--lr-factors"), (["--search-fraction", "2"], "search fraction"),
                          (["--search-seeds", "0"], "search_seeds=0"), (["--seeds", "1001"], "seeds=1001"),
                          (["--lr-factors", "0.5,1,1"], "0.5,1,1 list one twice")]:
        assert main(["compare", "--preset", "debug", "--out", str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err


def test_scale_writes_fit_plot_and_multipliers(tmp_path, capsys):
    out = tmp_path / "scale"
    argv = ["scale", "--preset", "debug", "--out", str(out), "--ladder", "tiny", "--sizes", "3", "--seeds", "2",
            "--tokens-per-param", "0.05", "--variants", "swiglu,moa-glu", *TINY[:2], "train.eval_tokens=512",
            "train.log_every=4"]
    assert main(argv) == 0
    assert "compute multiplier" in capsys.readouterr().out
    for name in ("scaling.json", "scaling.md", "scaling.png"):
        assert (out / name).exists()
    res = json.loads((out / "scaling.json").read_text())
    assert len(res["sizes"]) == 3
    for v in ("swiglu", "moa-glu"):
        f = res["fits"][v]
        assert len(f["points"]) == 3 and f["ci95"]["alpha"] is not None
        assert len(f["compute_multiplier_vs_baseline"]) == 3
    # tiny runs give noisy points (often no power law at all), so only the form is checked
    # here; the maths and its wiring: test_compute_multipliers_on_an_exact_power_law
    base_degenerate = res["fits"]["swiglu"]["degenerate"]
    for f in res["fits"].values():
        assert f["degenerate"] == (f["A"] <= 0 or not 1.01e-3 < f["alpha"] < 0.99 * 3.0)
        mults = f["compute_multiplier_vs_baseline"].values()
        assert all(m is None for m in mults) if base_degenerate else all(m > 0 for m in mults)
    check_scale_n_is_non_embedding(res, out)
    assert main(["scale", "--preset", "debug", "--out", str(tmp_path / "bad"), "--sizes", "2"]) == 2
    assert "sizes=2" in capsys.readouterr().err


def check_scale_n_is_non_embedding(res: dict, out) -> None:
    """The fit's N is each run's non-embedding parameter count (not total), from the runs' own records."""
    from moa.config import config_from_dict
    from moa.train.runs import describe

    for variant, entries in res["runs"].items():
        assert sorted(int(n) for n in res["fits"][variant]["points"]) == sorted(e["params_non_embedding"] for e in entries)
        for e in entries:
            for d in e["run_dirs"]:
                summary = json.loads((out / d / "summary.json").read_text())
                cfg = config_from_dict(json.loads((out / d / "config.json").read_text()))
                assert summary["params_non_embedding"] == e["params_non_embedding"] == describe(cfg)["non_embedding"]
                assert summary["params_total"] - summary["params_non_embedding"] == cfg.model.d_model * 256  # embedding
                assert e["flops_per_token"] == describe(cfg)["flops_per_token"]
                assert e["train_flops"] == 3 * e["flops_per_token"] * summary["tokens"]


def test_scale_tune_lr_searches_each_size_and_fits_on_the_best(tmp_path, capsys):
    out = tmp_path / "scale"
    argv = ["scale", "--preset", "debug", "--out", str(out), "--ladder", "tiny", "--sizes", "3", "--seeds", "1",
            "--tokens-per-param", "0.05", "--variants", "swiglu,moa-glu", "--tune-lr", "--lr-factors", "0.5,1",
            "--extend-edges", "0", *TINY[:2], "train.eval_tokens=512", "train.log_every=4"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "LR tuned per size and variant" in printed and "FLOPs/token" in printed
    res = json.loads((out / "scaling.json").read_text())
    assert res["search_seeds"] == [1000] and res["report_seeds"] == [0]
    for variant, entries in res["runs"].items():
        assert len(entries) == 3
        for e in entries:
            scores = {float(k): v for k, v in e["lr_search"].items()}
            assert set(scores) == {5e-3, 1e-2} and e["lr"] == min(scores, key=scores.get) == e["best_lr"]
            # the fitted point is the report seed's run at that best LR
            summary = json.loads((out / e["run_dirs"][0] / "summary.json").read_text())
            run_cfg = json.loads((out / e["run_dirs"][0] / "config.json").read_text())
            assert run_cfg["optim"]["lr"] == e["lr"] and run_cfg["seed"] == 0
            assert res["fits"][variant]["points"][str(e["params_non_embedding"])][0] == summary["final_val_loss"]
        searched = {json.loads(p.read_text())["seed"] for p in (out / "runs" / variant).glob("*/search/*/config.json")}
        assert searched == {1000}
    check_scale_n_is_non_embedding(res, out)
    # --jobs 2: the (size, variant) units and their runs train concurrently, with the same numbers
    assert main([*argv[:4], str(tmp_path / "jobs"), "--jobs", "2", *argv[5:]]) == 0
    par = json.loads((tmp_path / "jobs" / "scaling.json").read_text())
    assert par["runs"] == res["runs"] and par["fits"] == res["fits"]


def test_run_killed_before_its_first_checkpoint_is_restarted(tmp_path):
    from moa.config import apply_overrides
    from moa.experiments.sweep import run_or_reuse
    from moa.presets import get_preset
    from moa.train import train
    from moa.train.checkpoint import has_checkpoint

    cfg = apply_overrides(get_preset("debug"), [*TINY, "model.ffn=swiglu", "train.ckpt_every=1000"])
    run = tmp_path / "run"
    assert train(cfg, run, progress=False, stop_after=6) == {}  # "killed" at step 6: config and log, no checkpoint
    assert (run / "config.json").exists() and not has_checkpoint(run) and not (run / "summary.json").exists()
    logs = []
    r = run_or_reuse("swiglu", cfg, run, log=logs.append)
    assert logs == ["  restart swiglu (stopped before its first checkpoint)"] and not r.reused
    assert r.summary["final_val_loss"] > 0 and (run / "summary.json").exists()
    steps = [tokens for tokens, _ in r.curve("train_loss")]
    assert steps == sorted(set(steps)), "the killed attempt's log lines were not cleared"
    fresh = train(cfg, tmp_path / "fresh", progress=False)
    assert r.summary["final_val_loss"] == fresh["final_val_loss"]  # same as a run never interrupted
    other = cfg.replace(seed=cfg.seed + 1)
    (run / "summary.json").unlink()
    with pytest.raises(ValueError, match="another config"):
        run_or_reuse("swiglu", other, run, log=None)


def test_compare_extends_an_edge_and_survives_a_diverged_lr(tmp_path, capsys):
    out = tmp_path / "cmp"
    # ×1e-3 and ×2e-3 of the preset LR are far too small: the larger wins and the grid grows to ×4e-3;
    # ×1e32 makes the parameters overflow: that search run diverges and is recorded, not fatal
    argv = ["compare", "--preset", "debug", "--out", str(out), "--variants", "swiglu", "--seeds", "1",
            "--lr-factors", "0.001,0.002,1e32", "--extend-edges", "1", *TINY]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "  diverged swiglu lr=1e+30" in first
    r = json.loads((out / "results.json").read_text())["variants"]["swiglu"]
    assert r["lr_search"]["1e+30"] is None
    losses = {float(k): v for k, v in r["lr_search"].items()}
    assert len(losses) == 3 and r["best_lr"] == pytest.approx(2e-5) and not r["best_lr_on_grid_edge"]
    assert [p.parent.name for p in out.glob("runs/swiglu/*/diverged.json")] == ["lr1e+30-s1000-t2048"]
    # a grid whose best is its top gets one more step past it
    out2 = tmp_path / "cmp2"
    assert main([*argv[:4], str(out2), *argv[5:9], "--lr-factors", "0.001,0.002", *argv[11:]]) == 0
    second = capsys.readouterr().out
    assert "best LR 2e-05 is at the grid's edge; also trying 4e-05" in second
    r = json.loads((out2 / "results.json").read_text())["variants"]["swiglu"]
    assert list(r["lr_search"]) == ["1e-05", "2e-05", "4e-05"] and r["best_lr"] == pytest.approx(4e-5)
    assert r["best_lr_on_grid_edge"]  # still the top after the one extension allowed
    assert main(argv) == 0  # rerun: the diverged run is reused, nothing trains
    third = capsys.readouterr().out
    assert "  train " not in third and "reuse   swiglu lr=1e+30 seed=1000 (diverged)" in third


def test_compare_with_jobs_trains_runs_concurrently_with_the_same_results(tmp_path, capfd):
    """--jobs 2: runs train in two worker processes at once (their start-to-end intervals
    overlap) and every number equals the one-at-a-time sweep's, extension and divergence included."""
    argv = ["--preset", "debug", "--variants", "swiglu,moa-glu", "--seeds", "2", "--search-seeds", "1",
            "--lr-factors", "0.001,0.002,1e32", "--extend-edges", "1", *TINY]
    assert main(["compare", "--out", str(tmp_path / "one"), *argv]) == 0
    first = capfd.readouterr().out
    assert main(["compare", "--out", str(tmp_path / "two"), "--jobs", "2", *argv]) == 0
    second = capfd.readouterr().out  # the workers' lines too (they write to the same stdout)
    runs = len(list((tmp_path / "one").glob("runs/*/*/config.json")))
    assert first.count("  train ") == second.count("  train ") == runs >= 2 * (3 + 2)
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    for v in one["variants"].values():
        v.pop("tokens_per_s")
    for v in two["variants"].values():
        v.pop("tokens_per_s")
    assert one["variants"] == two["variants"] and list(two["variants"]) == ["swiglu", "moa-glu"]
    assert two["variants"]["moa-glu"]["lr_search"]["1e+30"] is None  # a diverged search run, recorded
    spans = sorted((p.parent.joinpath("config.json").stat().st_mtime_ns, p.stat().st_mtime_ns)
                   for p in (tmp_path / "two").glob("runs/*/*/summary.json"))
    assert any(start < prev_end for (_, prev_end), (start, _) in zip(spans, spans[1:])), spans


def test_jobs_must_be_positive(capsys, tmp_path):
    assert main(["compare", "--preset", "debug", "--out", str(tmp_path / "x"), "--jobs", "0", *TINY]) == 2
    err = capsys.readouterr().err
    assert "jobs=0" in err and "positive" in err and not (tmp_path / "x" / "runs").exists()


def test_bootstrap_resamples_every_seed_of_a_size_and_fits_their_mean(monkeypatch):
    """Like the point estimate (a fit to the seed means), each bootstrap fit sees the mean of
    S seeds drawn with replacement, not one seed (whose spread is √S times wider)."""
    import moa.experiments.scaling_fit as sf

    seen = []
    real = sf.fit_power_law
    monkeypatch.setattr(sf, "fit_power_law", lambda n, loss: seen.append(list(loss)) or real(n, loss))
    points = {1e4: [3.0, 3.2], 1e5: [2.5, 2.7], 1e6: [2.2, 2.4]}
    sf.bootstrap_fits(points, samples=60)
    for i, (lo, hi) in enumerate(points.values()):
        values = {round(x[i], 9) for x in seen}
        assert values == {lo, (lo + hi) / 2, hi}  # means of 2 draws: both low, one each, both high


def test_a_degenerate_fit_is_flagged_and_gives_no_multiplier():
    from moa.experiments.scale import scaling_table

    n = [1e4, 1e5, 1e6]
    rising = fit_power_law(n, [2.0, 2.1, 2.3])  # loss grows with size: no power law
    assert rising.A <= 0 and rising.degenerate
    assert not fit_power_law(n, [3.0, 2.5, 2.2]).degenerate

    def fit(degenerate, mult):
        return {"E": 1.0, "A": 2.0, "alpha": 0.3, "rmse": 0.01, "ci95": {"alpha": None}, "degenerate": degenerate,
                "compute_multiplier_vs_baseline": {"100": mult}}

    results = {"baseline": "swiglu", "tokens_per_param": 20, "seeds": 1, "scale_config": {},
               "fits": {"swiglu": fit(True, None), "moa-glu": fit(False, None)}}
    text = scaling_table(results)
    assert "| swiglu (degenerate fit) |" in text and "| moa-glu |" in text and "∞" not in text
    assert "no compute multipliers, as swiglu's own fit is degenerate" in text
    assert text.count("| — |") == 2


def test_reuse_accepts_the_same_lr_reached_by_other_arithmetic(tmp_path):
    """Folder names keep 3 digits of the LR; an extension's g²/g' and base × factor can land
    1 ulp apart on the same grid point: the run is reused, a different LR is still an error."""
    from moa.config import apply_overrides
    from moa.experiments.sweep import run_or_reuse
    from moa.presets import get_preset

    extended = 0.014 * 0.014 / 0.007  # a grid 0.0035·(1, 2, 4) extended once upwards
    assert extended != 0.028 and f"{extended:.3g}" == "0.028"
    cfg = apply_overrides(get_preset("debug"), [*TINY, "train.tokens=512", f"optim.lr={extended!r}"])
    first = run_or_reuse("a", cfg, tmp_path / "lr0.028", log=None)
    logs = []
    again = run_or_reuse("a", apply_overrides(cfg, ["optim.lr=0.028"]), tmp_path / "lr0.028", log=logs.append)
    assert again.reused and logs == ["  reuse   a"] and again.summary == first.summary
    with pytest.raises(ValueError, match="another config"):
        run_or_reuse("a", apply_overrides(cfg, ["optim.lr=0.0281"]), tmp_path / "lr0.028", log=None)


def test_a_report_seed_that_diverges_is_shown_not_averaged_away(tmp_path, capsys):
    """A report run that diverged (here: its records as a divergence at step 3 leaves them) is
    reused as diverged; the variant gets no mean and no Δ, the others are unaffected."""
    from moa.config import apply_overrides
    from moa.presets import get_preset
    from moa.train import train

    out = tmp_path / "cmp"
    tiny = [*TINY[:2], "train.tokens=2000", *TINY[3:]]  # 15 whole steps of 128 tokens
    cfg = apply_overrides(get_preset("debug"), [*tiny, "model.ffn=moa-glu", "seed=1"])
    bad = out / "runs" / "moa-glu" / f"lr{cfg.optim.lr:.3g}-s1-t2000"
    assert train(cfg, bad, progress=False, stop_after=3) == {}
    (bad / "diverged.json").write_text(json.dumps({"error": "loss is not finite at step 3"}))
    argv = ["compare", "--preset", "debug", "--out", str(out), "--variants", "swiglu,moa-glu", "--seeds", "2",
            "--search-seeds", "1", "--lr-factors", "1", *tiny]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reuse   moa-glu lr=0.01 seed=1 (diverged)" in printed
    res = json.loads((out / "results.json").read_text())
    moa = res["variants"]["moa-glu"]
    assert moa["diverged_seeds"] == [1] and moa["val_loss"] is None and moa["delta_vs_first"] is None
    assert moa["val_loss_per_seed"][0] > 0 and moa["val_loss_per_seed"][1] is None
    assert res["variants"]["swiglu"]["diverged_seeds"] == [] and res["variants"]["swiglu"]["val_loss"][0] > 0
    table = (out / "results.md").read_text()
    assert "| moa-glu |" in table and "diverged on seed(s) 1 | diverged on seed(s) 1 | — | — |" in table
    assert "after 1,920 tokens (2,000 asked, in whole steps of 128)" in table and "(edge)" not in table


def test_compute_multipliers_on_an_exact_power_law():
    """The scale wiring: each variant's mean loss is placed on the baseline's L(N) and C(N)
    fits and divided by the variant's own FLOPs (a cheaper or a better variant, exactly)."""
    from moa.experiments.scale import compute_multipliers

    def loss(n):
        return 1.0 + 10.0 * n ** -0.5

    def flops(n):
        return 120.0 * n * n  # 6·N FLOPs per token, 20·N tokens

    sizes = [1e4, 4e4, 1.6e5, 6.4e5]
    base = [{"params_non_embedding": n, "val_loss_per_seed": [loss(n) - 1e-3, loss(n) + 1e-3],
             "train_flops": flops(n)} for n in sizes]
    runs = {"base": base,
            # same loss at twice the FLOPs: the baseline needs half the compute
            "costly": [dict(e, train_flops=2 * e["train_flops"]) for e in base],
            # the baseline's loss at 2N for the baseline's FLOPs at N: it needs C(2N)/C(N) = 4×
            "better": [dict(e, val_loss_per_seed=[loss(2 * e["params_non_embedding"])]) for e in base]}
    fit, mult = compute_multipliers({e["params_non_embedding"]: e["val_loss_per_seed"] for e in base}, runs, "base")
    assert fit.beta == pytest.approx(2.0) and fit.log_c == pytest.approx(math.log(120.0))
    for variant, expected in (("base", 1.0), ("costly", 0.5), ("better", 4.0)):
        assert list(mult[variant]) == [str(n) for n in sizes]
        for n, m in mult[variant].items():
            assert m == pytest.approx(expected, rel=1e-3), (variant, n, m)
    # a baseline without a power law (flat losses) gives no multiplier at all
    flat = {n: [1.5, 1.5] for n in sizes}
    _, mult = compute_multipliers(flat, runs, "base")
    assert all(m is None for per in mult.values() for m in per.values())
