"""``moa upcycle``: a local Llama/Mistral/Qwen2 model with its MLPs turned into LA/MoA MLPs."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("upcycle", help="turn a local Llama-family model's MLPs into LA/MoA (same function)",
                       description="Load HF_DIR (a local transformers Llama, Mistral or Qwen2 model), replace every "
                                   "SwiGLU MLP by an LA or MoA MLP that computes exactly the same function and whose "
                                   "mixing parameters train from the first step, and save the result to --out.")
    p.add_argument("hf_dir", metavar="HF_DIR")
    p.add_argument("--ffn", default="moa-glu", help="la-glu or moa-glu (default moa-glu)")
    p.add_argument("--out", required=True, help="new directory to write")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"), help="load and save in this dtype")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="gate_groups=N, temperature=T, la_granularity=layer|channel, activations=a,b,c")


def parse_overrides(pairs: list[str]) -> dict:
    from moa.hf.upcycle import OVERRIDES

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in OVERRIDES:
            raise ValueError(f"override {pair!r} is invalid; valid keys: {', '.join(OVERRIDES)}")
        if key == "activations":
            out[key] = tuple(v for v in value.split(",") if v)
        elif key == "gate_groups":
            try:
                out[key] = int(value)
            except ValueError:
                raise ValueError(f"gate_groups={value!r} must be an integer") from None
        elif key == "temperature":
            try:
                out[key] = float(value)
            except ValueError:
                raise ValueError(f"temperature={value!r} must be a number") from None
        else:
            out[key] = value
    return out


def run(args) -> int:
    from moa.hf.upcycle import upcycle_dir

    out = upcycle_dir(args.hf_dir, args.out, args.ffn, args.dtype, **parse_overrides(args.overrides))
    print(f"upcycled {args.hf_dir} ({args.ffn}) -> {out}")
    return 0
