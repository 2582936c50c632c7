"""``moa eval``: lm-evaluation-harness on a run (exported on the fly) or a transformers directory."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run or a transformers model with lm-evaluation-harness",
                       description="Run lm-eval tasks on RUN_DIR (exported on the fly) or HF_DIR, offline "
                                   "(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE are set unless --online). Built in: "
                                   "moa_val_bpb (bits per byte on the run's validation split); local task YAMLs "
                                   "come from --include-path; other names go to lm-eval's registry.")
    p.add_argument("path", metavar="RUN_DIR|HF_DIR")
    p.add_argument("--tasks", required=True, help="comma-separated task names, e.g. moa_val_bpb")
    p.add_argument("--limit", type=float, default=None, help="documents per task (a fraction if < 1)")
    p.add_argument("--include-path", default=None, help="folder of lm-eval task YAML files")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--online", action="store_true", help="allow lm-eval to download tasks and datasets")
    p.add_argument("--out", default=None, help="folder for results.json")


def run(args) -> int:
    from moa.hf.lm_eval import run_lm_eval

    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit={args.limit} must be > 0")
    results = run_lm_eval(args.path, args.tasks.split(","), limit=args.limit, include_path=args.include_path,
                          batch_size=args.batch_size, device=args.device, dtype=args.dtype, online=args.online)
    from lm_eval.utils import make_table

    print(make_table(results))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        keep = {k: results[k] for k in ("results", "versions", "n-shot", "configs") if k in results}
        (out / "results.json").write_text(json.dumps(keep, indent=2, default=str) + "\n")
    return 0
