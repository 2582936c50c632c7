"""Data layer: streamed corpora, tokenizers, token shards and deterministic batches.

Typical use by the trainer::

    data = prepare_data(DataConfig(source="stdlib", tokenizer="bpe:8192"))
    batcher = TokenBatcher(data.train_tokens, seq_len=512, batch_size=64, seed=0)
    x, y = batcher.batch(step, start=rank * 16, stop=(rank + 1) * 16)
    val = val_batches(data.val_tokens, seq_len=512, batch_size=64, max_tokens=2**20)
    bpb = sum_nats / (math.log(2) * sum(count_utf8_bytes(data.tokenizer, y) for _, y in val))

Modules: :mod:`~moa.data.config` (DataConfig, spec strings), :mod:`~moa.data.sources`
(document streams, split, fingerprint), :mod:`~moa.data.shards` (shard formats, memmaps,
``ShardedTokens``), :mod:`~moa.data.tokenizer` (bytes / BPE / local HF),
:mod:`~moa.data.pretokenize` (streaming parallel resumable shards: ``moa prepare``),
:mod:`~moa.data.cache` (cache layout, atomic writes), :mod:`~moa.data.prepare`
(``prepare_data``), :mod:`~moa.data.batching` (``TokenBatcher``, ``val_batches``).
"""

from moa.data.config import DataConfig, DataError, parse_source, parse_tokenizer
from moa.data.prepare import PreparedData, prepare_data
from moa.data.shards import ShardedTokens
from moa.data.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, count_utf8_bytes, load_tokenizer

__all__ = [
    "DataConfig", "DataError", "parse_source", "parse_tokenizer",
    "PreparedData", "prepare_data", "ShardedTokens",
    "Tokenizer", "ByteTokenizer", "HFTokenizer", "load_tokenizer", "count_utf8_bytes",
    "TokenBatcher", "val_batches", "num_windows",
]

_LAZY = {"TokenBatcher", "val_batches", "num_windows"}  # moa.data.batching needs torch; the rest of the layer does not


def __getattr__(name: str):
    # PEP 562: `moa prepare`, `moa --help` and prepare's worker processes never import torch
    if name in _LAZY:
        from moa.data import batching

        return getattr(batching, name)
    raise AttributeError(f"module 'moa.data' has no attribute {name!r}")

