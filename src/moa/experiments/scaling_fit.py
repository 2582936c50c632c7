"""Fit ``L(N) = E + A·N^(−α)`` and turn fits into compute multipliers (docs/DESIGN.md §10.2).

For fixed α the model is linear in (E, A), so the fit is a 1-D search over α (a log-grid
scan refined by golden-section search) with exact least squares for E and A inside —
no optimiser dependency and no sensitivity to a starting point. Uncertainty comes from
a bootstrap that resamples, at every size, as many seeds as it has (with replacement) and
fits their means, as the point estimate fits the seed means. A fit with A ≤ 0 (loss not
falling with size) or α at an end of its search range is *degenerate*: its extrapolation,
and any compute multiplier read off it, means nothing, and callers say so.

Compute multiplier of a variant's run: the baseline must reach the variant's loss
``L_v``; its fit gives the size ``N_b = (A_b / (L_v − E_b))^(1/α_b)``. The compute the
baseline spends at size N_b is read off a power law ``C_b(N) = c·N^β`` fitted to the
baseline's own runs (training FLOPs = 3 × forward FLOPs per token × tokens, each run's
own), and the multiplier is ``C_b(N_b) / C_v``, with ``C_v`` the variant's own training
FLOPs, so a variant that spends more FLOPs per token (MoA's gate) or more tokens pays for
them (:func:`compute_multiplier_flops`). :func:`compute_multiplier` is the parameter-only
shortcut ``(N_b / N)²`` (compute ∝ N·D ∝ N² at a fixed tokens-per-parameter ratio, equal
FLOPs per parameter). Both are infinite when ``L_v ≤ E_b`` (below the baseline's floor).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLawFit:
    E: float
    A: float
    alpha: float
    rmse: float
    alpha_at_bound: bool = False

    @property
    def degenerate(self) -> bool:
        """A ≤ 0 or α at an end of its search range: no power law describes the points."""
        return self.A <= 0 or self.alpha_at_bound

    def __call__(self, n):
        return self.E + self.A * np.power(np.asarray(n, dtype=np.float64), -self.alpha)

    def size_for_loss(self, loss: float) -> float:
        if loss <= self.E:
            return math.inf
        return (self.A / (loss - self.E)) ** (1.0 / self.alpha)


def _solve(alpha: float, logn: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    x = np.exp(-alpha * logn)
    X = np.stack([np.ones_like(x), x], axis=1)
    (e, a), *_ = np.linalg.lstsq(X, y, rcond=None)
    sse = float(((X @ np.array([e, a]) - y) ** 2).sum())
    return e, a, sse


def fit_power_law(n, loss, alpha_range: tuple[float, float] = (1e-3, 3.0)) -> PowerLawFit:
    """Least-squares fit of ``E + A·N^(−α)`` to points (needs ≥ 3 distinct sizes)."""
    n = np.asarray(n, dtype=np.float64)
    y = np.asarray(loss, dtype=np.float64)
    if len(np.unique(n)) < 3:
        raise ValueError(f"a power-law fit needs at least 3 distinct sizes, got {sorted(set(n.tolist()))}")
    logn = np.log(n)
    grid = np.exp(np.linspace(np.log(alpha_range[0]), np.log(alpha_range[1]), 200))
    sse = [_solve(a, logn, y)[2] for a in grid]
    i = int(np.argmin(sse))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(80):  # golden-section refinement inside the bracketing grid cell
        m1, m2 = hi - phi * (hi - lo), lo + phi * (hi - lo)
        if _solve(m1, logn, y)[2] < _solve(m2, logn, y)[2]:
            hi = m2
        else:
            lo = m1
    alpha = (lo + hi) / 2
    e, a, s = _solve(alpha, logn, y)
    at_bound = alpha <= alpha_range[0] * 1.01 or alpha >= alpha_range[1] * 0.99
    return PowerLawFit(E=float(e), A=float(a), alpha=float(alpha), rmse=math.sqrt(s / len(y)),
                       alpha_at_bound=bool(at_bound))


def bootstrap_fits(points: dict[float, list[float]], samples: int = 200, seed: int = 0) -> list[PowerLawFit]:
    """Fits to resampled data: for every size, the mean of as many of its seeds' losses as it
    has, drawn with replacement (the point estimate fits the means of all of them)."""
    rng = random.Random(seed)
    sizes = sorted(points)
    fits = []
    for _ in range(samples):
        fits.append(fit_power_law(sizes, [float(np.mean(rng.choices(points[s], k=len(points[s])))) for s in sizes]))
    return fits


def compute_multiplier(baseline: PowerLawFit, variant_loss: float, n: float) -> float:
    """Compute the baseline needs to match ``variant_loss`` reached at size ``n`` (fixed tokens/param)."""
    return (baseline.size_for_loss(variant_loss) / n) ** 2


@dataclass(frozen=True)
class ComputeFit:
    """``C(N) = exp(log_c) · N^beta``, least squares in log–log space."""

    log_c: float
    beta: float

    def __call__(self, n: float) -> float:
        return math.exp(self.log_c + self.beta * math.log(n))


def fit_compute(n, compute) -> ComputeFit:
    """Fit ``C = c·N^β`` to (size, training FLOPs) points (needs ≥ 2 distinct sizes)."""
    logn = np.log(np.asarray(n, dtype=np.float64))
    logc = np.log(np.asarray(compute, dtype=np.float64))
    if len(np.unique(logn)) < 2:
        raise ValueError(f"a compute fit needs at least 2 distinct sizes, got {sorted(set(np.exp(logn).tolist()))}")
    beta, log_c = np.polyfit(logn, logc, 1)
    return ComputeFit(log_c=float(log_c), beta=float(beta))


def compute_multiplier_flops(baseline: PowerLawFit, baseline_compute: ComputeFit, variant_loss: float,
                             variant_compute: float) -> float:
    """Baseline training FLOPs to reach ``variant_loss`` over the variant's own ``variant_compute``."""
    n_b = baseline.size_for_loss(variant_loss)
    if math.isinf(n_b):
        return math.inf
    return baseline_compute(n_b) / variant_compute
