"""Seed-stability study of MoA runs: final losses and gate statistics per configuration and seed.

Reads training runs named ``<config>-s<seed>`` under ``DIR/runs``, or, when ``DIR`` is a
``moa compare`` experiment (it has ``results.json``), each variant's runs at its chosen
LR: the reported seeds at the full budget (configuration ``<variant>``) and the search
seeds at the search budget (``<variant>-search``). From the runs' ``summary.json`` and
``metrics.jsonl`` (``gates`` events: :mod:`moa.train.gate_stats`) it writes
``DIR/stability.md`` (per configuration: final val loss per seed, mean ± std, and the
last evaluation's gate entropy, max |logit| and dominant activation per layer; then the
Spearman rank correlation, ``scipy.stats.spearmanr``, between final loss and the lowest
layer's gate entropy, over every run with gate statistics trained for one token budget,
at the first and the last evaluation) and ``DIR/stability.png`` (validation loss and layer-wise gate entropy over
training, one line per seed). ``python -m moa.experiments.stability docs/results/stability``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Optional

from moa.experiments.sweep import mean_std
from moa.train.records import SUMMARY, read_json, read_metrics

RUN = re.compile(r"(.+)-s(\d+)$")
COMPARE_RUN = re.compile(r"lr(.+)-s(\d+)-t\d+$")  # moa compare's run folder names


def _record(run: Path) -> dict:
    events = read_metrics(run)
    return {"summary": read_json(run / SUMMARY), "evals": [e for e in events if e["event"] == "eval"],
            "gates": [e for e in events if e["event"] == "gates"]}


def collect(root: Path, all_lrs: bool = False) -> dict[str, dict[int, dict]]:
    """``{config: {seed: {"summary", "evals", "gates"}}}`` of the finished runs under ``root``."""
    root = Path(root)
    if (root / "results.json").exists():
        return collect_compare(root, all_lrs)
    found: dict[str, dict[int, dict]] = defaultdict(dict)
    for run in sorted((root / "runs").iterdir()):
        m = RUN.match(run.name)
        if not m or not (run / SUMMARY).exists():
            continue
        found[m.group(1)][int(m.group(2))] = _record(run)
    if not found:
        raise FileNotFoundError(f"{root}/runs holds no finished run named <config>-s<seed>")
    return dict(found)


def collect_compare(root: Path, all_lrs: bool = False) -> dict[str, dict[int, dict]]:
    """A ``moa compare`` experiment's runs at each variant's chosen LR: ``<variant>`` (report
    seeds, full budget) and ``<variant>-search`` (search seeds, search budget); with
    ``all_lrs`` every LR of the search as well, ``<variant>-search-lr<lr>``."""
    results = read_json(root / "results.json")
    found: dict[str, dict[int, dict]] = {}
    for variant, v in results["variants"].items():
        best = f"{v['best_lr']:.3g}"
        groups: dict[str, dict[int, dict]] = {variant: {}}
        for d in v["run_dirs"]:
            m = COMPARE_RUN.match(Path(d).name)
            if m and (root / d / SUMMARY).exists():
                groups[variant][int(m.group(2))] = _record(root / d)
        for d in dict.fromkeys(v.get("search_run_dirs", [])):
            m = COMPARE_RUN.match(Path(d).name)
            if not m or not (root / d / SUMMARY).exists() or not (all_lrs or m.group(1) == best):
                continue
            name = f"{variant}-search" if m.group(1) == best and not all_lrs else f"{variant}-search-lr{m.group(1)}"
            groups.setdefault(name, {})[int(m.group(2))] = _record(root / d)
        found.update({name: dict(sorted(runs.items())) for name, runs in groups.items() if runs})
    return found


def layers(gates: dict) -> list[int]:
    return sorted({int(k.split(".")[0][1:]) for k in gates if k.startswith("L") and "." in k})


def table(study: dict[str, dict[int, dict]]) -> str:
    lines = ["| configuration | final val loss per seed | mean ± std | last eval: per layer normalised gate entropy, "
             "max abs logit, most-chosen activation (share of tokens) |", "|---|---|---|---|"]
    for name, seeds in study.items():
        losses = [seeds[s]["summary"]["final_val_loss"] for s in sorted(seeds)]
        m, sd = mean_std(losses)
        per_seed = ", ".join(f"s{s}: {seeds[s]['summary']['final_val_loss']:.4f}" for s in sorted(seeds))
        gate_cells = []
        for s in sorted(seeds):
            g = seeds[s]["gates"][-1] if seeds[s]["gates"] else {}
            parts = []
            for layer in layers(g):
                if f"L{layer}.gate_entropy" not in g:  # LA: its largest coefficient
                    coef = {k.rsplit(".", 1)[1]: v for k, v in g.items() if k.startswith(f"L{layer}.gate_mean.")}
                    best = max(coef, key=coef.get)
                    parts.append(f"L{layer} LA {best} {coef[best]:.2f}")
                    continue
                top = {k.rsplit(".", 1)[1]: v for k, v in g.items() if k.startswith(f"L{layer}.gate_top1.")}
                best = max(top, key=top.get)
                parts.append(f"L{layer} {g[f'L{layer}.gate_entropy']:.2f}/{g[f'L{layer}.gate_max_logit']:.1f}/"
                             f"{best} {top[best]:.0%}")
            gate_cells.append(f"s{s}: " + "; ".join(parts))
        lines.append(f"| {name} | {per_seed} | {m:.4f} ± {sd:.4f} | {'<br>'.join(gate_cells)} |")
    return "\n".join(lines) + correlation(study)


def min_entropy(gates: dict) -> float:
    """The lowest layer's normalised gate entropy in one ``gates`` event (the most collapsed layer)."""
    return min(gates[f"L{layer}.gate_entropy"] for layer in layers(gates))


def correlation(study: dict[str, dict[int, dict]]) -> str:
    """Spearman ρ between final val loss and :func:`min_entropy`, first and last evaluation."""
    from scipy.stats import spearmanr

    runs = [r for seeds in study.values() for r in seeds.values() if r["gates"] and "L0.gate_entropy" in r["gates"][0]]
    # final losses after different token budgets (a compare's search and report runs) are not
    # comparable: one correlation per budget
    budgets: dict[Optional[int], list[dict]] = defaultdict(list)
    for r in runs:
        budgets[r["summary"].get("tokens")].append(r)
    out = ""
    for tokens, group in sorted(budgets.items(), key=lambda kv: kv[0] or 0):
        if len(group) < 3:
            continue
        loss = [r["summary"]["final_val_loss"] for r in group]
        parts = []
        for label, index in (("first", 0), ("last", -1)):
            res = spearmanr([min_entropy(r["gates"][index]) for r in group], loss)
            parts.append(f"{label} evaluation ρ = {res.statistic:.2f} (p = {res.pvalue:.2f})")
        at = f" trained for {tokens:,} tokens" if len(budgets) > 1 and tokens else ""
        out += (f"\n\nSpearman rank correlation of final val loss with the lowest layer's normalised gate "
                f"entropy, over the {len(group)} MoA runs{at} with gate statistics: {'; '.join(parts)}.")
    return out


def plot(study: dict[str, dict[int, dict]], path: Path, metric: str = "gate_entropy") -> None:
    """Per configuration: val loss and, per layer, ``L{i}.<metric>`` of the gates events, over steps."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    names = list(study)
    n_layers = max((len(layers(r["gates"][-1])) for c in study.values() for r in c.values() if r["gates"]), default=0)
    fig = Figure(figsize=(4.2 * (1 + n_layers), 3.2 * len(names)))
    axes = fig.subplots(len(names), 1 + n_layers, squeeze=False)
    for row, name in enumerate(names):
        for s, run in sorted(study[name].items()):
            ax = axes[row][0]
            ax.plot([e["step"] for e in run["evals"]], [e["val_loss"] for e in run["evals"]], "o-", ms=3, label=f"seed {s}")
            ax.set_title(f"{name}: val loss")
            for layer in range(n_layers):
                ax = axes[row][1 + layer]
                points = [(g["step"], g[f"L{layer}.{metric}"]) for g in run["gates"] if f"L{layer}.{metric}" in g]
                if points:
                    ax.plot(*zip(*points), "o-", ms=3, label=f"seed {s}")
                ax.set_title(f"{name}: layer {layer} " + ("gate entropy / log K" if metric == "gate_entropy" else metric))
                if metric == "gate_entropy":
                    ax.set_ylim(0, 1)
        for ax in axes[row]:
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m moa.experiments.stability", description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, help="study folder with runs/<config>-s<seed>/, or a moa compare folder")
    p.add_argument("--all-lrs", action="store_true", help="compare folder: every LR of the search, not only the chosen")
    p.add_argument("--variants", default=None, help="compare folder: only these variants (comma-separated)")
    p.add_argument("--metric", default=None,
                   help="gates-event quantity plotted per layer, e.g. mix_rms.relu2 or z_rms (default: gate_entropy)")
    p.add_argument("--name", default="stability", help="output files DIR/NAME.md and DIR/NAME.png (default: stability)")
    args = p.parse_args(argv)
    study = collect(args.dir, args.all_lrs)
    if args.variants:
        keep = args.variants.split(",")
        unknown = [x for x in keep if x not in study]
        if unknown:
            p.error(f"--variants {','.join(unknown)} not in {args.dir}; valid: "
                    f"{', '.join(k for k in study if '-search' not in k)}")
        study = {k: v for k, v in study.items() if any(k == x or k.startswith(f"{x}-search") for x in keep)}
    known = {k.split(".", 1)[1] for c in study.values() for r in c.values() for g in r["gates"] for k in g
             if k.startswith("L") and "." in k}
    if args.metric is not None and args.metric not in known:
        p.error(f"--metric {args.metric!r} is in no gates event; valid: {', '.join(sorted(known)) or 'none (no gates)'}")
    text = table(study)
    (args.dir / f"{args.name}.md").write_text(text + "\n")
    plot(study, args.dir / f"{args.name}.png", args.metric or "gate_entropy")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
