"""MoE layer step time vs its slow reference and vs a dense FFN of the same active size.

For each d_model and expert FFN, forward+backward (loss = mean(y²) + the MoE aux losses)
of, side by side in one process (interleaved repeats after warm-up, medians):

* ``moe``: :class:`moa.nn.MoE` with the portable per-expert loop dispatch;
* ``grouped``: the same layer (same weights) with ``dispatch="grouped"``
  (``torch._grouped_mm``; runs on CPU in fp32 too);
* ``dense``: one FFN of the same kind and mixing with hidden = top_k · expert hidden,
  i.e. the same active expert parameters (plus the router for the MoE);
* ``ref``: :func:`moa.nn.moe_reference_forward`, a Python loop over tokens, on
  ``--ref-tokens`` tokens only; compared per token.

Ratios: moe/dense (time per step, same tokens), grouped/moe, ref/moe (per token).

    python benchmarks/moe_dispatch.py                     # d = 128, 256; 4096 tokens; E=8, k=2
    python benchmarks/moe_dispatch.py --d-models 128 --reps 3 --ffns swiglu
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from moa.nn import MoE, MoEConfig, build_ffn, ffn_config, moe_aux_loss, moe_cost, moe_reference_forward
from moa.utils.timing import interleaved_median


def make_step(module, x, forward=None):
    with_aux = forward is None and isinstance(module, MoE)  # the reference sets no losses
    forward = forward or module

    def step():
        module.zero_grad(set_to_none=True)
        loss = forward(x).float().square().mean()
        if with_aux:
            loss = loss + moe_aux_loss(module)
        loss.backward()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-models", default="128,256")
    p.add_argument("--ffns", default="swiglu,moa-glu")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--ref-tokens", type=int, default=64)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"threads={torch.get_num_threads()}, device={device}, dtype={dtype}, tokens={args.tokens}, "
          f"ref tokens={args.ref_tokens}, E={args.experts}, top_k={args.top_k}")
    print(f"{'d':>4} {'ffn':>8} {'hidden':>6} {'moe ms':>8} {'grp ms':>8} {'dense ms':>8} {'ref ms':>8} "
          f"{'moe/dense':>9} {'grp/moe':>8} {'ref/moe per tok':>15}")
    rows = []
    for d in [int(v) for v in args.d_models.split(",")]:
        for name in args.ffns.split(","):
            torch.manual_seed(0)
            ffn = ffn_config(name)
            cfg = MoEConfig(num_experts=args.experts, top_k=args.top_k, dispatch="loop")
            moe = MoE(cfg, ffn, d)
            moe.reset_parameters(std=0.02)
            grouped = MoE(cfg.replace(dispatch="grouped"), ffn, d)
            grouped.load_state_dict(moe.state_dict())
            hidden = moe.hidden_dim
            dense = build_ffn(ffn.replace(hidden_dim=args.top_k * hidden), d)
            modules = [m.to(device=device, dtype=dtype) for m in (moe, grouped, dense)]
            x = torch.randn(args.tokens, d, device=device, dtype=dtype)
            x_ref = x[: args.ref_tokens]
            steps = [make_step(m, x) for m in modules]
            steps.append(make_step(moe, x_ref, lambda t: moe_reference_forward(moe, t)))
            for _ in range(args.warmup):
                for s in steps:
                    s()
            t_moe, t_grp, t_dense, t_ref = interleaved_median(steps, args.reps, device)
            per_tok = (t_ref / args.ref_tokens) / (t_moe / args.tokens)
            print(f"{d:>4} {name:>8} {hidden:>6} {t_moe*1e3:>8.1f} {t_grp*1e3:>8.1f} {t_dense*1e3:>8.1f} "
                  f"{t_ref*1e3:>8.1f} {t_moe/t_dense:>9.2f} {t_grp/t_moe:>8.2f} {per_tok:>15.0f}", flush=True)
            cost = moe_cost(cfg, ffn, d)
            rows.append(dict(d_model=d, ffn=name, expert_hidden=hidden, params_active=cost.params_active,
                             params_total=cost.params_total, t_moe_s=t_moe, t_grouped_s=t_grp,
                             t_dense_s=t_dense, t_ref_s=t_ref, ref_tokens=args.ref_tokens, tokens=args.tokens))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
