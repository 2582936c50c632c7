"""Trainer overhead: ``moa.train.train`` tokens/s vs a bare hand-written loop (target ratio ≥ 0.97).

Both sides train the same config for ``--steps`` optimizer steps: the preset (plus any
``key=value`` overrides) with ``train.tokens = steps * batch_size * seq_len``, evaluation and
checkpoints only at the end (``train.eval_every=0``, ``train.ckpt_every=0``), the preset's
``train.log_every`` (10 for debug/demo) and no progress bar.

* bare: a nanoGPT-style loop written here: ``torch.manual_seed(seed)``,
  ``Transformer(cfg.model)`` (vocab from the tokenizer), ``build_optimizers``, the batches
  of ``TokenBatcher(...).batch(step)``, the LR schedule set on every param group each step,
  gradient accumulation / clipping as the config says, ``zero_grad(set_to_none=True)``, and
  the mean train loss read back every ``log_every`` steps. Timed with ``time.perf_counter``
  around the step loop only (data prep and model build excluded).
* trainer: ``train(cfg, tmpdir, progress=False)``; its ``summary["tokens_per_s"]`` counts
  trained tokens over training seconds, which exclude data prep, model build, evaluation,
  checkpoints and metric writes.

Runs alternate (bare, trainer, bare, trainer, ...) ``--repeats`` times in one process,
after an untimed warm-up of the bare loop, so slow drift hits both sides alike. Printed:
each run's tokens/s, the medians, ratio = median(trainer) / median(bare) with PASS/MISS
against 0.97, and a check that both reach the same final train loss (the trainer's last
``train`` event in ``metrics.jsonl`` vs the bare loop's mean over the same last interval);
a difference above 1e-4 means the two loops are not doing the same work (exit code 2).

    python benchmarks/trainer_overhead.py                         # demo preset, 60 steps, 3 repeats
    python benchmarks/trainer_overhead.py --preset debug --steps 100
    python benchmarks/trainer_overhead.py --preset debug --steps 60 --repeats 2 optim.name=muon

``MOA_CACHE_DIR`` is pointed at a temporary folder (removed at the end) unless it is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

TARGET = 0.97
LOSS_TOL = 1e-4
FORCED_KEYS = ("train.tokens", "train.eval_every", "train.ckpt_every")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def others_cpu_busy(seconds: float = 0.5):
    """Fraction of all cores busy over ``seconds`` while this process sleeps (Linux; else None)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def build_config(preset: str, steps: int, overrides: list[str]):
    from moa.config import apply_overrides
    from moa.presets import get_preset

    for pair in overrides:
        if pair.split("=", 1)[0].strip() in FORCED_KEYS:
            raise SystemExit(f"{pair!r}: {', '.join(FORCED_KEYS)} are set by the benchmark (use --steps)")
    cfg = apply_overrides(get_preset(preset), overrides)
    tc = cfg.train
    return apply_overrides(cfg, {"train.tokens": steps * tc.batch_size * tc.seq_len,
                                 "train.eval_every": 0, "train.ckpt_every": 0})


def bare_loop(cfg, data, max_steps: int | None = None) -> dict:
    """The hand-written loop; returns tokens/s over the timed step loop and the last logged loss."""
    from moa.data import TokenBatcher
    from moa.model import Transformer, lm_loss
    from moa.train.loop import resolve_device
    from moa.train.optim import build_optimizers
    from moa.train.schedule import lr_multiplier

    device, autocast_dtype = resolve_device(cfg)
    tc = cfg.train
    torch.manual_seed(cfg.seed)
    model_cfg = cfg.model
    if model_cfg.vocab_size is None:
        model_cfg = model_cfg.replace(vocab_size=data.tokenizer.vocab_size)
    model = Transformer(model_cfg).to(device)
    optimizers = build_optimizers(model, cfg.optim)
    batcher = TokenBatcher(data.train_tokens, tc.seq_len, tc.batch_size, cfg.seed)
    use_compile = tc.compile == "true" or (tc.compile == "auto" and device.type == "cuda")
    step_model = torch.compile(model) if use_compile else model
    autocast = (lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype else nullcontext
    total = tc.steps  # the schedule's length; max_steps only cuts the warm-up short
    run_steps = total if max_steps is None else min(max_steps, total)
    micro = tc.micro_batch_size or tc.batch_size
    accum = tc.batch_size // micro
    clip = cfg.optim.grad_clip

    losses: list[torch.Tensor] = []
    last_loss, last_logged = float("nan"), 0
    model.train()
    sync(device)
    t0 = time.perf_counter()
    for step in range(run_steps):
        mult = lr_multiplier(step, total, cfg.schedule)
        for opt in optimizers:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * mult
        if accum == 1:
            x, y = batcher.batch(step)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast():
                loss = lm_loss(step_model(x), y)
            loss.backward()
            step_loss = loss.detach()
        else:
            step_loss = torch.zeros((), device=device)
            for i in range(accum):
                x, y = batcher.batch(step, i * micro, (i + 1) * micro)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast():
                    loss = lm_loss(step_model(x), y)
                (loss / accum).backward()
                step_loss += loss.detach()
            step_loss = step_loss / accum
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(step_loss)
        done = step + 1
        if done % tc.log_every == 0 or done == run_steps:  # the trainer logs the interval's mean
            last_loss, last_logged = torch.stack(losses).float().cpu().mean().item(), done
            losses = []
    sync(device)
    seconds = time.perf_counter() - t0
    return {"tokens_per_s": run_steps * tc.tokens_per_step / seconds, "train_s": seconds,
            "final_train_loss": last_loss, "final_step": last_logged}


def trainer_run(cfg) -> dict:
    from moa.train.loop import train
    from moa.train.records import read_metrics

    with tempfile.TemporaryDirectory(prefix="moa-bench-run-") as tmp:
        run = Path(tmp) / "run"
        summary = train(cfg, run, progress=False)
        last = [e for e in read_metrics(run) if e.get("event") == "train"][-1]
    return {"tokens_per_s": summary["tokens_per_s"], "train_s": summary["train_s"],
            "final_train_loss": last["train_loss"], "final_step": last["step"], "wall_s": summary["wall_s"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="extra arguments: key=value config overrides, e.g. optim.name=muon")
    p.add_argument("--preset", default="demo")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per run (default 60)")
    p.add_argument("--repeats", type=int, default=3, help="bare/trainer pairs, alternated (default 3)")
    p.add_argument("--warmup-steps", type=int, default=10, help="untimed bare-loop steps first (0: none)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for both sides (default: torch's; 1 avoids OpenMP thrashing "
                        "when other processes share the cores)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    if args.steps <= 0 or args.repeats <= 0:
        p.error("--steps and --repeats must be positive")
    if args.threads is not None:
        if args.threads <= 0:
            p.error("--threads must be positive")
        torch.set_num_threads(args.threads)

    own_cache = None
    if not os.environ.get("MOA_CACHE_DIR"):
        own_cache = tempfile.mkdtemp(prefix="moa-bench-cache-")
        os.environ["MOA_CACHE_DIR"] = own_cache
    try:
        return _bench(args)
    finally:
        if own_cache is not None:
            shutil.rmtree(own_cache, ignore_errors=True)


def _bench(args) -> int:
    from moa.data import prepare_data
    from moa.model import Transformer, param_counts
    from moa.train.loop import resolve_device

    cfg = build_config(args.preset, args.steps, args.overrides)
    tc = cfg.train
    device, autocast_dtype = resolve_device(cfg)
    data = prepare_data(cfg.data)  # builds the token cache once; both sides then read it
    vocab = cfg.model.vocab_size or data.tokenizer.vocab_size
    params = param_counts(Transformer(cfg.model.replace(vocab_size=vocab)))["total"]
    use_compile = tc.compile == "true" or (tc.compile == "auto" and device.type == "cuda")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"threads={torch.get_num_threads()}, device={device}, autocast={autocast_dtype}, compile={use_compile}")
    print(f"# preset={args.preset} {' '.join(args.overrides)}".rstrip())
    print(f"# model d={cfg.model.d_model} L={cfg.model.n_layers} ffn={cfg.model.ffn} vocab={vocab} "
          f"params={params:,}; optim={cfg.optim.name}; batch={tc.batch_size}x{tc.seq_len}"
          f"{f' (micro {tc.micro_batch_size})' if tc.micro_batch_size else ''} = {tc.tokens_per_step:,} tok/step; "
          f"steps={tc.steps}, log_every={tc.log_every}, repeats={args.repeats}")

    busy = others_cpu_busy()
    if busy is not None and busy > 0.2:
        print(f"# note: other processes keep {busy:.0%} of the CPU busy: timings will be noisy"
              + ("" if torch.get_num_threads() == 1 else "; --threads 1 avoids OpenMP thrashing"))
    if args.warmup_steps > 0:
        w = bare_loop(cfg, data, max_steps=args.warmup_steps)
        print(f"warm-up (bare, untimed) {min(args.warmup_steps, tc.steps)} steps: {w['tokens_per_s']:,.0f} tok/s")

    runs: dict[str, list[dict]] = {"bare": [], "trainer": []}
    print(f"{'rep':>3} {'loop':>8} {'tok/s':>10} {'train s':>8} {'final loss':>11} {'@step':>6}")
    for rep in range(args.repeats):
        for name, fn in (("bare", lambda: bare_loop(cfg, data)), ("trainer", lambda: trainer_run(cfg))):
            r = fn()
            runs[name].append(r)
            print(f"{rep + 1:>3} {name:>8} {r['tokens_per_s']:>10,.0f} {r['train_s']:>8.2f} "
                  f"{r['final_train_loss']:>11.6f} {r['final_step']:>6}", flush=True)

    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    ratio = med["trainer"] / med["bare"]
    pairs = [t["tokens_per_s"] / b["tokens_per_s"] for b, t in zip(runs["bare"], runs["trainer"])]
    print(f"median tok/s: bare {med['bare']:,.0f}, trainer {med['trainer']:,.0f}; per-pair ratios "
          f"{', '.join(f'{r:.3f}' for r in pairs)} (their spread shows the noise)")
    print(f"ratio trainer/bare = {ratio:.3f}  {'PASS' if ratio >= TARGET else 'MISS'} (target >= {TARGET})")

    losses = {k: [r["final_train_loss"] for r in v] for k, v in runs.items()}
    steps_seen = {r["final_step"] for v in runs.values() for r in v}
    diff = max(abs(a - b) for a in losses["bare"] for b in losses["trainer"])
    same = diff <= LOSS_TOL and steps_seen == {tc.steps}
    why = ([f"|diff| > {LOSS_TOL:g}"] if diff > LOSS_TOL else []) + \
        ([f"last logged steps {sorted(steps_seen)}"] if steps_seen != {tc.steps} else [])
    print(f"final train loss (mean of the last log interval, step {tc.steps}): bare {losses['bare'][0]:.6f}, "
          f"trainer {losses['trainer'][0]:.6f}, max |diff| over all runs = {diff:.2e}  "
          + ("same work: OK" if same else
             f"LOSS MISMATCH ({'; '.join(why)}): the two loops are NOT doing the same work"))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "overrides": args.overrides, "steps": tc.steps,
                       "tokens_per_step": tc.tokens_per_step, "device": str(device), "runs": runs,
                       "median_tokens_per_s": med, "ratio": ratio, "pair_ratios": pairs, "target": TARGET,
                       "final_loss_max_abs_diff": diff}, f, indent=1)
    return 0 if same else 2


if __name__ == "__main__":
    sys.exit(main())
