"""``moa presets``: list run presets with their model sizes (computed, not hard-coded)."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("presets", help="list run presets and their sizes")


def run(args) -> int:
    from moa.cli.train import describe
    from moa.presets import PRESETS

    print(f"{'preset':<10} {'d':>5} {'L':>3} {'H':>3} {'ffn':<8} {'tokenizer':<10} {'params':>14} {'non-emb':>14} {'tokens':>15}")
    for name, fn in PRESETS.items():
        cfg = fn()
        d = describe(cfg)
        m = cfg.model
        print(f"{name:<10} {m.d_model:>5} {m.n_layers:>3} {m.n_heads:>3} {m.ffn:<8} {cfg.data.tokenizer:<10} "
              f"{d['total']:>14,} {d['non_embedding']:>14,} {cfg.train.tokens:>15,}")
    print("\nAny preset takes key=value overrides, e.g. `moa train --preset cpu-s model.ffn=swiglu`.")
    return 0
