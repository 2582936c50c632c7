"""Paired comparisons over seeds: the mean difference, its t interval and the detectable effect.

For each report seed i, both variants train on the same init seed and batch order, so the
per-seed differences ``d_i = L_variant(i) − L_baseline(i)`` (negative: the variant is
better) are the unit of analysis. With n seeds, mean ``d̄`` and sample std ``s_d``:

- **95% interval**: ``d̄ ± t_{0.975, n−1} · s_d / √n`` (Student t, ``scipy.stats.t``).
- **Minimum detectable effect (MDE) at 80% power**: the smallest true mean difference
  |δ| that a two-sided paired t test at α = 0.05 rejects with probability 0.8, taking the
  observed ``s_d`` as the true std. The test statistic then follows a noncentral t with
  n − 1 degrees of freedom and noncentrality ``δ·√n / s_d``; we solve
  ``P(|T| > t_{0.975, n−1}) = 0.8`` for δ exactly (``scipy.stats.nct`` + ``brentq``).
  The textbook shortcut ``(t_{1−α/2, n−1} + t_{1−β, n−1}) · s_d/√n``
  (:func:`mde_t_approximation`) agrees for n ≳ 10 but understates the MDE for the few
  seeds a CPU affords (at n = 2 it has only 73% power), so the exact value is reported.

An effect smaller than the MDE can be missed by this experiment; a null result then says
"too few seeds", not "no effect". Neither is defined for one seed (reported as None).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

ALPHA = 0.05
POWER = 0.8


def paired_differences(variant: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per-seed ``variant − baseline`` (same seeds, same order)."""
    if len(variant) != len(baseline):
        raise ValueError(f"paired differences need the same seeds: {len(variant)} vs {len(baseline)} losses")
    return [v - b for v, b in zip(variant, baseline)]


def t_interval(diffs: Sequence[float], confidence: float = 1 - ALPHA) -> Optional[tuple[float, float]]:
    """Two-sided t interval for the mean of ``diffs`` (None for fewer than 2 values)."""
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return None
    mean, sd = _mean_sd(diffs)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


def power_paired_t(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t test at level ``alpha`` for a true mean difference ``effect``."""
    from scipy import stats

    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect * math.sqrt(n) / sd
    lower = float(stats.nct.cdf(-crit, df, nc))
    # scipy returns NaN where this tail underflows: it is below P(Z < −nc), nothing at nc ≳ 8
    return float(stats.nct.sf(crit, df, nc)) + (lower if math.isfinite(lower) else 0.0)


def minimum_detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> Optional[float]:
    """Smallest |mean difference| detected with ``power`` by the paired t test (None if n < 2).

    0 when ``sd`` is 0 (every seed gave the same difference: any effect is detected).
    """
    from scipy.optimize import brentq

    if n < 2:
        return None
    if sd == 0:
        return 0.0
    hi = mde_t_approximation(sd, n, alpha, power)
    while power_paired_t(hi, sd, n, alpha) < power:  # bracket the root: the shortcut is a lower bound here
        hi *= 2
    return float(brentq(lambda e: power_paired_t(e, sd, n, alpha) - power, 0.0, hi, xtol=1e-12 * hi, rtol=1e-12))


def mde_t_approximation(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The textbook ``(t_{1−α/2, n−1} + t_{power, n−1}) · sd / √n`` (exact only as n → ∞)."""
    from scipy import stats

    df = n - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(n))


def paired_summary(variant: Sequence[float], baseline: Sequence[float]) -> dict:
    """Mean, std, 95% t interval and 80%-power MDE of the per-seed differences, with the differences."""
    diffs = paired_differences(variant, baseline)
    mean, sd = _mean_sd(diffs)
    ci = t_interval(diffs)
    return {"mean": mean, "std": sd, "n": len(diffs), "ci95": list(ci) if ci else None,
            "mde80": minimum_detectable_effect(sd, len(diffs)), "per_seed": diffs}


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
