"""``moa scale``: FFN variants across model sizes; power-law fits and compute multipliers."""

from __future__ import annotations

import time
from pathlib import Path

from moa.experiments.settings import add_scale_arguments, scale_config


def add_parser(sub) -> None:
    p = sub.add_parser("scale", help="scaling of FFN variants over model sizes at fixed tokens per parameter")
    add_scale_arguments(p)


def run(args) -> int:
    from moa.config import apply_overrides
    from moa.experiments.scale import run_scale, scaling_table
    from moa.presets import get_preset

    sc = scale_config(args)
    base = apply_overrides(get_preset(args.preset), args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"scale-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = run_scale(base, sc, out, progress=args.progress, jobs=args.jobs)
    print()
    print(scaling_table(results))
    print(f"\nfiles: {out}/scaling.md scaling.json scaling.png runs/")
    return 0
