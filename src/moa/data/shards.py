"""Pre-tokenized shards (``tokens:GLOB[@DTYPE]``): find, type, fingerprint and memmap them.

A shard is a ``.bin`` file of little-endian token ids. Its dtype is decided per shard:

1. an explicit suffix, ``tokens:data/*.bin@uint32``, wins;
2. else a llm.c / modded-nanogpt header (256 int32, magic 20240520 → uint16 ids,
   20240801 → uint32 ids, ``header[2]`` = token count) is detected and skipped;
3. else the file is headerless uint16 (nanoGPT's ``train.bin``), the common case for
   vocabularies up to 65536.

The GLOB may also be a single file or a folder (its ``*.bin`` files). Shards are split by
file like text (``sha256`` of the relative path against ``val_fraction``; see
:mod:`moa.data.sources`); a single shard gives its tail ``val_fraction`` of tokens to
validation. The fingerprint hashes each shard's relative path, size and the first and
last MiB of its bytes, not all of it: shards run to many GB and the fingerprint is
recomputed on every run.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from moa.data.cache import open_tokens, short_hash
from moa.data.config import DataConfig, DataError
from moa.data.sources import FORMAT_VERSION, GLOB_CHARS, _glob_root, assign_splits

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
LLMC_MAGIC = {20240520: "uint16", 20240801: "uint32"}
_EDGE = 1 << 20


@dataclass(frozen=True)
class Shard:
    rel: str
    path: Path
    dtype: str
    offset: int  # bytes of header before the first id
    count: int   # token ids in the shard

    def tokens(self) -> np.ndarray:
        return open_tokens(self.path, self.dtype, self.count, self.offset)


def list_shards(config: DataConfig) -> list[Shard]:
    """The shards of a ``tokens:`` source in relative-path order, typed and sized."""
    spec = config.source_spec
    raw = spec.arg
    path = Path(os.path.expanduser(raw))
    if any(c in raw for c in GLOB_CHARS):
        root = _glob_root(path)
        paths = [Path(p) for p in glob.glob(str(path), recursive=True)]
    elif path.is_file():
        root, paths = path.parent, [path]
    elif path.is_dir():
        root, paths = path, list(path.rglob("*.bin"))
    else:
        raise DataError(f"source={config.source!r}: path {str(path)!r} does not exist")
    paths = sorted(p for p in paths if p.is_file())
    if not paths:
        raise DataError(f"source={config.source!r} matches no shard files")
    shards = [_shard(p.relative_to(root).as_posix(), p, spec.dtype, config.source) for p in paths]
    shards = [s for s in shards if s.count > 0]
    if not shards:
        raise DataError(f"source={config.source!r}: every shard is empty")
    return shards


def _shard(rel: str, path: Path, dtype: Optional[str], source: str) -> Shard:
    size = path.stat().st_size
    offset = 0
    count = None
    if size >= HEADER_BYTES:
        header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
        magic_dtype = LLMC_MAGIC.get(int(header[0]))
        if magic_dtype is not None:
            offset, count = HEADER_BYTES, int(header[2])
            dtype = dtype or magic_dtype
    dtype = dtype or "uint16"
    itemsize = np.dtype(dtype).itemsize
    if count is None:
        if size % itemsize:
            raise DataError(f"shard {str(path)!r} has {size} bytes, not a multiple of {dtype}'s {itemsize}")
        count = size // itemsize
    if offset + count * itemsize > size:
        raise DataError(f"shard {str(path)!r} header says {count} tokens but the file is {size} bytes")
    return Shard(rel, path, dtype, offset, count)


def _edge_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_EDGE))
        f.seek(max(0, f.seek(0, os.SEEK_END) - _EDGE))
        h.update(f.read(_EDGE))
    return h.hexdigest()


def shards_fingerprint(config: DataConfig, shards: list[Shard], is_val: list[bool]) -> str:
    parts = [f"{s.rel}\0{s.dtype}\0{s.offset}\0{s.count}\0{v}\0{_edge_digest(s.path)}"
             for s, v in zip(shards, is_val)]
    return short_hash(FORMAT_VERSION, "tokens", repr(float(config.val_fraction)), *parts)


def split_shards(config: DataConfig, shards: list[Shard]) -> list[bool]:
    """``is_val`` per shard (by file); a single shard is split by tail later."""
    if len(shards) == 1:
        return [False]
    return assign_splits([s.rel for s in shards], config.val_fraction)


def tail_cut(count: int, val_fraction: float) -> int:
    """Index where a single shard's validation tail starts (both parts non-empty)."""
    if count < 2:
        raise DataError(f"a single shard of {count} token(s) is too small to split into train and val")
    return min(count - 1, max(1, int(count * (1 - val_fraction))))
