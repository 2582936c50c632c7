"""The compare protocol's pieces: disjoint seeds, the LR search rule, the t interval and the detectable effect.

Formulas are checked against hand computations with t quantiles typed in from a table
(not recomputed with scipy), and the detectable effect against a simulated t test.
"""

import math

import numpy as np
import pytest

from moa.experiments.lr_search import SEARCH_SEED_BASE, extend_grid, report_seeds, search_lr, search_seeds
from moa.experiments.stats import (
    mde_t_approximation, minimum_detectable_effect, paired_summary, power_paired_t, t_interval,
)

# Student t quantiles from a printed table: t_{0.975, df} and t_{0.80, df}
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 19: 2.0930}
T80 = {2: 1.0607, 19: 0.8610}


def test_search_and_report_seeds_never_overlap():
    for n_report in (1, 3, 50, SEARCH_SEED_BASE):
        for n_search in (1, 2, 7):
            assert not set(report_seeds(n_report)) & set(search_seeds(n_search))
    assert report_seeds(3) == [0, 1, 2] and search_seeds(2) == [1000, 1001]
    with pytest.raises(ValueError, match="seeds from 1000 on are the LR search's"):
        report_seeds(SEARCH_SEED_BASE + 1)
    with pytest.raises(ValueError, match="search seeds=0"):
        search_seeds(0)


def test_t_interval_matches_hand_computation():
    d = [0.010, -0.020, 0.040]
    mean = 0.010
    sd = math.sqrt(((0.0) ** 2 + 0.03 ** 2 + 0.03 ** 2) / 2)  # = 0.03
    lo, hi = t_interval(d)
    half = T975[2] * sd / math.sqrt(3)
    assert lo == pytest.approx(mean - half, abs=2e-5) and hi == pytest.approx(mean + half, abs=2e-5)
    assert t_interval([0.3]) is None


def test_detectable_effect_matches_hand_computation_and_has_80_percent_power():
    # the textbook shortcut by hand: (t_{.975,19} + t_{.80,19}) · s / √20
    assert mde_t_approximation(0.05, 20) == pytest.approx((T975[19] + T80[19]) * 0.05 / math.sqrt(20), rel=1e-4)
    assert mde_t_approximation(0.05, 3) == pytest.approx((T975[2] + T80[2]) * 0.05 / math.sqrt(3), rel=1e-4)
    # with many seeds the exact MDE and the shortcut agree; with few the exact one is larger
    assert minimum_detectable_effect(0.05, 20) == pytest.approx(mde_t_approximation(0.05, 20), rel=2e-3)
    assert minimum_detectable_effect(0.05, 3) > 1.05 * mde_t_approximation(0.05, 3)
    # independent check: simulate the paired t test at the exact MDE, n = 3 seeds
    sd, n = 0.05, 3
    mde = minimum_detectable_effect(sd, n)
    assert power_paired_t(mde, sd, n) == pytest.approx(0.8, abs=1e-9)
    rng = np.random.default_rng(0)
    d = rng.normal(mde, sd, size=(400_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    assert (np.abs(t) > T975[2]).mean() == pytest.approx(0.8, abs=0.004)
    assert minimum_detectable_effect(0.05, 1) is None and minimum_detectable_effect(0.0, 4) == 0.0


def test_paired_summary_is_variant_minus_baseline():
    base = [2.00, 2.10, 2.05, 1.95]
    var = [1.90, 2.02, 1.96, 1.84]
    s = paired_summary(var, base)
    assert s["per_seed"] == pytest.approx([-0.10, -0.08, -0.09, -0.11])
    assert s["mean"] == pytest.approx(-0.095) and s["n"] == 4
    sd = float(np.std(s["per_seed"], ddof=1))
    assert s["std"] == pytest.approx(sd)
    assert s["ci95"] == pytest.approx([-0.095 - T975[3] * sd / 2, -0.095 + T975[3] * sd / 2], abs=1e-4)
    assert s["ci95"][1] < 0  # this variant is better on every seed, and the interval says so
    with pytest.raises(ValueError, match="same seeds"):
        paired_summary([1.0, 2.0], [1.0])


def test_lr_search_chooses_on_the_mean_over_search_seeds_and_extends_edges():
    # seed 1000 alone prefers lr 1, the mean over both seeds prefers lr 2
    table = {(1.0, 1000): 1.0, (1.0, 1001): 3.0, (2.0, 1000): 1.5, (2.0, 1001): 1.6,
             (4.0, 1000): 1.8, (4.0, 1001): 1.9}
    calls = []

    def loss(lr, seed):
        calls.append((lr, seed))
        return table[(lr, seed)]

    s = search_lr([1.0, 2.0, 4.0], loss, [1000, 1001], extend_edges=2)
    assert s.best == 2.0 and not s.best_on_edge and s.score(1.0) == 2.0
    assert sorted(calls) == sorted(table)  # every LR on every search seed, nothing else
    assert all(seed >= SEARCH_SEED_BASE for _, seed in calls)
    # a diverged seed makes its LR lose; an edge winner grows the grid (its own ratio) up to extend_edges times
    s = search_lr([1.0, 2.0], lambda lr, seed: math.inf if lr == 1.0 and seed == 1001 else 10 - lr, [1000, 1001], 2)
    assert s.grid == [1.0, 2.0, 4.0, 8.0] and s.best == 8.0 and s.best_on_edge
    j = s.to_json()
    assert j["lr_search"]["1"] is None and j["lr_search_per_seed"]["1"] == [9.0, None]
    with pytest.raises(ValueError, match="every LR of the search diverged"):
        search_lr([1.0, 2.0], lambda lr, seed: math.inf, [1000], 1)


def test_extend_grid_steps_past_a_winning_edge():
    grid = [1e-3, 2e-3, 4e-3]
    assert extend_grid(grid, {1e-3: 2.0, 2e-3: 1.9, 4e-3: 1.8}) == pytest.approx(8e-3)
    assert extend_grid(grid, {1e-3: 1.7, 2e-3: 1.9, 4e-3: 1.8}) == pytest.approx(5e-4)
    assert extend_grid(grid, {1e-3: 2.0, 2e-3: 1.7, 4e-3: 1.8}) is None
    assert extend_grid(grid, {1e-3: math.inf, 2e-3: math.inf, 4e-3: math.inf}) is None
    assert extend_grid([1e-3], {1e-3: 2.0}) is None
