"""``moa compare``: LR-tuned, multi-seed comparison of FFN variants on identical data."""

from __future__ import annotations

import time
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare FFN variants: same data, budget and seeds; LR tuned per variant")
    p.add_argument("--preset", default="quick", help="run preset for every variant (default: quick)")
    p.add_argument("--out", default=None, help="experiment directory (default: runs/compare-<preset>-<time>)")
    p.add_argument("--variants", default=None, help="comma-separated FFN presets; the first is the baseline")
    p.add_argument("--seeds", type=int, default=None, help="seeds at the best LR")
    p.add_argument("--lr-factors", default=None, help="LR grid as factors of the preset LR, e.g. 0.5,1,2")
    p.add_argument("--search-fraction", type=float, default=None, help="fraction of the budget for the LR search")
    p.add_argument("--extend-edges", type=int, default=None, metavar="N",
                   help="while the best LR is at an end of the grid, try one more step past it, up to N times "
                        "(default 2; 0 for --preset quick/debug)")
    p.add_argument("--progress", action="store_true", help="a progress bar per run")
    p.add_argument("overrides", nargs="*", metavar="key=value")


#: compare settings per preset (others: CompareConfig defaults, 6 variants and 2 seeds)
QUICK_VARIANTS = ("swiglu", "la-glu", "moa-glu")


def compare_config(args):
    from moa.experiments.compare import CompareConfig

    kw = {}
    if args.preset in ("quick", "debug"):
        kw = {"variants": QUICK_VARIANTS, "seeds": 1 if args.preset == "quick" else 2, "extend_edges": 0}
    if args.variants:
        kw["variants"] = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if args.seeds is not None:
        kw["seeds"] = args.seeds
    if args.lr_factors:
        try:
            kw["lr_factors"] = tuple(float(f) for f in args.lr_factors.split(","))
        except ValueError:
            raise ValueError(f"--lr-factors={args.lr_factors!r} is not a comma-separated list of numbers") from None
    if args.extend_edges is not None:
        kw["extend_edges"] = args.extend_edges
    if args.search_fraction is not None:
        kw["search_fraction"] = args.search_fraction
    return CompareConfig(**kw)


def run(args) -> int:
    from moa.config import apply_overrides
    from moa.experiments.compare import results_table, run_compare
    from moa.presets import get_preset

    cc = compare_config(args)
    base = apply_overrides(get_preset(args.preset), args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"compare-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = run_compare(base, cc, out, progress=args.progress)
    print()
    print(results_table(results))
    print(f"\nfiles: {out}/results.md results.json loss_curves.png runs/")
    return 0
