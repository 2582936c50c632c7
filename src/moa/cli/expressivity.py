"""``moa expressivity``: the fixed ⊂ LA ⊂ MoA regression experiment (docs/DESIGN.md §10.3), tables and plot."""

from __future__ import annotations

import time
from pathlib import Path


def add_parser(sub) -> None:
    from moa.experiments.settings import EXPRESSIVITY_DEFAULTS as D

    p = sub.add_parser("expressivity", help="synthetic regression showing fixed σ ⊂ LA ⊂ MoA (table + plot)")
    # values are parsed in run(), so a bad one is a one-line `moa: error:` naming it
    p.add_argument("--out", default=None, help="output directory (default: runs/expressivity-<time>)")
    p.add_argument("--widths", default=",".join(map(str, D["widths"])),
                   help=f"comma-separated student hidden widths (default: {','.join(map(str, D['widths']))})")
    p.add_argument("--seeds", default=str(D["seeds"]), help=f"number of seeds (default: {D['seeds']})")
    p.add_argument("--steps", default=str(D["steps"]), help=f"full-batch Adam steps per run (default: {D['steps']})")
    p.add_argument("--lr", default=str(D["lr"]), help=f"Adam learning rate (default: {D['lr']:g})")
    p.add_argument("--d-model", default=str(D["d_model"]), help=f"input/output width (default: {D['d_model']})")
    p.add_argument("--teacher-width", default=str(D["teacher_width"]),
                   help=f"hidden width of both teachers (default: {D['teacher_width']})")
    p.add_argument("--samples", default=str(D["samples"]), help=f"training points, even (default: {D['samples']})")
    p.add_argument("--quiet", action="store_true", help="no per-run progress lines")


def _number(option: str, text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{option}={text!r} is not {'an integer' if kind is int else 'a number'}") from None


def run(args) -> int:
    from moa.experiments.expressivity import RESULTS, run_expressivity

    widths = [_number("--widths", w.strip(), int) for w in args.widths.split(",")] if args.widths.strip() else []
    out = Path(args.out) if args.out else Path("runs") / f"expressivity-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.perf_counter()
    results = run_expressivity(
        out, widths=widths, seeds=_number("--seeds", args.seeds, int), steps=_number("--steps", args.steps, int),
        lr=_number("--lr", args.lr, float), d_model=_number("--d-model", args.d_model, int),
        teacher_width=_number("--teacher-width", args.teacher_width, int),
        samples=_number("--samples", args.samples, int), progress=not args.quiet)
    print()
    print((out / "results.md").read_text())
    for v in results["verdicts"].values():
        print(v["line"])
    print(f"\nwrote {out}/{{{RESULTS}, results.md, expressivity.png, metrics.jsonl}} "
          f"in {time.perf_counter() - t0:.0f} s")
    return 0
