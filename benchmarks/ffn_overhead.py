"""MoA/LA FFN overhead vs the same-type fixed baseline: step time and peak memory ratios.

For each d_model, forward+backward on ``--tokens`` tokens of each variant and its
baseline (Type-I: relu, Type-II: swiglu), eager and torch.compile'd, measured side by
side in one process: runs are interleaved (baseline, variant, baseline, ...) after warm-up
and the median is taken. Targets (MOA.md §6): compiled time ≤ 1.05x and memory ≤ 1.05x;
eager time ≤ 1.15x and memory ≤ 1.10x.

    python benchmarks/ffn_overhead.py                       # d = 128, 256, 512; 4096 tokens
    python benchmarks/ffn_overhead.py --d-models 128 --modes eager --reps 5
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from moa.nn import build_ffn, ffn_config
from moa.utils.memory import peak_memory_bytes
from moa.utils.timing import interleaved_median

PAIRS = [  # (variant, overrides, baseline)
    ("la-mlp", {}, "relu"),
    ("moa-mlp", {}, "relu"),
    ("moa-mlp", {"gate_groups": 4}, "relu"),
    ("la-glu", {}, "swiglu"),
    ("moa-glu", {}, "swiglu"),
    ("moa-glu", {"gate_groups": 4}, "swiglu"),
]
TARGETS = {"compiled": (1.05, 1.05), "eager": (1.15, 1.10)}


def make_step(module, x):
    def step():
        module.zero_grad(set_to_none=True)
        y = module(x)
        y.float().square().mean().backward()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-models", default="128,256,512")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--modes", default="eager,compiled")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"threads={torch.get_num_threads()}, device={device}, dtype={dtype}, tokens={args.tokens}")
    header = f"{'d':>4} {'mode':>8} {'variant':>14} {'baseline':>8} {'t_var ms':>9} {'t_base ms':>9} {'time x':>7} {'mem x':>6}  target"
    print(header)
    rows = []
    for d in [int(v) for v in args.d_models.split(",")]:
        torch.manual_seed(0)
        x = torch.randn(args.tokens, d, device=device, dtype=dtype, requires_grad=True)
        for mode in args.modes.split(","):
            for name, overrides, base in PAIRS:
                torch._dynamo.reset()  # fresh compile caches: no recompile limit across pairs
                modules = [build_ffn(ffn_config(name, **overrides), d), build_ffn(ffn_config(base), d)]
                modules = [m.to(device=device, dtype=dtype) for m in modules]
                if mode == "compiled":
                    modules = [torch.compile(m) for m in modules]
                steps = [make_step(m, x) for m in modules]
                for _ in range(args.warmup):
                    for s in steps:
                        s()
                t_var, t_base = interleaved_median(steps, args.reps, device)
                m_var, m_base = (peak_memory_bytes(s, device) for s in steps)
                t_max, m_max = TARGETS[mode]
                tr, mr = t_var / t_base, m_var / m_base
                ok = "ok" if tr <= t_max and mr <= m_max else f"MISS (≤{t_max}/{m_max})"
                label = name + (f" G={overrides['gate_groups']}" if "gate_groups" in overrides else "")
                print(f"{d:>4} {mode:>8} {label:>14} {base:>8} {t_var*1e3:>9.1f} {t_base*1e3:>9.1f} {tr:>7.3f} {mr:>6.3f}  {ok}",
                      flush=True)
                rows.append(dict(d_model=d, mode=mode, variant=label, baseline=base, t_variant_s=t_var,
                                 t_baseline_s=t_base, time_ratio=tr, mem_variant=m_var, mem_baseline=m_base,
                                 mem_ratio=mr))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
