"""Re-score a finished ``moa compare`` on more validation data than its runs evaluated.

A run scores itself on the first ``train.eval_tokens`` tokens of the validation split. When
that slice is small or unrepresentative (e.g. under BPE it reaches a few files only), this
re-evaluates each report run's final checkpoint on the first ``eval_tokens`` tokens of the
same split (default: all of it) with the trainer's own ``evaluate``, and writes the paired
comparison again (``rescore.md``, ``rescore.json`` in the compare folder). The runs'
checkpoints must still be there (they are not committed). With ``eval_tokens`` equal to the
runs' own, it reproduces their recorded losses (a test checks this).

    python -m moa.experiments.rescore docs/results/prereg-bpe            # the whole val split
    python -m moa.experiments.rescore DIR --eval-tokens 262144
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from moa.experiments.stats import paired_summary
from moa.experiments.sweep import mean_std
from moa.data.cache import atomic_write_bytes


def rescore(compare_dir, eval_tokens: Optional[int] = None) -> dict:
    """Each report run's final val loss/bpb on the first ``eval_tokens`` val tokens (None: all)."""
    import torch

    from moa.data import count_utf8_bytes, prepare_data, val_batches
    from moa.train.loop import evaluate
    from moa.train.runs import load_run

    out = Path(compare_dir)
    if not (out / "results.json").is_file():
        raise FileNotFoundError(f"{str(out)!r} holds no results.json; give the --out folder of a finished moa compare")
    results = json.loads((out / "results.json").read_text())
    if eval_tokens is not None and (not isinstance(eval_tokens, int) or eval_tokens < 1):
        raise ValueError(f"eval_tokens={eval_tokens!r} must be a positive integer (or None: the whole val split)")
    variants, cache = {}, {}
    for name, v in results["variants"].items():
        losses, bpbs = [], []
        for rel in v["run_dirs"]:
            model, tok, cfg = load_run(out / rel)
            key = (cfg.data, cfg.train.seq_len)
            if key not in cache:
                val = prepare_data(cfg.data).val_tokens
                n = len(val) if eval_tokens is None else eval_tokens
                batches = val_batches(val, cfg.train.seq_len, cfg.train.micro_batch_size or cfg.train.batch_size, n)
                cache[key] = (batches, sum(count_utf8_bytes(tok, y) for _, y in batches))
            batches, n_bytes = cache[key]
            with torch.random.fork_rng(devices=[]):
                ev = evaluate(model, batches, torch.device("cpu"), None, n_bytes)
            losses.append(ev.loss)
            bpbs.append(ev.bpb)
            tokens = ev.tokens
        variants[name] = {"val_loss_per_seed": losses, "val_bpb_per_seed": bpbs, "val_loss": mean_std(losses),
                          "val_bpb": mean_std(bpbs), "recorded_val_loss_per_seed": v["val_loss_per_seed"]}
    base = results["baseline"]
    for name, v in variants.items():
        v["delta_vs_first"] = None if name == base else paired_summary(
            v["val_loss_per_seed"], variants[base]["val_loss_per_seed"])
    res = {"compare_dir": str(out), "baseline": base, "report_seeds": results["report_seeds"],
           "eval_tokens": tokens, "eval_tokens_asked": eval_tokens, "variants": variants}
    atomic_write_bytes(out / "rescore.json", (json.dumps(res, indent=2) + "\n").encode())
    atomic_write_bytes(out / "rescore.md", (rescore_table(res) + "\n").encode())
    return res


def rescore_table(res: dict) -> str:
    base = res["baseline"]
    lines = [f"Final checkpoints of the report runs re-scored on the first {res['eval_tokens']:,} validation "
             f"tokens ({'the whole split' if res['eval_tokens_asked'] is None else 'as asked'}); mean ± std over "
             f"report seed(s) {', '.join(map(str, res['report_seeds']))}. Recorded: each run's own evaluation.",
             "",
             f"| variant | val loss (nats) | val bpb | Δ loss vs {base} [95% CI] | MDE (80% power) | recorded val loss |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, v in res["variants"].items():
        (m, s), (bm, bs) = v["val_loss"], v["val_bpb"]
        rm, rs = mean_std(v["recorded_val_loss_per_seed"])
        d = v["delta_vs_first"]
        delta = "—" if d is None else f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
        mde = "—" if d is None else f"{d['mde80']:.4f}"
        lines.append(f"| {name} | {m:.4f} ± {s:.4f} | {bm:.4f} ± {bs:.4f} | {delta} | {mde} | {rm:.4f} ± {rs:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m moa.experiments.rescore", description=__doc__.split("\n\n")[0])
    p.add_argument("compare_dir")
    p.add_argument("--eval-tokens", type=int, default=None, help="val tokens to score (default: the whole split)")
    args = p.parse_args(argv)
    try:
        res = rescore(args.compare_dir, args.eval_tokens)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(rescore_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
