"""``prepare_data``: corpus → tokenizer → tokenized train/val splits, cached on disk.

The first call reads and splits the corpus, loads (or trains, on the training split only)
the tokenizer, encodes both splits in parallel batches and writes them to
``<cache>/tokens/<corpus_fp>-<tokenizer_fp>/`` (layout in :mod:`moa.data.cache`). Later
calls re-read the corpus only to fingerprint it, find the folder and memmap its files.

Token stream: every document is followed by the tokenizer's ``separator_ids`` (the EOS:
byte 0xFF for ``bytes``, ``<|endoftext|>`` for ``bpe:N``); ids are uint16 when the
vocabulary fits 65536 ids, else uint32. ``tokens:`` shards are used in place when there is
one (train and val are views of it) and concatenated into the cache when there are several.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from moa.data.cache import TokenFileWriter, atomic_write_json, cache_root, open_tokens, read_json, token_dtype
from moa.data.config import DataConfig, DataError
from moa.data.shards import list_shards, shards_fingerprint, split_shards, tail_cut
from moa.data.sources import Corpus, hf_fingerprint, load_corpus, load_hf_corpus
from moa.data.tokenizer import Tokenizer, bpe_path, count_utf8_bytes, load_tokenizer

log = logging.getLogger(__name__)

CACHE_FORMAT = "moa-tokens-v1"
SPLITS = ("train", "val")
# Characters handed to one encode_batch call: enough pieces to keep every core busy,
# few enough that the ids of one batch stay small in memory.
ENCODE_BATCH_CHARS = 1 << 22
# Tokens scanned at a time when checking or counting large shards.
SCAN_CHUNK = 1 << 24


@dataclass(frozen=True)
class PreparedData:
    """Tokenized splits and everything needed to interpret them.

    train_tokens, val_tokens: 1-D uint16/uint32 arrays (read-only memmaps when cached).
    tokenizer: ``spec``, ``vocab_size``, ``eos_id``, ``encode``, ``decode``, ...
    fingerprint: the corpus fingerprint (16 hex digits).
    meta: JSON-serialisable record: source, tokenizer, counts per split (files,
        documents, chars, bytes, tokens), dtype, fingerprints, cache path.
    """

    train_tokens: np.ndarray
    val_tokens: np.ndarray
    tokenizer: Tokenizer
    fingerprint: str
    meta: dict


def prepare_data(config: DataConfig) -> PreparedData:
    """Tokenized train/val splits of ``config.source``, built once and then memmapped.

    Under torchrun, call it on rank 0 first and barrier before the other ranks call it:
    concurrent calls are safe (atomic writes) but would each do the work.
    """
    scheme = config.source_spec.scheme
    if scheme == "tokens":
        return _prepare_shards(config)
    corpus_fn = (lambda: load_hf_corpus(config)) if scheme == "hf" else (lambda: load_corpus(config))
    corpus = _Memo(corpus_fn)
    fingerprint = hf_fingerprint(config) if scheme == "hf" else corpus().fingerprint

    if config.tokenizer_spec.scheme == "bpe" and not bpe_path(config, fingerprint).exists():
        log.info("training %s on %d training documents", config.tokenizer, len(corpus().train.documents))
        tokenizer = load_tokenizer(config, fingerprint, corpus().train.documents)
    else:
        tokenizer = load_tokenizer(config, fingerprint)

    folder = cache_root(config.cache_dir) / "tokens" / f"{fingerprint}-{tokenizer.fingerprint}"
    cached = _load_cached(folder, config, tokenizer)
    if cached is not None:
        return cached
    _build_text(folder, config, corpus(), tokenizer, fingerprint)
    return _load_cached(folder, config, tokenizer)


class _Memo:
    """Calls ``fn`` once, on first use: the corpus is read only when it is needed."""

    def __init__(self, fn: Callable[[], Corpus]) -> None:
        self._fn, self._value = fn, None

    def __call__(self) -> Corpus:
        if self._value is None:
            self._value = self._fn()
        return self._value


def _load_cached(folder: Path, config: DataConfig, tokenizer: Tokenizer):
    meta = read_json(folder / "meta.json")
    if meta is None or meta.get("format") != CACHE_FORMAT:
        return None
    if meta.get("in_place"):
        shard = meta["in_place"]
        if not Path(shard["path"]).is_file():
            return None  # the shard moved: rebuild from where it is now
        whole = open_tokens(Path(shard["path"]), meta["dtype"], shard["count"], shard["offset"])
        arrays = [whole[: shard["cut"]], whole[shard["cut"]:]]
    else:
        arrays = []
        for name in SPLITS:
            count = meta["splits"][name]["tokens"]
            path = folder / f"{name}.bin"
            if count and (not path.is_file() or path.stat().st_size != count * np.dtype(meta["dtype"]).itemsize):
                return None  # a file went missing or was cut short: rebuild
            arrays.append(open_tokens(path, meta["dtype"], count))
    # A cache hit may come from a copy of the same corpus elsewhere: describe this call.
    meta.update(source=config.source, tokenizer=config.tokenizer, tokenizer_path=tokenizer.path,
                cache_path=str(folder))
    return PreparedData(arrays[0], arrays[1], tokenizer, meta["fingerprint"], meta)


def _base_meta(config: DataConfig, tokenizer: Tokenizer, fingerprint: str, dtype: str) -> dict:
    return {
        "format": CACHE_FORMAT,
        "source": config.source,
        "tokenizer": config.tokenizer,
        "tokenizer_path": tokenizer.path,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "fingerprint": fingerprint,
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "separator_ids": [int(i) for i in tokenizer.separator_ids],
        "dtype": dtype,
        "text_field": config.text_field,
        "val_fraction": config.val_fraction,
        "max_chars": config.max_chars,
    }


def _build_text(folder: Path, config: DataConfig, corpus: Corpus, tokenizer: Tokenizer, fingerprint: str) -> None:
    started = time.perf_counter()
    dtype = token_dtype(tokenizer.vocab_size)
    splits = {}
    for name in SPLITS:
        split = getattr(corpus, name)
        with TokenFileWriter(folder / f"{name}.bin", dtype) as writer:
            n_bytes = _encode_documents(tokenizer, split.documents, writer)
            writer.commit()
        splits[name] = {"files": len(split.files), "documents": len(split.documents),
                        "chars": split.chars, "bytes": n_bytes, "tokens": writer.count}
    atomic_write_json(folder / "manifest.json", {"files": corpus.manifest, "skipped": corpus.skipped})
    meta = _base_meta(config, tokenizer, fingerprint, dtype)
    meta.update(splits=splits, skipped_files=len(corpus.skipped),
                build_seconds=round(time.perf_counter() - started, 3))
    atomic_write_json(folder / "meta.json", meta)
    log.info("tokenized %s with %s into %s", config.source, config.tokenizer, folder)


def _encode_documents(tokenizer: Tokenizer, documents: Iterable[str], writer: TokenFileWriter) -> int:
    """Encode ``documents`` (each followed by the separator) into ``writer``; return their UTF-8 bytes."""
    separator = np.asarray(tokenizer.separator_ids, dtype=np.int64)
    pieces: list[str] = []
    ends: list[bool] = []  # whether the piece is the last of its document
    size = 0
    n_bytes = 0

    def flush() -> None:
        parts = []
        for ids, end in zip(tokenizer.encode_batch(pieces), ends):
            parts.append(ids)
            if end:
                parts.append(separator)
        writer.write(np.concatenate(parts))
        pieces.clear()
        ends.clear()

    for doc in documents:
        n_bytes += len(doc.encode("utf-8"))
        cut = tokenizer.pieces(doc)
        pieces.extend(cut)
        ends.extend(i == len(cut) - 1 for i in range(len(cut)))
        size += len(doc)
        if size >= ENCODE_BATCH_CHARS:
            flush()
            size = 0
    if pieces:
        flush()
    return n_bytes


# Pre-tokenized shards ---------------------------------------------------------------

def _prepare_shards(config: DataConfig) -> PreparedData:
    shards = list_shards(config)
    is_val = split_shards(config, shards)
    fingerprint = shards_fingerprint(config, shards, is_val)
    tokenizer = load_tokenizer(config)
    folder = cache_root(config.cache_dir) / "tokens" / f"{fingerprint}-{tokenizer.fingerprint}"
    cached = _load_cached(folder, config, tokenizer)
    if cached is not None:
        return cached

    for shard in shards:
        _check_ids(shard.tokens(), tokenizer, shard.rel)
    if len(shards) == 1:
        # One shard is used where it lies; the cache holds only its meta.json.
        shard = shards[0]
        cut = tail_cut(shard.count, config.val_fraction)
        dtype = shard.dtype
        in_place = {"path": str(shard.path.resolve()), "offset": shard.offset, "count": shard.count, "cut": cut}
        parts = {"train": [shard.tokens()[:cut]], "val": [shard.tokens()[cut:]]}
        files = {"train": 1, "val": 1}
    else:
        dtype = token_dtype(tokenizer.vocab_size)
        in_place = None
        parts = {name: [s.tokens() for s, v in zip(shards, is_val) if v == (name == "val")] for name in SPLITS}
        files = {name: len(parts[name]) for name in SPLITS}
        for name in SPLITS:
            with TokenFileWriter(folder / f"{name}.bin", dtype) as writer:
                for tokens in parts[name]:
                    for start in range(0, len(tokens), SCAN_CHUNK):
                        writer.write(tokens[start:start + SCAN_CHUNK])
                writer.commit()
    splits = {
        name: {"files": files[name], "tokens": sum(len(t) for t in parts[name]),
               "bytes": sum(_count_bytes(tokenizer, t) for t in parts[name])}
        for name in SPLITS
    }
    meta = _base_meta(config, tokenizer, fingerprint, dtype)
    meta.update(splits=splits, in_place=in_place,
                shards=[{"path": s.rel, "split": "val" if v else "train", "dtype": s.dtype, "tokens": s.count}
                        for s, v in zip(shards, is_val)])
    atomic_write_json(folder / "meta.json", meta)
    return _load_cached(folder, config, tokenizer)


def _check_ids(tokens: np.ndarray, tokenizer: Tokenizer, where: str) -> None:
    # An id beyond the embedding table fails on GPU as an opaque device assert; catch it here.
    for start in range(0, len(tokens), SCAN_CHUNK):
        top = int(tokens[start:start + SCAN_CHUNK].max())
        if top >= tokenizer.vocab_size:
            raise DataError(
                f"shard {where!r} holds token id {top} >= vocab_size {tokenizer.vocab_size} of "
                f"tokenizer={tokenizer.spec!r}; use the tokenizer that made the shards"
            )


def _count_bytes(tokenizer: Tokenizer, tokens: np.ndarray) -> int:
    return sum(count_utf8_bytes(tokenizer, tokens[s:s + SCAN_CHUNK]) for s in range(0, len(tokens), SCAN_CHUNK))
