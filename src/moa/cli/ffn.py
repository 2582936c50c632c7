"""``moa ffn``: each FFN variant's parameters and FLOPs at a width, and a fused-vs-reference check."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("ffn", help="FFN variants: parameters, FLOPs, and a fused-vs-reference check")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--variants", default=None, help="comma-separated FFN presets (default: all)")


def run(args) -> int:
    import torch

    from moa.nn import FFN_PRESETS, build_ffn, ffn_config, ffn_cost

    names = args.variants.split(",") if args.variants else list(FFN_PRESETS)
    d = args.d_model
    if d <= 0:
        raise ValueError(f"--d-model={d} must be positive")
    print(f"FFN variants at d_model={d} (forward FLOPs per token; a train step is ~3x)")
    print(f"{'variant':<8} {'type':<4} {'mixing':<6} {'hidden':>6} {'params':>10} {'+mixing':>8} {'MFLOPs':>8} {'max|fused-ref|':>15}")
    torch.manual_seed(0)
    x = torch.randn(64, d, dtype=torch.float64)
    for name in names:
        cfg = ffn_config(name.strip())
        cost = ffn_cost(cfg, d)
        ffn = build_ffn(cfg, d).double()
        if hasattr(ffn, "gate"):
            torch.nn.init.normal_(ffn.gate.weight, std=0.5)
        err = "-"
        if cfg.mixing != "fixed":
            ref = build_ffn(cfg.replace(impl="reference"), d).double()
            ref.load_state_dict(ffn.state_dict())
            err = f"{(ffn(x) - ref(x)).abs().max().item():.1e}"
        print(f"{name:<8} {cfg.kind:<4} {cfg.mixing:<6} {ffn.hidden_dim:>6} {cost.params:>10,} {cost.mixing_params:>8,} "
              f"{cost.flops / 1e6:>8.3f} {err:>15}")
    return 0
