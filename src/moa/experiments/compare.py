"""``compare``: FFN variants on identical data, token budget and seeds, each LR-tuned (docs/DESIGN.md §10.1).

Protocol (the same for every variant, so the comparison is fair; protocol 2 of
``docs/RESULTS.md``):

1. LR search (:mod:`moa.experiments.lr_search`): each variant trains at ``base_lr × f``
   for every factor f of a small log grid, on ``search_seeds`` *search seeds*
   (1000, 1001, …), at ``search_fraction`` of the token budget; the LR with the lowest
   mean final val loss over the search seeds wins. While it sits at an end of the grid
   the grid grows one step past that end, up to ``extend_edges`` times. A search run that
   diverges scores +∞ (recorded as ``null``) instead of stopping the sweep.
2. Report: the chosen LR at the full budget on the *report seeds* 0 … S−1, which no
   search run uses, so the min over the grid is never what is reported. A seed sets both
   the init and the data order: for a given seed every variant sees the same batches.
3. Per variant: parameters, chosen LR (and the whole search), final val loss and bits per
   byte as mean ± std over the report seeds, the paired Δ vs the first variant (the
   baseline) with its 95% t interval and the minimum effect detectable at 80% power
   (:mod:`moa.experiments.stats`), and tokens/s. Nothing is dropped: every seed counts; a
   report run that diverges at the chosen LR is recorded and shown as diverged (no mean
   and no Δ for that variant: a mean over the surviving seeds would hide it).

Layout: ``OUT/runs/<variant>/lr<lr>-s<seed>-t<tokens>/`` (one training run each),
``OUT/results.json`` (search and report seeds recorded separately), ``OUT/results.md``,
``OUT/loss_curves.png``. Re-running the same command reuses finished runs and resumes
interrupted ones.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from moa.config import RunConfig, dumps
from moa.experiments.lr_search import SEARCH_SEED_BASE, report_seeds, search_lr, search_seeds
from moa.experiments.stats import paired_summary
from moa.experiments.sweep import Runner, RunResult, mean_std
from moa.nn import FFN_PRESETS
from moa.train.records import format_rate

DEFAULT_VARIANTS = ("swiglu", "la-glu", "moa-glu", "relu", "la-mlp", "moa-mlp")
#: version of the protocol above written into results.json; files without it used protocol 1
#: (LR chosen on seed 0 at the full budget and that same run reported)
PROTOCOL = 2


@dataclass(frozen=True, kw_only=True)
class CompareConfig:
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    lr_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    seeds: int = 3  # report seeds 0 … seeds−1
    search_seeds: int = 2  # LR chosen on the mean over seeds 1000 … 1000+search_seeds−1
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
        if len(set(self.lr_factors)) != len(self.lr_factors):
            raise ValueError(f"lr factors {','.join(f'{f:g}' for f in self.lr_factors)} list one twice")
        if not isinstance(self.seeds, int) or not 1 <= self.seeds <= SEARCH_SEED_BASE:
            raise ValueError(f"seeds={self.seeds!r} must be an integer in 1..{SEARCH_SEED_BASE}")
        if not isinstance(self.search_seeds, int) or self.search_seeds < 1:
            raise ValueError(f"search_seeds={self.search_seeds!r} must be a positive integer")
        if not 0 < self.search_fraction <= 1:
            raise ValueError(f"search fraction {self.search_fraction!r} must be in (0, 1]")
        if not isinstance(self.extend_edges, int) or self.extend_edges < 0:
            raise ValueError(f"extend_edges={self.extend_edges!r} must be a non-negative integer")


def _run_cfg(base: RunConfig, variant: str, lr: float, seed: int, tokens: int) -> RunConfig:
    return base.replace(model=base.model.replace(ffn=variant), optim=dataclasses.replace(base.optim, lr=lr),
                        train=dataclasses.replace(base.train, tokens=tokens), seed=seed)


def _dir(out: Path, variant: str, lr: float, seed: int, tokens: int) -> Path:
    return out / "runs" / variant / f"lr{lr:.3g}-s{seed}-t{tokens}"


def run_compare(base: RunConfig, cc: CompareConfig, out_dir, progress: bool = False, log=print,
                jobs: int = 1) -> dict:
    """Run (or reuse) every run of the protocol and write the results files.

    ``jobs > 1`` trains that many runs at once in worker processes (:class:`Runner`): the
    variants, the LR grid and the seeds proceed concurrently; every run is the same as with
    ``jobs=1``, so are the results.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    full = base.train.tokens
    search_tokens = max(base.train.tokens_per_step, int(full * cc.search_fraction))
    lrs = [base.optim.lr * f for f in cc.lr_factors]
    s_seeds, r_seeds = search_seeds(cc.search_seeds), report_seeds(cc.seeds)

    def one_variant(runner: Runner, variant: str) -> tuple[dict, list[RunResult]]:
        log(f"{variant}: LR search over {', '.join(f'{lr:.3g}' for lr in lrs)} at {search_tokens:,} tokens, "
            f"search seed(s) {', '.join(map(str, s_seeds))}")

        def final_loss(lr: float, seed: int) -> float:
            d = _dir(out, variant, lr, seed, search_tokens)
            r = runner.run(f"{variant} lr={lr:.3g} seed={seed}", _run_cfg(base, variant, lr, seed, search_tokens),
                           d, allow_divergence=True)
            return r.summary["final_val_loss"]

        search = search_lr(lrs, final_loss, s_seeds, cc.extend_edges, log, label=f"{variant}: ",
                           map_pairs=runner.map)
        best = search.best
        log(f"{variant}: best LR {best:.3g}; report seed(s) {', '.join(map(str, r_seeds))} at {full:,} tokens")
        finals = runner.map(lambda s: runner.run(f"{variant} lr={best:.3g} seed={s}",
                                                 _run_cfg(base, variant, best, s, full),
                                                 _dir(out, variant, best, s, full), allow_divergence=True),
                            [(s,) for s in r_seeds])
        # in the order tried (the grid, then each extension), whatever order the runs finished in
        search_dirs = [str(_dir(out, variant, lr, s, search_tokens).relative_to(out))
                       for lr in search.losses for s in s_seeds]
        return {**search.to_json(), "search_run_dirs": search_dirs}, finals

    with Runner(jobs, progress, log) as runner:
        done = runner.map(lambda v: one_variant(runner, v), [(v,) for v in cc.variants])
    variants: dict[str, dict] = {v: d[0] for v, d in zip(cc.variants, done)}
    finals: dict[str, list[RunResult]] = {v: d[1] for v, d in zip(cc.variants, done)}
    first = cc.variants[0]
    base_diverged = any(_diverged(r) for r in finals[first])
    base_losses = [r.summary["final_val_loss"] for r in finals[first]]
    for variant, runs in finals.items():
        diverged = [s for s, r in zip(r_seeds, runs) if _diverged(r)]
        losses = [None if _diverged(r) else r.summary["final_val_loss"] for r in runs]
        bpbs = [None if _diverged(r) else r.summary["final_val_bpb"] for r in runs]
        counts = next((r.summary for r in runs if not _diverged(r)), None)
        if counts is None:  # every report seed diverged: the counts from the config
            from moa.train.runs import describe

            d = describe(runs[0].config)
            counts = {"params_total": d["total"], "params_non_embedding": d["non_embedding"], "params_active": d["active"]}
        rates = [r.summary["tokens_per_s"] for r in runs if r.summary.get("tokens_per_s")]
        variants[variant].update({
            "params_total": counts["params_total"], "params_non_embedding": counts["params_non_embedding"],
            "params_active": counts.get("params_active", counts["params_total"]),
            "val_loss": None if diverged else mean_std(losses), "val_bpb": None if diverged else mean_std(bpbs),
            "val_loss_per_seed": losses, "val_bpb_per_seed": bpbs, "diverged_seeds": diverged,
            # none for the baseline itself, and none where either side diverged on some seed
            "delta_vs_first": (None if variant == first or diverged or base_diverged
                               else paired_summary(losses, base_losses)),
            "tokens_per_s": mean_std(rates)[0] if rates else None,
            "run_dirs": [str(r.run_dir.relative_to(out)) for r in runs],
        })
    per_step = base.train.tokens_per_step
    results = {"protocol": PROTOCOL, "baseline": first, "variants": variants, "seeds": cc.seeds,
               "report_seeds": r_seeds, "search_seeds": s_seeds, "tokens": full, "search_tokens": search_tokens,
               # what the runs trained: the budget in whole steps
               "tokens_trained": full // per_step * per_step, "search_tokens_trained": search_tokens // per_step * per_step,
               "tokens_per_step": per_step,
               "lr_factors": list(cc.lr_factors), "base_config": json.loads(dumps(base)),
               "compare_config": dataclasses.asdict(cc)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = results_table(results)
    (out / "results.md").write_text(table + "\n")
    plot_curves({v: [r for r in runs if not _diverged(r)] for v, runs in finals.items()}, out / "loss_curves.png")
    return results


def _diverged(run: RunResult) -> bool:
    return "diverged" in run.summary


def results_table(results: dict) -> str:
    """The Markdown table of a protocol-2 ``results.json``."""
    first = results["baseline"]
    n = results["seeds"]
    moe = any(v.get("params_active", v["params_total"]) != v["params_total"] for v in results["variants"].values())
    lines = [f"Final validation loss after {_tokens(results, '')} on report seed(s) {_seeds(results['report_seeds'])}, "
             f"mean ± std over {n} seed(s). LR tuned per variant over ×{', ×'.join(f'{f:g}' for f in results['lr_factors'])} "
             f"on the mean over search seed(s) {_seeds(results['search_seeds'])} (disjoint from the report seeds) "
             f"at {_tokens(results, 'search_')}{_extension_note(results)}.", "",
             f"| variant | params |{' active |' if moe else ''} non-emb | best LR | val loss (nats) | val bpb | "
             f"Δ loss vs {first} [95% CI] | MDE (80% power) | tokens/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if moe else "")]
    for name, v in results["variants"].items():
        d = v["delta_vs_first"]
        edge = " (edge)" if v["best_lr_on_grid_edge"] else ""
        pm = (lambda m, sd: f"{m:.4f} ± {sd:.4f}") if n > 1 else (lambda m, sd: f"{m:.4f} (1 seed)")
        if v.get("diverged_seeds"):
            loss = bpb = f"diverged on seed(s) {', '.join(map(str, v['diverged_seeds']))}"
        else:
            loss, bpb = pm(*v["val_loss"]), pm(*v["val_bpb"])
        if name == first or d is None:
            delta, mde = "—", "—"
        elif d["ci95"] is None:
            delta, mde = f"{d['mean']:+.4f} (1 seed: no interval)", "—"
        else:
            delta = f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
            mde = f"{d['mde80']:.4f}"
        active = f" {v.get('params_active', v['params_total']):,} |" if moe else ""
        lines.append(f"| {name} | {v['params_total']:,} |{active} {v['params_non_embedding']:,} | {v['best_lr']:.3g}{edge} | "
                     f"{loss} | {bpb} | {delta} | {mde} | {format_rate(v['tokens_per_s'])} |")
    lines += ["",
              f"Δ: per report seed, variant − {first} (negative: the variant is better); 95% CI: Student t over the "
              f"{n} paired seed(s). MDE: the smallest true Δ a two-sided paired t test (α = 0.05) detects with 80% "
              f"power given the observed paired std; a |Δ| below it may go undetected with this many seeds.",
              *_edge_note(results),
              "",
              f"LR search (mean final val loss over search seed(s) {_seeds(results['search_seeds'])} at "
              f"{_tokens(results, 'search_')}; — = diverged):",
              ""]
    for name, v in results["variants"].items():
        cells = [f"{float(lr):.3g}: {'—' if loss is None else f'{loss:.4f}'}" for lr, loss in v["lr_search"].items()]
        lines.append(f"- {name}: {', '.join(cells)}")
    return "\n".join(lines)


def _seeds(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _tokens(results: dict, prefix: str) -> str:
    """``N tokens``: what the runs trained, and the requested budget where whole steps cut it."""
    asked, trained = results[f"{prefix}tokens"], results.get(f"{prefix}tokens_trained")
    if trained is None or trained == asked:
        return f"{asked:,} tokens"
    return f"{trained:,} tokens ({asked:,} asked, in whole steps of {results['tokens_per_step']:,})"



def _edge_note(results: dict) -> list[str]:
    if not any(v["best_lr_on_grid_edge"] for v in results["variants"].values()):
        return []
    n = results.get("compare_config", {}).get("extend_edges", 0)
    after = f" even after extending it {n} time(s)" if n else " (the grid was not extended)"
    return ["", f"(edge): the best LR is at the end of the search grid{after}; widen `--lr-factors` to be sure it "
                f"is tuned."]


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
    for ax, title in ((ax_t, "train loss (mean over report seeds)"), (ax_v, "validation loss (mean over report seeds)")):
        ax.set_xlabel("tokens")
        ax.set_ylabel("nats/token")
        ax.set_title(title)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
