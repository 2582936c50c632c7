"""Short compiled bf16 training runs on CUDA: tokens/s, MFU and peak memory per model.

Default runs: ``gpu-125m`` with a dense SwiGLU and with MoA-GLU FFNs, and the
``gpu-125m-moe`` preset (MoA-GLU experts). Each run builds the preset's model
(vocabulary of its tokenizer), the trainer's optimizers (:func:`moa.train.optim.
build_optimizers`) and trains ``--steps`` steps of ``--batch`` × ``--seq`` random tokens
under bf16 autocast with gradient clipping, as the trainer does; token content does not
change the work (for the MoE, random tokens route about evenly). Compilation is regional
by default (each transformer block compiled once and reused by all blocks: compile time
of one block instead of twelve); ``--compile whole`` compiles the model as the trainer does.

MFU = model FLOPs per token × tokens/s / peak, with model FLOPs per token = 6 × (active
non-embedding parameters + the LM head's V·d) + 12 · L · T · d (attention scores and
values; PaLM, arXiv 2204.02311, appendix B) and the peak bf16 dense rate of the GPU
(``--peak-tflops``, default 989: H100/H200 SXM). Timing: CUDA events around the timed
steps after warm-up (which includes compilation, reported as ``warmup_s``).

    PYTHONPATH=src python3 benchmarks/gpu_train_bench.py --json train.json
    PYTHONPATH=src python3 benchmarks/gpu_train_bench.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

RUNS = ("gpu-125m:swiglu", "gpu-125m:moa-glu", "gpu-125m-moe")


def model_flops_per_token(model, seq: int) -> float:
    from moa.model import param_counts

    cfg = model.config
    counts = param_counts(model)
    head = cfg.vocab_size * cfg.d_model  # the LM head matmul (tied or not); the embedding lookup is free
    return 6.0 * (counts["active_non_embedding"] + head) + 12.0 * cfg.n_layers * seq * cfg.d_model


def run_one(spec: str, args, device) -> dict:
    from moa.model import Transformer, lm_loss, param_counts
    from moa.nn import moe_aux_loss
    from moa.presets import get_preset, vocab_size_of
    from moa.train.optim import build_optimizers

    preset, _, ffn = spec.partition(":")
    cfg = get_preset(preset)
    mcfg = cfg.model.replace(vocab_size=vocab_size_of(cfg.data.tokenizer), max_seq_len=max(cfg.model.max_seq_len, args.seq),
                             **({"ffn": ffn} if ffn else {}))
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Transformer(mcfg).to(device)
    optimizers = build_optimizers(model, cfg.optim)
    step_model = model
    if args.compile == "regional":
        for block in model.blocks:
            block.compile()
    elif args.compile == "whole":
        step_model = torch.compile(model)
    gen = torch.Generator(device=device).manual_seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = device.type == "cuda" or args.smoke

    def step() -> torch.Tensor:
        tokens = torch.randint(0, mcfg.vocab_size, (args.batch, args.seq + 1), device=device, generator=gen)
        x, y = tokens[:, :-1], tokens[:, 1:]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = lm_loss(step_model(x), y)
            objective = loss + moe_aux_loss(model) if mcfg.moe.enabled else loss
        objective.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        return loss.detach()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    first = [step().item() for _ in range(args.warmup)][0]
    sync()
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t1 = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    if device.type == "cuda":
        end.record()
        end.synchronize()
        elapsed = start.elapsed_time(end) / 1e3
        peak = torch.cuda.max_memory_allocated(device)
    else:
        elapsed, peak = time.perf_counter() - t1, None
    tokens_per_s = args.steps * args.batch * args.seq / elapsed
    flops = model_flops_per_token(model, args.seq)
    counts = param_counts(model)
    out = dict(run=spec, ffn=mcfg.ffn, moe_experts=mcfg.moe.num_experts, d_model=mcfg.d_model, n_layers=mcfg.n_layers,
               vocab_size=mcfg.vocab_size, params_total=counts["total"], params_active=counts["active"],
               batch=args.batch, seq=args.seq, steps=args.steps, compile=args.compile, warmup_s=warmup_s,
               step_s=elapsed / args.steps, tokens_per_s=tokens_per_s, model_flops_per_token=flops,
               mfu=flops * tokens_per_s / (args.peak_tflops * 1e12), peak_bytes=peak,
               loss_first=first, loss_last=losses[-1].item())
    del model, step_model, optimizers
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=",".join(RUNS), help="preset[:ffn] comma-separated")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--compile", choices=("regional", "whole", "none"), default="regional")
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--budget-s", type=float, default=110.0, help="skip the remaining runs after this long")
    p.add_argument("--json", default=None)
    p.add_argument("--smoke", action="store_true", help="debug-size models on CPU: a syntax/API check")
    args = p.parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        args.runs, args.batch, args.seq, args.steps, args.warmup = "debug:swiglu,debug:moa-glu,debug-moe", 2, 32, 2, 1
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    t_start = time.monotonic()
    rows, skipped = [], []
    print(f"{'run':>20} {'tok/s':>10} {'MFU':>6} {'peak GiB':>9} {'step ms':>8} {'warmup s':>9} {'loss':>13}", flush=True)
    for spec in args.runs.split(","):
        if time.monotonic() - t_start > args.budget_s:
            skipped.append(spec)
            print(f"# time budget reached: {spec} skipped", flush=True)
            continue
        r = run_one(spec, args, device)
        rows.append(r)
        peak = f"{r['peak_bytes'] / 2**30:.2f}" if r["peak_bytes"] is not None else "-"
        print(f"{spec:>20} {r['tokens_per_s']:>10,.0f} {r['mfu']:>6.3f} {peak:>9} {r['step_s'] * 1e3:>8.1f} "
              f"{r['warmup_s']:>9.1f} {r['loss_first']:>6.3f}→{r['loss_last']:<6.3f}", flush=True)
        write_json(args, device, rows, skipped, t_start)  # after each run: a stopped run keeps what it measured
    dense = {r["ffn"]: r for r in rows if not r["moe_experts"]}
    if "swiglu" in dense and "moa-glu" in dense:
        a, b = dense["moa-glu"], dense["swiglu"]
        ratio = b["tokens_per_s"] / a["tokens_per_s"]
        mem = a["peak_bytes"] / b["peak_bytes"] if a["peak_bytes"] and b["peak_bytes"] else None
        print(f"# moa-glu / swiglu step time {ratio:.3f}" + (f", peak memory {mem:.3f}" if mem else ""), flush=True)
    write_json(args, device, rows, skipped, t_start)
    return 0


def write_json(args, device, rows, skipped, t_start) -> None:
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": str(device), "smoke": args.smoke,
                       "peak_tflops": args.peak_tflops, "rows": rows, "skipped": skipped,
                       "wall_s": time.monotonic() - t_start}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
