"""FFN step time and peak memory on CUDA, bf16: SwiGLU vs MoA-GLU / LA-GLU / MoA-MLP per implementation.

One forward+backward of ``--tokens`` tokens per step, under bf16 autocast with fp32
parameters (as the trainer runs). Every row is timed with CUDA events, all rows of one
d_model round-robin (interleaved) after warm-up, and the median taken; peak memory is the
allocator's peak above what was live before the step. Ratios are against SwiGLU in the
same mode family: eager rows against SwiGLU eager, compiled and Triton rows against
SwiGLU compiled (the fastest baseline). Modes:

* ``eager``: the memory-efficient fused autograd op (:class:`moa.nn.MixProject`);
* ``compiled``: the same module under ``torch.compile`` (inductor fuses the mix);
* ``triton``: ``impl="triton"`` eager (Triton kernels for the mix, cuBLAS matmuls);
* ``triton+compiled``: ``impl="triton"`` under ``torch.compile`` (the gate and the
  normalisation fused by inductor, the mix one opaque custom op).

Targets (issue 12, bf16): MoA-GLU (triton) / SwiGLU (compiled) time ≤ 1.03 and peak
memory ≤ 1.02 at d = 2048, time ≤ 1.05 at d = 768. ``--smoke`` runs tiny sizes on CPU
(Triton through its interpreter) to check that the script runs.

    PYTHONPATH=src python3 benchmarks/gpu_ffn_overhead.py --json out.json
    PYTHONPATH=src python3 benchmarks/gpu_ffn_overhead.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

ROWS = [  # (label, preset, impl, compiled)
    ("swiglu eager", "swiglu", "fused", False),
    ("swiglu compiled", "swiglu", "fused", True),
] + [
    (f"{name} {mode}", name, "triton" if mode.startswith("triton") else "fused", mode.endswith("compiled"))
    for name in ("moa-glu", "la-glu", "moa-mlp")
    for mode in ("triton+compiled", "triton", "compiled", "eager")
]
TARGETS = {2048: (1.03, 1.02), 768: (1.05, 1.02)}  # d -> (time, memory) for MoA-GLU triton vs SwiGLU compiled


def make_step(module, x):
    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            y = module(x)
        y.float().square().mean().backward()
    return step


def timed(step, device) -> float:
    """Seconds of one call: CUDA events on GPU, wall clock on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def peak_bytes(step, device, interpreted: bool = False):
    """Allocator peak above what was live; None for Triton rows on CPU (the interpreter
    under the CPU memory profiler takes minutes per step, and CPU memory is not the point)."""
    if interpreted:
        return None
    from moa.utils.memory import peak_memory_bytes

    return peak_memory_bytes(step, device)


def run_d(d: int, tokens: int, reps: int, warmup: int, device, deadline: float, log) -> list[dict]:
    from moa.nn import build_ffn, ffn_config

    torch._dynamo.reset()
    torch.manual_seed(0)
    x = torch.randn(tokens, d, device=device, dtype=torch.bfloat16, requires_grad=True)
    steps, labels, meta = [], [], {}
    for label, preset, impl, compiled in ROWS:
        if time.monotonic() > deadline:
            log(f"# d={d}: time budget reached before building {label}; it and later rows are skipped")
            break
        module = build_ffn(ffn_config(preset, impl=impl), d).to(device)
        if compiled:
            module = torch.compile(module)
        step = make_step(module, x)
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        steps.append(step)
        labels.append(label)
        meta[label] = dict(preset=preset, impl=impl, compiled=compiled, warmup_s=time.perf_counter() - t0)
    times = {label: [] for label in labels}
    for _ in range(reps):
        if time.monotonic() > deadline and all(len(t) >= 3 for t in times.values()):
            log(f"# d={d}: time budget reached after {len(next(iter(times.values())))} interleaved repeats")
            break
        for label, step in zip(labels, steps):
            times[label].append(timed(step, device))
    rows = []
    for label, step in zip(labels, steps):
        rows.append(dict(d_model=d, tokens=tokens, label=label, **meta[label], reps=len(times[label]),
                         time_s=statistics.median(times[label]),
                         peak_bytes=peak_bytes(step, device, device.type == "cpu" and meta[label]["impl"] == "triton")))
    by = {r["label"]: r for r in rows}
    for r in rows:
        base = by.get("swiglu eager" if r["label"].endswith(" eager") else "swiglu compiled")
        if base is not None:
            r["baseline"] = base["label"]
            r["time_ratio"] = r["time_s"] / base["time_s"]
            r["mem_ratio"] = r["peak_bytes"] / base["peak_bytes"] if r["peak_bytes"] is not None else None
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-models", default="2048,768")
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=170.0, help="stop building/timing rows after this long")
    p.add_argument("--json", default=None, help="write the rows and the target check to this JSON file")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (Triton interpreter): a syntax/API check")
    args = p.parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        args.d_models, args.tokens, args.reps, args.warmup = "32", 64, 2, 1
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    for key in ("recompile_limit", "cache_size_limit"):  # many modules of one class: no recompile limit
        if hasattr(torch._dynamo.config, key):
            setattr(torch._dynamo.config, key, 64)
    t_start = time.monotonic()
    d_models = [int(v) for v in args.d_models.split(",")]

    def log(msg):
        print(msg, flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    log(f"# torch {torch.__version__}, {name}, device={device}, bf16 autocast, tokens={args.tokens}")
    log(f"{'d':>5} {'row':>24} {'ms':>8} {'MiB':>8} {'time x':>7} {'mem x':>6}  baseline")
    rows = []
    for i, d in enumerate(d_models):  # each d_model gets its share of the time budget
        deadline = t_start + args.budget_s * (i + 1) / len(d_models)
        for r in run_d(d, args.tokens, args.reps, args.warmup, device, deadline, log):
            rows.append(r)
            mib = r["peak_bytes"] / 2**20 if r["peak_bytes"] is not None else float("nan")
            mem_ratio = r.get("mem_ratio") if r.get("mem_ratio") is not None else float("nan")
            log(f"{d:>5} {r['label']:>24} {r['time_s'] * 1e3:>8.3f} {mib:>8.1f} "
                f"{r.get('time_ratio', float('nan')):>7.3f} {mem_ratio:>6.3f}  {r.get('baseline', '-')}")
        write_json(args.json, name, args, rows, target_checks(rows, log if i == len(d_models) - 1 else None), t_start)
    return 0


def target_checks(rows: list[dict], log=None) -> list[dict]:
    checks = []
    for d, (t_max, m_max) in TARGETS.items():
        row = next((r for r in rows if r["d_model"] == d and r["label"] == "moa-glu triton+compiled"), None)
        if row is None:
            checks.append(dict(d_model=d, status="not measured"))
            continue
        if row.get("time_ratio") is None or row.get("mem_ratio") is None:  # a baseline or the memory is missing
            checks.append(dict(d_model=d, status="not measured"))
            continue
        ok = row["time_ratio"] <= t_max and row["mem_ratio"] <= m_max
        checks.append(dict(d_model=d, row=row["label"], time_ratio=row["time_ratio"], time_target=t_max,
                           mem_ratio=row["mem_ratio"], mem_target=m_max, status="met" if ok else "missed"))
        if log is not None:
            log(f"# target d={d}: moa-glu triton+compiled / swiglu compiled time {row['time_ratio']:.3f} "
                f"(≤ {t_max}), memory {row['mem_ratio']:.3f} (≤ {m_max}): {'met' if ok else 'MISSED'}")
    return checks


def write_json(path, device_name, args, rows, checks, t_start) -> None:
    """Rewritten after each d_model, so a run stopped by its time limit keeps what it measured."""
    if path:
        with open(path, "w") as f:
            json.dump({"device": device_name, "torch": torch.__version__, "smoke": args.smoke, "tokens": args.tokens,
                       "rows": rows, "targets": checks, "wall_s": time.monotonic() - t_start}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
