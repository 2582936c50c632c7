"""moa.experiments.stability: the study's table and plot come from the runs' own records."""

import json

import pytest

from moa.config import apply_overrides
from moa.experiments.stability import main
from moa.presets import get_preset
from moa.train import train

TINY = ["train.batch_size=4", "train.seq_len=32", "train.tokens=1024", "train.eval_tokens=256",
        "train.log_every=4", "train.eval_every=4", "model.ffn=moa-glu"]


def test_stability_table_and_plot_from_run_records(tmp_path, capsys):
    for seed in (0, 1):
        cfg = apply_overrides(get_preset("debug"), [*TINY, f"seed={seed}"])
        train(cfg, tmp_path / "runs" / f"moa-glu-s{seed}", progress=False)
    (tmp_path / "runs" / "unfinished-s0").mkdir()  # no summary: skipped
    assert main([str(tmp_path)]) == 0
    text = (tmp_path / "stability.md").read_text()
    assert (tmp_path / "stability.png").stat().st_size > 0 and "unfinished" not in text
    for seed in (0, 1):
        loss = json.loads((tmp_path / "runs" / f"moa-glu-s{seed}" / "summary.json").read_text())["final_val_loss"]
        assert f"s{seed}: {loss:.4f}" in text
        gates = [json.loads(line) for line in (tmp_path / "runs" / f"moa-glu-s{seed}" / "metrics.jsonl").open()
                 if '"gates"' in line][-1]
        assert f"L1 {gates['L1.gate_entropy']:.2f}/{gates['L1.gate_max_logit']:.1f}/" in text
    assert text.strip() in capsys.readouterr().out


def test_correlation_line_is_scipy_spearman_on_the_most_collapsed_layer(tmp_path):
    from scipy.stats import spearmanr

    from moa.experiments.stability import correlation

    def run(loss, first, last):
        return {"summary": {"final_val_loss": loss}, "evals": [],
                "gates": [{"L0.gate_entropy": e0, "L1.gate_entropy": e1} for e0, e1 in (first, last)]}

    study = {"a": {0: run(1.0, (0.9, 0.2), (0.5, 0.6)), 1: run(2.0, (0.1, 0.8), (0.4, 0.3))},
             "b": {0: run(1.5, (0.3, 0.7), (0.2, 0.9)), 1: {"summary": {"final_val_loss": 9.0}, "evals": [],
                                                           "gates": []}}}  # no gates: not counted
    text = correlation(study)
    first = spearmanr([0.2, 0.1, 0.3], [1.0, 2.0, 1.5])
    last = spearmanr([0.5, 0.3, 0.2], [1.0, 2.0, 1.5])
    assert "over the 3 MoA runs" in text
    assert f"first evaluation ρ = {first.statistic:.2f} (p = {first.pvalue:.2f})" in text
    assert f"last evaluation ρ = {last.statistic:.2f} (p = {last.pvalue:.2f})" in text
    assert correlation({"a": {0: run(1.0, (0.1, 0.2), (0.1, 0.2))}}) == ""  # too few runs for a correlation
    # losses after different budgets (a compare's search and report runs) are never pooled
    for r in study["a"].values():
        r["summary"]["tokens"] = 1000
    study["b"][0]["summary"]["tokens"] = 1000
    search = {s: run(1.0 + s, (0.1 * s, 0.2), (0.3, 0.1 * s)) for s in range(3)}
    for r in search.values():
        r["summary"]["tokens"] = 500
    text = correlation({**study, "a-search": search})
    assert "over the 3 MoA runs trained for 500 tokens" in text and "over the 3 MoA runs trained for 1,000 tokens" in text
    assert f"first evaluation ρ = {first.statistic:.2f} (p = {first.pvalue:.2f})" in text.split("1,000 tokens")[1]


def test_a_compare_experiment_is_read_at_each_variants_chosen_lr(tmp_path, capsys):
    """Given a `moa compare` folder, the study takes the report runs and the search runs at
    the chosen LR only (not the other LRs of the search)."""
    from moa.cli import main as moa

    out = tmp_path / "cmp"
    assert moa(["compare", "--preset", "debug", "--out", str(out), "--variants", "swiglu,moa-glu", "--seeds", "2",
                "--search-seeds", "1", "--lr-factors", "1,2", "--extend-edges", "0", "train.batch_size=4",
                "train.seq_len=32", "train.tokens=1024", "train.eval_tokens=256", "train.eval_every=4",
                "train.log_every=4"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert main([str(out)]) == 0
    text = (out / "stability.md").read_text()
    for variant in ("swiglu", "moa-glu"):
        v = results["variants"][variant]
        row = next(line for line in text.splitlines() if line.startswith(f"| {variant} |"))
        for seed, loss in zip(results["report_seeds"], v["val_loss_per_seed"]):
            assert f"s{seed}: {loss:.4f}" in row
        search = next(line for line in text.splitlines() if line.startswith(f"| {variant}-search |"))
        best = v["lr_search_per_seed"][f"{v['best_lr']:.6g}"]
        assert search.split("|")[2].strip() == f"s1000: {best[0]:.4f}"  # the search seed at the chosen LR only
    assert "over the 3 MoA runs with gate statistics" in text  # moa-glu report + search runs
    # every LR of the search, one variant, own file name
    assert main([str(out), "--all-lrs", "--variants", "moa-glu", "--name", "moa"]) == 0
    rows = [line.split("|")[1].strip() for line in (out / "moa.md").read_text().splitlines() if line.startswith("| moa")]
    v = results["variants"]["moa-glu"]
    assert rows == ["moa-glu"] + [f"moa-glu-search-lr{float(lr):.3g}" for lr in v["lr_search_per_seed"]]
    assert (out / "moa.png").stat().st_size > 0 and (out / "stability.md").read_text() == text
    # bad --variants / --metric: one line naming the value and the valid choices
    for argv, needles in ((["--variants", "nope"], ["--variants nope", "valid: swiglu, moa-glu"]),
                          (["--metric", "nope"], ["--metric 'nope'", "z_rms"])):
        with pytest.raises(SystemExit) as e:
            main([str(out), *argv])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and all(n in err for n in needles), err


def test_la_rows_show_the_largest_coefficient_and_any_metric_plots(tmp_path):
    from moa.experiments.stability import plot, table

    gates = [{"step": s, "L0.gate_mean.relu": 0.1, "L0.gate_mean.relu2": 0.7, "L0.z_rms": z}
             for s, z in ((10, 1.0), (20, 2.0))]
    study = {"la": {0: {"summary": {"final_val_loss": 1.0}, "gates": gates,
                        "evals": [{"step": 10, "val_loss": 2.0}, {"step": 20, "val_loss": 1.0}]}}}
    text = table(study)
    assert "L0 LA relu2 0.70" in text and "Spearman" not in text  # no MoA gates: no correlation line
    plot(study, tmp_path / "z.png", "z_rms")
    assert (tmp_path / "z.png").stat().st_size > 0
