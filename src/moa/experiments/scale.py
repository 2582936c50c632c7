"""``scale``: FFN variants across model sizes at a fixed tokens-per-parameter ratio (docs/DESIGN.md §10.2).

Every size trains each variant with the same data and report seeds (0 … S−1) for
``tokens_per_param × non-embedding parameters of the first variant`` tokens, so all
variants at one size see the same tokens. The LR is either the preset's for every size
and variant (the default), or, with ``tune_lr``, searched per size and variant by the rule
of :mod:`moa.experiments.lr_search` (the same for all: grid ``lr_factors`` × the preset
LR, mean over ``search_seeds`` search seeds 1000+, at ``search_fraction`` of that size's
budget, edges extended) and the report seeds then train at each size's best LR.

Per variant we fit ``L(N) = E + A·N^(−α)`` with N = **non-embedding** parameters (the
embedding is a lookup, not compute; Kaplan et al., arXiv 2001.08361) and a bootstrap over
seeds, and report the compute multiplier: how much more training compute the first
variant (the baseline) needs to reach each variant's loss, with each run's own tokens and
FLOPs per token (:func:`moa.train.runs.flops_per_token`; see
:mod:`moa.experiments.scaling_fit`).

Writes ``OUT/scaling.json``, ``OUT/scaling.md``, ``OUT/scaling.png`` and one run
directory per (variant, size, seed) under ``OUT/runs`` (tuned: per LR, with the search
runs under ``…/search/``); reruns reuse finished runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moa.config import RunConfig, dumps
from moa.experiments.compare import CompareConfig
from moa.experiments.lr_search import report_seeds, search_lr, search_seeds
from moa.experiments.scaling_fit import (
    bootstrap_fits, compute_multiplier_flops, fit_compute, fit_power_law,
)
from moa.experiments.sweep import Runner, mean_std

#: (d_model, n_layers, n_heads) ladders; `scale` takes the first `sizes` entries.
LADDERS = {
    "tiny": ((16, 1, 1), (24, 2, 2), (32, 2, 2), (48, 2, 2)),
    "cpu": ((32, 2, 2), (48, 2, 2), (64, 3, 2), (96, 3, 3), (128, 4, 4)),
}
#: a training step costs about 3 forward passes (forward + backward for inputs and weights)
TRAIN_FLOPS_PER_FORWARD = 3


@dataclass(frozen=True, kw_only=True)
class ScaleConfig:
    variants: tuple[str, ...] = ("swiglu", "la-glu", "moa-glu")
    ladder: str = "cpu"
    sizes: int = 4
    tokens_per_param: float = 20.0
    seeds: int = 2
    bootstrap: int = 200
    tune_lr: bool = False
    lr_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    search_seeds: int = 1
    search_fraction: float = 0.5
    extend_edges: int = 2

    def __post_init__(self) -> None:
        CompareConfig(variants=self.variants, lr_factors=self.lr_factors, seeds=self.seeds,
                      search_seeds=self.search_seeds, search_fraction=self.search_fraction,
                      extend_edges=self.extend_edges)  # the same checks
        if self.ladder not in LADDERS:
            raise ValueError(f"ladder {self.ladder!r} is unknown; valid: {', '.join(LADDERS)}")
        if not 3 <= self.sizes <= len(LADDERS[self.ladder]):
            raise ValueError(f"sizes={self.sizes} must be between 3 and {len(LADDERS[self.ladder])} for ladder {self.ladder}")
        if not self.tokens_per_param > 0:
            raise ValueError(f"tokens per parameter {self.tokens_per_param!r} must be > 0")


def _sized(base: RunConfig, d: int, layers: int, heads: int) -> RunConfig:
    return base.replace(model=base.model.replace(d_model=d, n_layers=layers, n_heads=heads))


def _with(cfg: RunConfig, variant: str, lr: float, seed: int, tokens: int) -> RunConfig:
    return cfg.replace(model=cfg.model.replace(ffn=variant), seed=seed,
                       optim=dataclasses.replace(cfg.optim, lr=lr), train=dataclasses.replace(cfg.train, tokens=tokens))


def run_scale(base: RunConfig, sc: ScaleConfig, out_dir, progress: bool = False, log=print, jobs: int = 1) -> dict:
    """Train (or reuse) every run and write the results; ``jobs > 1`` trains that many runs
    at once (:class:`~moa.experiments.sweep.Runner`) with the same runs and results."""
    from moa.train.runs import describe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    points: dict[str, dict[int, list[float]]] = {v: {} for v in sc.variants}
    runs: dict[str, list[dict]] = {v: [] for v in sc.variants}
    sizes, units = [], []
    for d, layers, heads in LADDERS[sc.ladder][: sc.sizes]:
        sized = _sized(base, d, layers, heads)
        ref_params = describe(sized.replace(model=sized.model.replace(ffn=sc.variants[0])))["non_embedding"]
        per_step = sized.train.tokens_per_step
        tokens = max(per_step, int(sc.tokens_per_param * ref_params) // per_step * per_step)
        search_tokens = max(per_step, int(tokens * sc.search_fraction) // per_step * per_step)
        sizes.append({"d_model": d, "n_layers": layers, "n_heads": heads, "tokens": tokens,
                      **({"search_tokens": search_tokens} if sc.tune_lr else {})})
        units += [(sized, d, layers, tokens, search_tokens, variant) for variant in sc.variants]

    def one_unit(runner: Runner, sized, d, layers, tokens, search_tokens, variant) -> dict:
        where = out / "runs" / variant
        entry: dict = {"d_model": d, "n_layers": layers, "tokens": tokens}
        lr = base.optim.lr
        if sc.tune_lr:
            def final_loss(lr_: float, seed: int) -> float:
                r = runner.run(f"{variant} d={d} L={layers} lr={lr_:.3g} seed={seed}",
                               _with(sized, variant, lr_, seed, search_tokens),
                               where / f"d{d}-L{layers}" / "search" / f"lr{lr_:.3g}-s{seed}-t{search_tokens}",
                               allow_divergence=True)
                return r.summary["final_val_loss"]

            search = search_lr([base.optim.lr * f for f in sc.lr_factors], final_loss,
                               search_seeds(sc.search_seeds), sc.extend_edges, log, label=f"{variant} d={d}: ",
                               map_pairs=runner.map)
            lr = search.best
            entry.update(search.to_json())
            log(f"{variant} d={d}: best LR {lr:.3g}")

        def report(seed: int):
            name = f"d{d}-L{layers}-lr{lr:.3g}-s{seed}" if sc.tune_lr else f"d{d}-L{layers}-s{seed}"
            return runner.run(f"{variant} d={d} L={layers} lr={lr:.3g} seed={seed}",
                              _with(sized, variant, lr, seed, tokens), where / name)

        results = runner.map(report, [(seed,) for seed in report_seeds(sc.seeds)])
        r = results[-1]
        flops = describe(r.config)["flops_per_token"]
        entry.update({"lr": lr, "params_non_embedding": r.summary["params_non_embedding"],
                      "params_total": r.summary["params_total"],
                      "flops_per_token": flops, "train_flops": TRAIN_FLOPS_PER_FORWARD * flops * tokens,
                      "val_loss_per_seed": [x.summary["final_val_loss"] for x in results],
                      "run_dirs": [str(x.run_dir.relative_to(out)) for x in results]})
        return entry

    with Runner(jobs, progress, log) as runner:
        entries = runner.map(lambda *u: one_unit(runner, *u), units)
    for unit, entry in zip(units, entries):  # sizes in ladder order, variants in the given order
        runs[unit[-1]].append(entry)
        points[unit[-1]][entry["params_non_embedding"]] = entry["val_loss_per_seed"]
    fits = {}
    for variant, pts in points.items():
        ns = sorted(pts)
        fit = fit_power_law(ns, [float(np.mean(pts[n])) for n in ns])
        boots = bootstrap_fits(pts, sc.bootstrap) if sc.seeds > 1 else []
        ci = {k: [float(np.percentile([getattr(b, k) for b in boots], q)) for q in (2.5, 97.5)] if boots else None
              for k in ("E", "A", "alpha")}
        fits[variant] = {"E": fit.E, "A": fit.A, "alpha": fit.alpha, "rmse": fit.rmse, "ci95": ci,
                         "degenerate": fit.degenerate, "points": {str(n): mean_std(v) for n, v in sorted(pts.items())}}
    base_name = sc.variants[0]
    base_compute, multipliers = compute_multipliers(points[base_name], runs, base_name)
    for variant in sc.variants:
        fits[variant]["compute_multiplier_vs_baseline"] = multipliers[variant]
    results = {"baseline": base_name, "sizes": sizes, "tokens_per_param": sc.tokens_per_param, "seeds": sc.seeds,
               "report_seeds": report_seeds(sc.seeds), "search_seeds": search_seeds(sc.search_seeds) if sc.tune_lr else [],
               "baseline_compute_fit": {"log_c": base_compute.log_c, "beta": base_compute.beta},
               "fits": fits, "runs": runs, "base_config": json.loads(dumps(base)),
               "scale_config": dataclasses.asdict(sc)}
    (out / "scaling.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "scaling.md").write_text(scaling_table(results) + "\n")
    plot_scaling(points, fits, out / "scaling.png")
    return results


def compute_multipliers(base_points: dict, runs: dict, base_name: str):
    """(the baseline's C(N) fit, {variant: {str(N): multiplier}}) for every variant in ``runs``.

    ``base_points`` maps the baseline's sizes N to its per-seed final losses; ``runs`` maps a
    variant to its entries (``params_non_embedding``, ``val_loss_per_seed``, ``train_flops``).
    A multiplier is the baseline's training FLOPs to reach the variant's mean loss (on the
    baseline's fitted L(N) and C(N)) over the variant's own FLOPs; None for every variant
    when the baseline's fit is degenerate (it would read as ∞× or 0×).
    """
    ns = sorted(base_points)
    base_fit = fit_power_law(ns, [float(np.mean(base_points[n])) for n in ns])
    base_compute = fit_compute([e["params_non_embedding"] for e in runs[base_name]],
                               [e["train_flops"] for e in runs[base_name]])
    return base_compute, {
        variant: {str(e["params_non_embedding"]): None if base_fit.degenerate else compute_multiplier_flops(
            base_fit, base_compute, float(np.mean(e["val_loss_per_seed"])), e["train_flops"]) for e in entries}
        for variant, entries in runs.items()}


def scaling_table(results: dict) -> str:
    base = results["baseline"]
    sc = results["scale_config"]
    if sc.get("tune_lr"):
        lr_note = (f"LR tuned per size and variant (×{', ×'.join(f'{f:g}' for f in sc['lr_factors'])} of the preset "
                   f"LR, edges extended up to {sc['extend_edges']} time(s), mean over search seed(s) "
                   f"{', '.join(map(str, results['search_seeds']))} at {sc['search_fraction']:g} of each size's tokens)")
    else:
        lr_note = "the preset's LR at every size (not tuned per size)"
    lines = [f"L(N) = E + A·N^(−α), N = non-embedding parameters; {results['tokens_per_param']:g} tokens/parameter; "
             f"{results['seeds']} report seed(s); {lr_note}. Compute multiplier = training FLOPs {base} needs to reach "
             f"the variant's loss ÷ the variant's own training FLOPs (3 × FLOPs/token × tokens); > 1: the variant "
             f"is more compute-efficient. Last column: at the largest size.", "",
             "| variant | E | A | α | α 95% CI | fit RMSE | compute multiplier |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, f in results["fits"].items():
        ci = f["ci95"]["alpha"]
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "— (1 seed)"
        mult = list(f["compute_multiplier_vs_baseline"].values())[-1]
        mark = " (degenerate fit)" if f.get("degenerate") else ""
        lines.append(f"| {name}{mark} | {f['E']:.4f} | {f['A']:.4g} | {f['alpha']:.3f} | {ci_s} | {f['rmse']:.4f} | "
                     f"{_times(mult)} |")
    if any(f.get("degenerate") for f in results["fits"].values()):
        lines += ["", "(degenerate fit): A ≤ 0 or α at an end of its search range, so no power law describes the "
                      "points and α is no scaling exponent"
                      + (f"; no compute multipliers, as {base}'s own fit is degenerate" if results["fits"][base].get(
                          "degenerate") else "") + "."]
    if "runs" in results:
        lines += ["", "| variant | d, L | non-emb params | FLOPs/token | tokens | LR | val loss | compute multiplier |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for name, entries in results["runs"].items():
            mults = results["fits"][name]["compute_multiplier_vs_baseline"]
            for e in entries:
                m, sd = mean_std(e["val_loss_per_seed"])
                edge = " (edge)" if e.get("best_lr_on_grid_edge") else ""
                lines.append(f"| {name} | {e['d_model']}, {e['n_layers']} | {e['params_non_embedding']:,} | "
                             f"{e['flops_per_token']:,} | {e['tokens']:,} | {e['lr']:.3g}{edge} | {m:.4f} ± {sd:.4f} | "
                             f"{_times(mults[str(e['params_non_embedding'])])} |")
    return "\n".join(lines)


def _times(mult) -> str:
    if mult is None:
        return "—"
    return "∞" if mult == float("inf") else f"{mult:.2f}×"


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
