"""Command-line settings of the sweep experiments: their arguments and the configs they make.

``moa compare`` and ``moa scale`` (:mod:`moa.cli`) add these arguments to their parsers,
and :mod:`moa.experiments.report` parses the commands printed in a results document with
the same definitions, so a printed command and the stored experiment are compared through
one code path without the experiments layer importing the CLI (docs/DESIGN.md §1).
Only argparse is imported at module level: ``moa -h`` stays fast.
"""

from __future__ import annotations

import argparse

QUICK_VARIANTS = ("swiglu", "la-glu", "moa-glu")
#: ``moa expressivity`` defaults (:mod:`moa.experiments.expressivity`), here so its parser needs no torch
EXPRESSIVITY_DEFAULTS = dict(widths=(8, 16, 32), seeds=3, steps=1000, lr=2e-2, d_model=8, teacher_width=4,
                             samples=1024, gate_sharpness=4.0, margin=10.0)


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="quick", help="run preset for every variant (default: quick)")
    p.add_argument("--out", default=None, help="experiment directory (default: runs/compare-<preset>-<time>)")
    p.add_argument("--variants", default=None, help="comma-separated FFN presets; the first is the baseline")
    p.add_argument("--seeds", type=int, default=None,
                   help="report seeds 0..N-1, trained at the chosen LR (default 3; 2 for --preset quick/debug)")
    p.add_argument("--search-seeds", type=int, default=None, metavar="N",
                   help="the LR is chosen on the mean final loss over N search seeds 1000..1000+N-1, never "
                        "reported (default 2; 1 for --preset quick/debug)")
    p.add_argument("--lr-factors", default=None, help="LR grid as factors of the preset LR, e.g. 0.5,1,2")
    p.add_argument("--search-fraction", type=float, default=None,
                   help="fraction of the budget for the LR search (default 1; 0.5 for --preset quick)")
    p.add_argument("--extend-edges", type=int, default=None, metavar="N",
                   help="while the best LR is at an end of the grid, try one more step past it, up to N times "
                        "(default 2)")
    p.add_argument("--progress", action="store_true", help="a progress bar per run")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N runs at once in worker processes (one GPU each on a GPU machine); same results "
                        "as one at a time (default 1)")
    p.add_argument("overrides", nargs="*", metavar="key=value")


#: sweep settings of the small presets (the main job `moa compare --preset quick` must stay
#: within ~10 minutes on 2 CPU cores); other presets take the CompareConfig defaults
PRESET_COMPARE = {
    "quick": {"variants": QUICK_VARIANTS, "seeds": 2, "search_seeds": 1, "search_fraction": 0.5},
    "debug": {"variants": QUICK_VARIANTS, "seeds": 2, "search_seeds": 1},
}


def compare_config(args):
    """The :class:`~moa.experiments.compare.CompareConfig` a parsed ``moa compare`` command asks for."""
    from moa.experiments.compare import CompareConfig

    kw = dict(PRESET_COMPARE.get(args.preset, {}))
    if args.variants:
        kw["variants"] = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if args.lr_factors:
        kw["lr_factors"] = _factors(args.lr_factors)
    for name in ("seeds", "search_seeds", "extend_edges", "search_fraction"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return CompareConfig(**kw)


def add_scale_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="quick", help="run preset giving data, optimizer, batch (default: quick)")
    p.add_argument("--out", default=None, help="experiment directory (default: runs/scale-<preset>-<time>)")
    p.add_argument("--variants", default="swiglu,la-glu,moa-glu", help="comma-separated; the first is the baseline")
    p.add_argument("--ladder", default="cpu", help="size ladder: cpu or tiny")
    p.add_argument("--sizes", type=int, default=4, help="how many sizes of the ladder (>= 3)")
    p.add_argument("--tokens-per-param", type=float, default=20.0)
    p.add_argument("--seeds", type=int, default=2, help="report seeds 0..N-1 per size and variant")
    p.add_argument("--tune-lr", action="store_true",
                   help="search the LR per size and variant (same rule for all) and fit on each size's best LR")
    p.add_argument("--lr-factors", default="0.5,1,2", help="with --tune-lr: LR grid as factors of the preset LR")
    p.add_argument("--search-seeds", type=int, default=1, metavar="N",
                   help="with --tune-lr: LR chosen on the mean over search seeds 1000..1000+N-1 (default 1)")
    p.add_argument("--search-fraction", type=float, default=0.5,
                   help="with --tune-lr: fraction of each size's tokens for its LR search (default 0.5)")
    p.add_argument("--extend-edges", type=int, default=2, metavar="N",
                   help="with --tune-lr: steps the grid may grow past a winning edge (default 2)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N runs at once in worker processes (one GPU each on a GPU machine); same results "
                        "as one at a time (default 1)")
    p.add_argument("overrides", nargs="*", metavar="key=value")


def scale_config(args):
    """The :class:`~moa.experiments.scale.ScaleConfig` a parsed ``moa scale`` command asks for."""
    from moa.experiments.scale import ScaleConfig

    return ScaleConfig(variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()), ladder=args.ladder,
                       sizes=args.sizes, tokens_per_param=args.tokens_per_param, seeds=args.seeds,
                       tune_lr=args.tune_lr, lr_factors=_factors(args.lr_factors), search_seeds=args.search_seeds,
                       search_fraction=args.search_fraction, extend_edges=args.extend_edges)


def _factors(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(f) for f in text.split(","))
    except ValueError:
        raise ValueError(f"--lr-factors={text!r} is not a comma-separated list of numbers") from None


#: command → (argument definitions, settings from parsed arguments)
SWEEPS = {"compare": (add_compare_arguments, compare_config), "scale": (add_scale_arguments, scale_config)}


def parse_sweep_command(argv: list[str]) -> argparse.Namespace:
    """Parse ``compare …`` or ``scale …`` (the words after ``moa``) as the CLI does.

    As in ``moa``'s root parser, ``key=value`` overrides may sit between options.
    """
    if not argv or argv[0] not in SWEEPS:
        raise ValueError(f"{' '.join(argv[:1]) or 'an empty command'} is not a sweep; valid: {', '.join(SWEEPS)}")
    parser = argparse.ArgumentParser(prog=f"moa {argv[0]}")
    SWEEPS[argv[0]][0](parser)
    args, extra = parser.parse_known_args(argv[1:])
    if extra and not any(e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        raise ValueError(f"moa {argv[0]}: unrecognized arguments: {' '.join(extra)}")
    args.command = argv[0]
    return args
