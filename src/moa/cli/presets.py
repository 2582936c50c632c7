"""``moa presets``: list run presets with their model sizes (computed, not hard-coded)."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("presets", help="list run presets and their sizes")


def run(args) -> int:
    from moa.train.runs import describe
    from moa.presets import PRESETS

    print(f"{'preset':<13} {'d':>5} {'L':>3} {'H':>3} {'ffn':<8} {'experts':<8} {'tokenizer':<10} {'params':>14} "
          f"{'non-emb':>14} {'active':>14} {'tokens':>15}")
    for name, fn in PRESETS.items():
        cfg = fn()
        d = describe(cfg)
        m = cfg.model
        experts = f"{m.moe.num_experts}/top{m.moe.top_k}" if m.moe.enabled else "-"
        print(f"{name:<13} {m.d_model:>5} {m.n_layers:>3} {m.n_heads:>3} {m.ffn:<8} {experts:<8} {cfg.data.tokenizer:<10} "
              f"{d['total']:>14,} {d['non_embedding']:>14,} {d['active']:>14,} {cfg.train.tokens:>15,}")
    print("\nactive = parameters one token uses (MoE: router, shared and top-k experts).")
    print("Any preset takes key=value overrides, e.g. `moa train --preset cpu-s model.ffn=swiglu`;")
    print("model.moe.num_experts>0 turns any preset's FFNs into MoE layers of model.ffn experts.")
    return 0
