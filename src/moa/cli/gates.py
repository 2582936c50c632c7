"""``moa gates``: gate statistics of a trained MoA run on its validation data (docs/DESIGN.md §10.4)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MAX_TOKENS = 65536  # = moa.experiments.gates.DEFAULT_MAX_TOKENS (not imported: keeps `moa -h` fast)


def add_parser(sub) -> None:
    p = sub.add_parser("gates", help="per-layer gate statistics of a trained MoA run (table + heatmap)",
                       description="For a trained MoA model (dense or MoE): per-layer mean gate weight per "
                                   "activation, gate entropy and the tokens that most prefer each activation, "
                                   "on the run's validation set. Writes gates.json, gates.md and plots.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: RUN_DIR/gates)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, metavar="N",
                   help=f"validation tokens to analyse, at most the run's train.eval_tokens "
                        f"(default {DEFAULT_MAX_TOKENS})")
    p.add_argument("--top", type=int, default=10, metavar="N", help="token types listed per activation")
    p.add_argument("--min-count", type=int, default=5, metavar="N",
                   help="a token type must occur this often to be listed")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def run(args) -> int:
    from moa.experiments.gates import GATES_JSON, GATES_MD, run_gates, summary_tables

    if args.max_tokens <= 0:
        raise ValueError(f"--max-tokens={args.max_tokens} must be a positive number of tokens")
    for flag, value in (("--top", args.top), ("--min-count", args.min_count)):
        if value <= 0:
            raise ValueError(f"{flag}={value} must be a positive integer")
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "gates"
    result = run_gates(run_dir, out, args.max_tokens, top=args.top, min_count=args.min_count, device=args.device)
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    print(f"{result['ffn']} gates on {result['tokens']:,} validation tokens of {run_dir}\n")
    print(summary_tables(result))
    print(f"wrote {out / GATES_JSON}, {out / GATES_MD} (with the top tokens per activation) and plots")
    return 0
