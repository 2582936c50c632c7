"""``scale``: FFN variants across model sizes at a fixed tokens-per-parameter ratio (MOA.md §8).

Every size trains each variant with the same data, seeds and LR (the preset's: a per-size
LR search is out of budget on a CPU; say so when you quote results), for
``tokens_per_param × non-embedding parameters of the first variant`` tokens, so all
variants at one size see the same tokens. Per variant we fit ``L(N) = E + A·N^(−α)``
(N = non-embedding parameters) with a bootstrap over seeds, and report the compute
multiplier: how much more compute the first variant (the baseline) needs to reach each
variant's loss (see :mod:`moa.experiments.scaling_fit`).

Writes ``OUT/scaling.json``, ``OUT/scaling.md``, ``OUT/scaling.png`` and one run
directory per (variant, size, seed) under ``OUT/runs``; reruns reuse finished runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moa.config import RunConfig, dumps
from moa.experiments.compare import CompareConfig
from moa.experiments.scaling_fit import bootstrap_fits, compute_multiplier, fit_power_law
from moa.experiments.sweep import mean_std, run_or_reuse

#: (d_model, n_layers, n_heads) ladders; `scale` takes the first `sizes` entries.
LADDERS = {
    "tiny": ((16, 1, 1), (24, 2, 2), (32, 2, 2), (48, 2, 2)),
    "cpu": ((32, 2, 2), (48, 2, 2), (64, 3, 2), (96, 3, 3), (128, 4, 4)),
}


@dataclass(frozen=True, kw_only=True)
class ScaleConfig:
    variants: tuple[str, ...] = ("swiglu", "la-glu", "moa-glu")
    ladder: str = "cpu"
    sizes: int = 4
    tokens_per_param: float = 20.0
    seeds: int = 2
    bootstrap: int = 200

    def __post_init__(self) -> None:
        CompareConfig(variants=self.variants)  # same variant checks
        if self.ladder not in LADDERS:
            raise ValueError(f"ladder {self.ladder!r} is unknown; valid: {', '.join(LADDERS)}")
        if not 3 <= self.sizes <= len(LADDERS[self.ladder]):
            raise ValueError(f"sizes={self.sizes} must be between 3 and {len(LADDERS[self.ladder])} for ladder {self.ladder}")
        if not self.tokens_per_param > 0:
            raise ValueError(f"tokens per parameter {self.tokens_per_param!r} must be > 0")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds={self.seeds!r} must be a positive integer")


def _sized(base: RunConfig, d: int, layers: int, heads: int) -> RunConfig:
    return base.replace(model=base.model.replace(d_model=d, n_layers=layers, n_heads=heads))


def run_scale(base: RunConfig, sc: ScaleConfig, out_dir, progress: bool = False, log=print) -> dict:
    from moa.train.runs import describe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    points: dict[str, dict[int, list[float]]] = {v: {} for v in sc.variants}
    sizes = []
    for d, layers, heads in LADDERS[sc.ladder][: sc.sizes]:
        sized = _sized(base, d, layers, heads)
        ref_params = describe(sized.replace(model=sized.model.replace(ffn=sc.variants[0])))["non_embedding"]
        per_step = sized.train.tokens_per_step
        tokens = max(per_step, int(sc.tokens_per_param * ref_params) // per_step * per_step)
        sizes.append({"d_model": d, "n_layers": layers, "n_heads": heads, "tokens": tokens})
        for variant in sc.variants:
            for seed in range(sc.seeds):
                cfg = sized.replace(model=sized.model.replace(ffn=variant), seed=seed,
                                    train=dataclasses.replace(sized.train, tokens=tokens))
                r = run_or_reuse(f"{variant} d={d} L={layers} seed={seed}", cfg,
                                 out / "runs" / variant / f"d{d}-L{layers}-s{seed}", progress, log)
                n = r.summary["params_non_embedding"]
                points[variant].setdefault(n, []).append(r.summary["final_val_loss"])
    fits = {}
    for variant, pts in points.items():
        ns = sorted(pts)
        fit = fit_power_law(ns, [float(np.mean(pts[n])) for n in ns])
        boots = bootstrap_fits(pts, sc.bootstrap) if sc.seeds > 1 else []
        ci = {k: [float(np.percentile([getattr(b, k) for b in boots], q)) for q in (2.5, 97.5)] if boots else None
              for k in ("E", "A", "alpha")}
        fits[variant] = {"E": fit.E, "A": fit.A, "alpha": fit.alpha, "rmse": fit.rmse, "ci95": ci,
                         "points": {str(n): mean_std(v) for n, v in sorted(pts.items())}}
    base_name = sc.variants[0]
    base_fit = fit_power_law(sorted(points[base_name]), [float(np.mean(points[base_name][n])) for n in sorted(points[base_name])])
    for variant, pts in points.items():
        mult = {str(n): compute_multiplier(base_fit, float(np.mean(v)), n) for n, v in sorted(pts.items())}
        fits[variant]["compute_multiplier_vs_baseline"] = mult
    results = {"baseline": base_name, "sizes": sizes, "tokens_per_param": sc.tokens_per_param, "seeds": sc.seeds,
               "fits": fits, "base_config": json.loads(dumps(base)), "scale_config": dataclasses.asdict(sc)}
    (out / "scaling.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "scaling.md").write_text(scaling_table(results) + "\n")
    plot_scaling(points, fits, out / "scaling.png")
    return results


def scaling_table(results: dict) -> str:
    base = results["baseline"]
    lines = [f"L(N) = E + A·N^(−α), N = non-embedding parameters; {results['tokens_per_param']:g} tokens/parameter; "
             f"{results['seeds']} seed(s); compute multiplier = compute {base} needs to match the variant's loss "
             f"(at the largest size).", "",
             "| variant | E | A | α | α 95% CI | fit RMSE | compute multiplier |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, f in results["fits"].items():
        ci = f["ci95"]["alpha"]
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "— (1 seed)"
        mult = list(f["compute_multiplier_vs_baseline"].values())[-1]
        lines.append(f"| {name} | {f['E']:.4f} | {f['A']:.4g} | {f['alpha']:.3f} | {ci_s} | {f['rmse']:.4f} | "
                     f"{'∞' if mult == float('inf') else f'{mult:.2f}×'} |")
    return "\n".join(lines)


def plot_scaling(points, fits, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    for variant, pts in points.items():
        ns = np.array(sorted(pts), dtype=float)
        means = [np.mean(pts[n]) for n in sorted(pts)]
        stds = [np.std(pts[n], ddof=1) if len(pts[n]) > 1 else 0.0 for n in sorted(pts)]
        line = ax.errorbar(ns, means, yerr=stds, fmt="o", capsize=3, label=variant)
        f = fits[variant]
        grid = np.geomspace(ns.min() * 0.8, ns.max() * 1.25, 100)
        ax.plot(grid, f["E"] + f["A"] * grid ** (-f["alpha"]), "-", color=line[0].get_color(), alpha=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels on a narrow log axis overlap
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("non-embedding parameters")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title("scaling at a fixed tokens-per-parameter ratio")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
