"""``moa scale``: FFN variants across model sizes; power-law fits and compute multipliers."""

from __future__ import annotations

import time
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("scale", help="scaling of FFN variants over model sizes at fixed tokens per parameter")
    p.add_argument("--preset", default="quick", help="run preset giving data, optimizer, batch (default: quick)")
    p.add_argument("--out", default=None, help="experiment directory (default: runs/scale-<preset>-<time>)")
    p.add_argument("--variants", default="swiglu,la-glu,moa-glu", help="comma-separated; the first is the baseline")
    p.add_argument("--ladder", default="cpu", help="size ladder: cpu or tiny")
    p.add_argument("--sizes", type=int, default=4, help="how many sizes of the ladder (>= 3)")
    p.add_argument("--tokens-per-param", type=float, default=20.0)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value")


def scale_config(args):
    from moa.experiments.scale import ScaleConfig

    return ScaleConfig(variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()), ladder=args.ladder,
                       sizes=args.sizes, tokens_per_param=args.tokens_per_param, seeds=args.seeds)


def run(args) -> int:
    from moa.config import apply_overrides
    from moa.experiments.scale import run_scale, scaling_table
    from moa.presets import get_preset

    sc = scale_config(args)
    base = apply_overrides(get_preset(args.preset), args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"scale-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = run_scale(base, sc, out, progress=args.progress)
    print()
    print(scaling_table(results))
    print(f"\nfiles: {out}/scaling.md scaling.json scaling.png runs/")
    return 0
