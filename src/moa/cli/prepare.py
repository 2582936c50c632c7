"""``moa prepare``: pre-tokenize a text source into fixed-size shards, streaming and in parallel.

A thin wrapper over :func:`moa.data.pretokenize.pretokenize`; train on the result with
``moa train data.source=prepared:DIR data.tokenizer=SPEC``.
"""

from __future__ import annotations

import argparse
import math
import time

DEFAULT_SHARD_TOKENS_TEXT = "100M"


def _count(text: str) -> int:
    """``100M``/``2.5G``/``65536`` → an integer (k/M/G are powers of ten)."""
    scale = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count; use e.g. 65536, 100M or 2.5G") from None
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole non-negative count")
    return int(value)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "prepare", help="pre-tokenize a text source into token shards (streaming, parallel, resumable)",
        description="Tokenize SOURCE (text:PATH, jsonl:PATH, parquet:PATH, hf:NAME, stdlib) into fixed-size "
                    "uint16/uint32 shards plus manifest.json in DIR, with N worker processes and bounded memory. "
                    "Rerunning an interrupted prepare resumes it; the shards are identical for any --workers. "
                    "Train on it with: moa train data.source=prepared:DIR data.tokenizer=SPEC")
    p.add_argument("source", metavar="SOURCE", help="text:PATH | jsonl:PATH | parquet:PATH | hf:NAME[:CONFIG] | stdlib")
    p.add_argument("--tokenizer", required=True, metavar="SPEC",
                   help="bytes | bpe:N (trained on the first 50M characters of the training split) | hf:PATH")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="encoder processes (default: all cores up to 8; 0 encodes in the main process)")
    p.add_argument("--shard-tokens", type=_count, default=DEFAULT_SHARD_TOKENS_TEXT, metavar="N",
                   help=f"tokens per shard (default {DEFAULT_SHARD_TOKENS_TEXT})")
    p.add_argument("--val-fraction", type=float, default=0.05, metavar="F", help="held-out share (default 0.05)")
    p.add_argument("--max-chars", type=_count, default=None, metavar="N",
                   help="keep the first N characters of the source (hf: sources default to 50M)")
    p.add_argument("--text-field", default="text", metavar="NAME", help="JSON field / parquet column of the text")
    p.add_argument("--dtype", default="auto", choices=("auto", "uint16", "uint32"),
                   help="token dtype of the shards (auto: uint16 when the vocab fits)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from moa.data import DataConfig
    from moa.data.pretokenize import pretokenize

    config = DataConfig(source=args.source, tokenizer=args.tokenizer, val_fraction=args.val_fraction,
                        max_chars=args.max_chars, text_field=args.text_field)
    if config.source_spec.scheme in ("tokens", "prepared"):
        raise ValueError(f"source={args.source!r} is already tokenized; moa prepare reads text sources")
    started = time.perf_counter()
    manifest = pretokenize(config, args.out, workers=args.workers, shard_tokens=args.shard_tokens,
                           dtype=args.dtype, progress=False if args.no_progress else None)
    seconds = time.perf_counter() - started
    splits = manifest["splits"]
    tokens = sum(s["tokens"] for s in splits.values())
    docs = sum(s["documents"] for s in splits.values())
    print(f"prepared {args.source} with {manifest['tokenizer']} (vocab {manifest['vocab_size']}, "
          f"{manifest['dtype']}) into {args.out}")
    for name, s in splits.items():
        print(f"  {name:5s} {s['documents']:>12,} documents {s['bytes']:>16,} bytes {s['tokens']:>16,} tokens "
              f"in {len(s['shards'])} shard(s)")
    print(f"  total {docs:,} documents, {tokens:,} tokens in {seconds:.1f} s this run "
          f"({tokens / max(seconds, 1e-9):,.0f} tokens/s if nothing was reused)")
    print(f"train with: moa train data.source=prepared:{args.out} data.tokenizer={manifest['tokenizer']}")
    return 0
