"""``moa compare``: LR-tuned, multi-seed comparison of FFN variants on identical data."""

from __future__ import annotations

import time
from pathlib import Path

from moa.experiments.settings import add_compare_arguments, compare_config


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare FFN variants: same data, budget and seeds; LR tuned per variant")
    add_compare_arguments(p)


def run(args) -> int:
    from moa.config import apply_overrides
    from moa.experiments.compare import results_table, run_compare
    from moa.presets import get_preset

    cc = compare_config(args)
    base = apply_overrides(get_preset(args.preset), args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"compare-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = run_compare(base, cc, out, progress=args.progress, jobs=args.jobs)
    print()
    print(results_table(results))
    print(f"\nfiles: {out}/results.md results.json loss_curves.png runs/")
    return 0
