"""``moa export``: a trained run as a Hugging Face ``transformers`` model directory."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a run as a transformers model directory",
                       description="Write RUN_DIR's final weights, tokenizer, config.json and generation_config.json "
                                   "to --out; AutoModelForCausalLM.from_pretrained(OUT) loads it (LlamaForCausalLM "
                                   "for swiglu/geglu/reglu runs, else MoaForCausalLM with its trust_remote_code files).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="new directory to write")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="weight dtype (default float32)")


def run(args) -> int:
    from moa.hf.export import export_run

    out = export_run(args.run_dir, args.out, args.dtype)
    print(f"exported {args.run_dir} -> {out}")
    return 0
