"""``prepare_data``: any source → memory-mapped train/val token sequences and their tokenizer.

* ``prepared:DIR``: the shards of a ``moa prepare`` run, opened where they lie.
* ``stdlib``/``text:``/``jsonl:``/``parquet:``/``hf:``: pre-tokenized by the same streaming,
  parallel, resumable pipeline as ``moa prepare`` (:mod:`moa.data.pretokenize`) into
  ``<cache>/prepared/<key>/`` once; later calls only list and fingerprint the source and
  open the shards.
* ``tokens:GLOB``: existing shards opened in place (no copy); a first call checks every id
  against the tokenizer and records the result in ``<cache>/tokens/<key>/meta.json``.

No path holds the corpus in memory: a split of one shard is an ``np.memmap``; a split of
several is a :class:`~moa.data.shards.ShardedTokens` view over their memmaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from moa.data.cache import atomic_write_json, cache_root, read_json, short_hash
from moa.data.config import DataConfig, DataError, first_line
from moa.data.pretokenize import (DEFAULT_SHARD_TOKENS, MANIFEST, PREPARED_FORMAT, PROGRESS, SPLITS,
                                  TOKENIZER_FILE, pretokenize)
from moa.data.shards import concat_tokens, list_shards, read_shard_info, shards_fingerprint, split_shards, tail_cut
from moa.data.sources import plan_source
from moa.data.tokenizer import (ByteTokenizer, HFTokenizer, Tokenizer, bpe_tokenizer, count_utf8_bytes,
                                load_hf_tokenizer, load_tokenizer)

TOKENS_CACHE_FORMAT = "moa-tokens-v2"
# Tokens scanned at a time when checking or counting large shards.
SCAN_CHUNK = 1 << 24


@dataclass(frozen=True)
class PreparedData:
    """Tokenized splits and everything needed to interpret them.

    train_tokens, val_tokens: 1-D uint16/uint32 token sequences, read-only memmaps (or a
        ``ShardedTokens`` view over several): ``len``, slices, ``dtype``.
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


def prepare_data(config: DataConfig, *, workers: Optional[int] = None, progress: Optional[bool] = None) -> PreparedData:
    """Tokenized train/val splits of ``config.source``, built once and then memory-mapped.

    workers/progress: passed to :func:`moa.data.pretokenize.pretokenize` for text sources
    (the result does not depend on them). Concurrent calls are safe: one prepares the
    folder (it holds a lock on it) and the others wait, then read it. Under torchrun rank 0
    calls it first and the other ranks after a barrier.
    """
    spec = config.source_spec
    if spec.scheme == "tokens":
        return _open_token_shards(config)
    if spec.scheme == "prepared":
        return open_prepared(Path(spec.arg).expanduser(), config)
    plan = plan_source(config)
    folder = prepared_cache_folder(config, plan.fingerprint)
    pretokenize(config, folder, workers=workers, progress=progress, plan=plan)
    return open_prepared(folder, config)


def prepared_cache_folder(config: DataConfig, source_fingerprint: str) -> Path:
    """``<cache>/prepared/<key>``: one folder per (corpus, tokenizer) pair."""
    spec = config.tokenizer_spec
    tokenizer_key = load_hf_tokenizer(spec.path, config.tokenizer).fingerprint if spec.scheme == "hf" else config.tokenizer
    key = short_hash(PREPARED_FORMAT, source_fingerprint, tokenizer_key, str(DEFAULT_SHARD_TOKENS))
    return cache_root(config.cache_dir) / "prepared" / key


def open_prepared(folder: Path, config: DataConfig) -> PreparedData:
    """The splits of a ``moa prepare`` output folder; DataError if it is unfinished or foreign."""
    manifest = read_json(folder / MANIFEST)
    where = f"prepared:{folder}"
    if manifest is None:
        if (folder / PROGRESS).is_file():
            raise DataError(f"{where} is an unfinished moa prepare; run the same moa prepare command again to finish it")
        if not folder.is_dir():
            raise DataError(f"{where}: folder {str(folder)!r} does not exist")
        raise DataError(f"{where} has no {MANIFEST}; it is not the output of moa prepare")
    if manifest.get("format") != PREPARED_FORMAT:
        raise DataError(f"{where} has format {manifest.get('format')!r}; this moa reads {PREPARED_FORMAT!r}")
    tokenizer = _prepared_tokenizer(folder, manifest, config)
    arrays = []
    for name in SPLITS:
        parts = []
        for entry in manifest["splits"][name]["shards"]:
            shard = read_shard_info(folder / entry["path"]) if (folder / entry["path"]).is_file() else None
            if shard is None or shard.count != entry["tokens"] or shard.dtype != manifest["dtype"]:
                raise DataError(f"{where}: shard {entry['path']!r} is missing or does not match the manifest "
                                f"({entry['tokens']} {manifest['dtype']} tokens); rerun moa prepare into a new folder")
            parts.append(shard.tokens())
        arrays.append(concat_tokens(parts))
    meta = {k: v for k, v in manifest.items() if k not in ("files", "identity")}
    meta.update(source=config.source, fingerprint=manifest["source_fingerprint"], tokenizer=config.tokenizer,
                tokenizer_path=tokenizer.path, cache_path=str(folder), prepared_source=manifest["source"])
    return PreparedData(arrays[0], arrays[1], tokenizer, manifest["source_fingerprint"], meta)


def _prepared_tokenizer(folder: Path, manifest: dict, config: DataConfig) -> Tokenizer:
    made_with = manifest["tokenizer"]
    if manifest["tokenizer_file"] is None:
        tokenizer = ByteTokenizer()
    else:
        from tokenizers import Tokenizer as _Tok

        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise DataError(f"prepared:{folder} has no {TOKENIZER_FILE}; rerun moa prepare into a new folder")
        try:
            tok = _Tok.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on a damaged file
            raise DataError(f"prepared:{folder}: {TOKENIZER_FILE} cannot be read ({first_line(e)}); "
                            "rerun moa prepare into a new folder") from None
        tokenizer = (bpe_tokenizer(tok, made_with, path=str(path)) if made_with.startswith("bpe:")
                     else HFTokenizer(tok, config.tokenizer, path=str(path)))
    if tokenizer.fingerprint != manifest["tokenizer_fingerprint"]:
        raise DataError(f"prepared:{folder}: {TOKENIZER_FILE} is not the tokenizer the shards were made with")
    same = config.tokenizer == made_with
    if not same and config.tokenizer_spec.scheme == "hf" and made_with.startswith("hf:"):
        same = load_hf_tokenizer(config.tokenizer_spec.path, config.tokenizer).fingerprint == tokenizer.fingerprint
    if not same:
        raise DataError(f"prepared:{folder} was made with tokenizer={made_with!r}, not data.tokenizer="
                        f"{config.tokenizer!r}; set data.tokenizer={made_with}")
    return tokenizer


# Pre-tokenized shards ---------------------------------------------------------------

def _open_token_shards(config: DataConfig) -> PreparedData:
    shards = list_shards(config)
    is_val = split_shards(config, shards)
    fingerprint = shards_fingerprint(config, shards, is_val)
    tokenizer = load_tokenizer(config)
    folder = cache_root(config.cache_dir) / "tokens" / f"{fingerprint}-{tokenizer.fingerprint}"
    if len(shards) == 1:
        whole = shards[0].tokens()
        cut = tail_cut(len(whole), config.val_fraction)
        split_parts = {"train": [whole[:cut]], "val": [whole[cut:]]}
    else:
        split_parts = {name: [s.tokens() for s, v in zip(shards, is_val) if v == (name == "val")] for name in SPLITS}
    meta = read_json(folder / "meta.json")
    if meta is None or meta.get("format") != TOKENS_CACHE_FORMAT:
        for shard in shards:
            _check_ids(shard.tokens(), tokenizer, shard.rel)
        dtypes = {s.dtype for s in shards}
        if len(dtypes) > 1:
            raise DataError(f"source={config.source!r} mixes shard dtypes {sorted(dtypes)}; use one dtype")
        meta = {
            "format": TOKENS_CACHE_FORMAT, "fingerprint": fingerprint, "tokenizer_fingerprint": tokenizer.fingerprint,
            "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id, "dtype": shards[0].dtype,
            "val_fraction": config.val_fraction,
            "splits": {name: {"files": len(parts) if len(shards) > 1 else 1, "tokens": sum(len(t) for t in parts),
                              "bytes": sum(_count_bytes(tokenizer, t) for t in parts)}
                       for name, parts in split_parts.items()},
            "shards": [{"path": s.rel, "split": "val" if v else "train", "dtype": s.dtype, "header": s.offset > 0,
                        "tokens": s.count} for s, v in zip(shards, is_val)],
        }
        atomic_write_json(folder / "meta.json", meta)
    meta = dict(meta, source=config.source, tokenizer=config.tokenizer, tokenizer_path=tokenizer.path,
                cache_path=str(folder))
    return PreparedData(concat_tokens(split_parts["train"]), concat_tokens(split_parts["val"]), tokenizer,
                        fingerprint, meta)


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
