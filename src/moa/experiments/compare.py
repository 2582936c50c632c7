"""``compare``: FFN variants on identical data, token budget and seeds, each LR-tuned (MOA.md §8).

Protocol (the same for every variant, so the comparison is fair):

1. LR search: each variant trains at ``base_lr × f`` for every factor f of a small log
   grid, seed 0, at ``search_fraction`` of the token budget; the best final val loss wins.
   While the best LR is at an end of the grid, the grid grows one step (its own ratio)
   past that end, up to ``extend_edges`` times, so every variant's optimum is bracketed
   by the same rule. A search run that diverges counts as an infinite loss (recorded as
   ``null``), not as a crash of the sweep.
2. Final: the best LR at the full budget with seeds 0 … S-1. A seed sets both the init
   and the data order, so for a given seed every variant sees exactly the same batches.
3. Report per variant: parameters, best LR (and the whole search), final val loss and
   bits per byte as mean ± std over seeds, the paired delta vs the first variant (mean ±
   std of the per-seed differences), and tokens/s. Nothing is dropped: every seed counts.

Layout: ``OUT/runs/<variant>/lr<lr>-s<seed>-t<tokens>/`` (one training run each),
``OUT/results.json``, ``OUT/results.md``, ``OUT/loss_curves.png``. Re-running the same
command reuses finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from moa.config import RunConfig, dumps
from moa.experiments.sweep import RunResult, mean_std, run_or_reuse
from moa.nn import FFN_PRESETS

DEFAULT_VARIANTS = ("swiglu", "la-glu", "moa-glu", "relu", "la-mlp", "moa-mlp")


@dataclass(frozen=True, kw_only=True)
class CompareConfig:
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    lr_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    seeds: int = 2
    search_fraction: float = 1.0
    extend_edges: int = 2

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("variants is empty; give FFN presets, e.g. swiglu,moa-glu")
        for v in self.variants:
            if v not in FFN_PRESETS:
                raise ValueError(f"unknown variant {v!r}; valid: {', '.join(FFN_PRESETS)}")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants {','.join(self.variants)} list one twice")
        if not self.lr_factors or any(not f > 0 for f in self.lr_factors):
            raise ValueError(f"lr factors {self.lr_factors} must be positive numbers")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds={self.seeds!r} must be a positive integer")
        if not 0 < self.search_fraction <= 1:
            raise ValueError(f"search fraction {self.search_fraction!r} must be in (0, 1]")
        if not isinstance(self.extend_edges, int) or self.extend_edges < 0:
            raise ValueError(f"extend_edges={self.extend_edges!r} must be a non-negative integer")


def _run_cfg(base: RunConfig, variant: str, lr: float, seed: int, tokens: int) -> RunConfig:
    return base.replace(model=base.model.replace(ffn=variant), optim=dataclasses.replace(base.optim, lr=lr),
                        train=dataclasses.replace(base.train, tokens=tokens), seed=seed)


def _dir(out: Path, variant: str, lr: float, seed: int, tokens: int) -> Path:
    return out / "runs" / variant / f"lr{lr:.3g}-s{seed}-t{tokens}"


def extend_grid(grid: list[float], search: dict[float, float]) -> Optional[float]:
    """The next LR to try when the best of ``search`` sits at an end of the sorted ``grid``, else None."""
    if len(grid) < 2:
        return None
    best = min(search, key=search.get)
    if not math.isfinite(search[best]):
        return None
    if best == grid[-1]:
        return grid[-1] * grid[-1] / grid[-2]
    if best == grid[0]:
        return grid[0] * grid[0] / grid[1]
    return None


def run_compare(base: RunConfig, cc: CompareConfig, out_dir, progress: bool = False, log=print) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    full = base.train.tokens
    search_tokens = max(base.train.tokens_per_step, int(full * cc.search_fraction))
    lrs = [base.optim.lr * f for f in cc.lr_factors]
    variants: dict[str, dict] = {}
    finals: dict[str, list[RunResult]] = {}
    for variant in cc.variants:
        log(f"{variant}: LR search over {', '.join(f'{lr:.3g}' for lr in lrs)} at {search_tokens:,} tokens")
        search: dict[float, float] = {}

        def try_lr(lr: float) -> None:
            r = run_or_reuse(f"{variant} lr={lr:.3g} seed=0", _run_cfg(base, variant, lr, 0, search_tokens),
                             _dir(out, variant, lr, 0, search_tokens), progress, log, allow_divergence=True)
            search[lr] = r.summary["final_val_loss"]

        grid = sorted(lrs)
        for lr in grid:
            try_lr(lr)
        for _ in range(cc.extend_edges):
            nxt = extend_grid(grid, search)
            if nxt is None:
                break
            log(f"{variant}: best LR {min(search, key=search.get):.3g} is at the grid's edge; also trying {nxt:.3g}")
            grid = sorted([*grid, nxt])
            try_lr(nxt)
        best = min(search, key=search.get)
        if not math.isfinite(search[best]):
            raise ValueError(f"{variant}: every LR of the search diverged ({', '.join(f'{lr:.3g}' for lr in grid)}); "
                             f"lower --lr-factors")
        log(f"{variant}: best LR {best:.3g}; {cc.seeds} seed(s) at {full:,} tokens")
        finals[variant] = [run_or_reuse(f"{variant} lr={best:.3g} seed={s}", _run_cfg(base, variant, best, s, full),
                                        _dir(out, variant, best, s, full), progress, log) for s in range(cc.seeds)]
        variants[variant] = {"best_lr": best,
                             "lr_search": {f"{lr:.6g}": (search[lr] if math.isfinite(search[lr]) else None)
                                           for lr in grid},
                             "best_lr_on_grid_edge": best in (grid[0], grid[-1]) and len(grid) > 1}
    first = cc.variants[0]
    for variant, runs in finals.items():
        losses = [r.summary["final_val_loss"] for r in runs]
        bpbs = [r.summary["final_val_bpb"] for r in runs]
        deltas = [a - b for a, b in zip(losses, [r.summary["final_val_loss"] for r in finals[first]])]
        s0 = runs[0].summary
        variants[variant].update({
            "params_total": s0["params_total"], "params_non_embedding": s0["params_non_embedding"],
            "params_active": s0.get("params_active", s0["params_total"]),
            "val_loss": mean_std(losses), "val_bpb": mean_std(bpbs), "val_loss_per_seed": losses,
            "delta_vs_first": mean_std(deltas), "tokens_per_s": mean_std([r.summary["tokens_per_s"] for r in runs])[0],
            "run_dirs": [str(r.run_dir.relative_to(out)) for r in runs],
        })
    results = {"baseline": first, "variants": variants, "seeds": cc.seeds, "tokens": full,
               "search_tokens": search_tokens, "lr_factors": list(cc.lr_factors), "base_config": json.loads(dumps(base)),
               "compare_config": dataclasses.asdict(cc)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = results_table(results)
    (out / "results.md").write_text(table + "\n")
    plot_curves(finals, out / "loss_curves.png")
    return results


def results_table(results: dict) -> str:
    first = results["baseline"]
    moe = any(v.get("params_active", v["params_total"]) != v["params_total"] for v in results["variants"].values())
    lines = [f"Final validation loss after {results['tokens']:,} tokens, mean ± std over {results['seeds']} seed(s); "
             f"LR tuned per variant over ×{', ×'.join(f'{f:g}' for f in results['lr_factors'])} "
             f"at {results['search_tokens']:,} tokens"
             f"{_extension_note(results)}.", "",
             f"| variant | params |{' active |' if moe else ''} non-emb | best LR | val loss (nats) | val bpb | "
             f"Δ loss vs {first} | tokens/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if moe else "")]
    for name, v in results["variants"].items():
        (l, ls), (b, bs), (d, ds) = v["val_loss"], v["val_bpb"], v["delta_vs_first"]
        edge = " (edge)" if v["best_lr_on_grid_edge"] else ""
        pm = (lambda m, sd: f"{m:.4f} ± {sd:.4f}") if results["seeds"] > 1 else (lambda m, sd: f"{m:.4f} (1 seed)")
        delta = "—" if name == first else (f"{d:+.4f} ± {ds:.4f}" if results["seeds"] > 1 else f"{d:+.4f}")
        active = f" {v.get('params_active', v['params_total']):,} |" if moe else ""
        lines.append(f"| {name} | {v['params_total']:,} |{active} {v['params_non_embedding']:,} | {v['best_lr']:.3g}{edge} | "
                     f"{pm(l, ls)} | {pm(b, bs)} | {delta} | {v['tokens_per_s']:,.0f} |")
    lines.append("")
    lines.append("(edge): the best LR is at the end of the search grid even after extending it; widen "
                 "`--lr-factors` to be sure it is tuned.")
    lines.append("")
    lines.append("LR search (final val loss at seed 0; — = diverged):")
    lines.append("")
    for name, v in results["variants"].items():
        cells = [f"{float(lr):.3g}: {'—' if loss is None else f'{loss:.4f}'}" for lr, loss in v["lr_search"].items()]
        lines.append(f"- {name}: {', '.join(cells)}")
    return "\n".join(lines)


def _extension_note(results: dict) -> str:
    n = results.get("compare_config", {}).get("extend_edges", 0)
    return f", the grid extended past an edge that wins up to {n} time(s)" if n else ""


def plot_curves(finals: dict[str, list[RunResult]], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(11, 4))
    ax_t, ax_v = fig.subplots(1, 2)
    for variant, runs in finals.items():
        for ax, key, style in ((ax_t, "train_loss", "-"), (ax_v, "val_loss", "o-")):
            curves = [r.curve(key) for r in runs]
            n = min(len(c) for c in curves)
            if n == 0:
                continue
            xs = [t for t, _ in curves[0][:n]]
            ys = [sum(c[i][1] for c in curves) / len(curves) for i in range(n)]
            ax.plot(xs, ys, style, label=variant, markersize=3)
    for ax, title in ((ax_t, "train loss (mean over seeds)"), (ax_v, "validation loss (mean over seeds)")):
        ax.set_xlabel("tokens")
        ax.set_ylabel("nats/token")
        ax.set_title(title)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
