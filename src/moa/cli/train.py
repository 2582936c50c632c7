"""``moa train``: pre-train an LM from a preset plus ``key=value`` overrides, or resume one."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path



def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a language model (default: the demo preset)",
                       description="Train an LM. Overrides are dotted key=value pairs, e.g. "
                                   "model.ffn=swiglu train.tokens=2M optim.name=muon.")
    p.add_argument("--preset", default=None, help="run preset (see `moa presets`); default: demo")
    p.add_argument("--out", default=None, help="run directory (default: runs/<preset>-<ffn>-<time>)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and parameter counts")
    p.add_argument("--init-from", default=None, metavar="HF_DIR",
                   help="start from a local Llama/Mistral checkpoint (architecture, weights, tokenizer; "
                        "FFNs converted function-preservingly to model.ffn)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="launch N processes on this node with torchrun (DDP unless train.parallel=fsdp)")
    p.add_argument("overrides", nargs="*", metavar="key=value")


def resolve(args):
    from moa.config import apply_overrides
    from moa.presets import get_preset

    if args.resume:
        from moa.config import config_from_dict
        from moa.train.records import CONFIG, read_json

        run_dir = Path(args.resume)
        if not (run_dir / CONFIG).exists():
            raise FileNotFoundError(f"cannot resume {run_dir}: no {CONFIG} there")
        base = config_from_dict(read_json(run_dir / CONFIG))
        if args.preset or args.init_from:
            raise ValueError("--resume takes its config and weights from the run directory; drop --preset/--init-from")
        cfg = apply_overrides(base, args.overrides) if args.overrides else None
        return cfg, run_dir
    preset = args.preset or "demo"
    if args.init_from:
        from moa.hf.importer import init_from_config

        cfg = init_from_config(get_preset(preset), args.init_from, args.overrides)
    else:
        cfg = apply_overrides(get_preset(preset), args.overrides)
    if args.out:
        out = Path(args.out)
    else:  # every torchrun rank must pick the same directory: name it by the launch's run id
        stamp = os.environ.get("TORCHELASTIC_RUN_ID") if "RANK" in os.environ else None
        out = Path("runs") / f"{preset}-{cfg.model.ffn}-{stamp or time.strftime('%Y%m%d-%H%M%S')}"
    return cfg, out


def launch(args, out: Path) -> int:
    """Re-run this command under ``torchrun --standalone`` with ``--nproc`` processes."""
    import subprocess
    import sys

    if args.nproc < 1:
        raise ValueError(f"--nproc={args.nproc} must be >= 1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "moa.train"]
    cmd += ["--resume", args.resume] if args.resume else ["--preset", args.preset or "demo", "--out", str(out)]
    if args.no_progress:
        cmd.append("--no-progress")
    if args.init_from:
        cmd += ["--init-from", args.init_from]
    cmd += args.overrides
    return subprocess.call(cmd)


def run(args) -> int:
    from moa.config import dumps
    from moa.train import train

    cfg, out = resolve(args)
    if args.nproc != 1 and not args.dry_run and "RANK" not in os.environ:
        return launch(args, out)
    if args.dry_run:
        shown = cfg if cfg is not None else None
        print(dumps(shown) if shown is not None else (out / "config.json").read_text())
        if shown is not None:
            from moa.train.runs import describe

            print(json.dumps(describe(shown), indent=2))
        return 0
    init_state = None
    if args.init_from:
        from moa.hf.importer import moa_state_from_hf

        init_state = moa_state_from_hf(args.init_from, cfg.model)
    summary = train(cfg, out, resume=bool(args.resume), progress=not args.no_progress, init_state=init_state)
    if int(os.environ.get("RANK", 0)) == 0:
        print_summary(out, summary)
    return 0


def print_summary(out: Path, s: dict) -> None:
    from moa.train.records import format_rate

    print(f"""
run        {out}
ffn        {s['ffn']}   tokenizer {s['tokenizer']} (vocab {s['vocab_size']})
params     {s['params_total']:,} total, {s['params_non_embedding']:,} non-embedding
trained    {s['tokens']:,} tokens in {s['steps']} steps, {s['wall_s']:.1f} s wall, {format_rate(s['tokens_per_s'])} tokens/s
val        loss {s['final_val_loss']:.4f} nats/token, {s['final_val_bpb']:.4f} bits/byte ({s['val_tokens']:,} tokens)
files      {' '.join(sorted(p.name + ('/' if p.is_dir() else '') for p in out.iterdir()))}
next       moa sample {out} --prompt "def "
""".rstrip())
