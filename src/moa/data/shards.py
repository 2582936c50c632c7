"""Token shards on disk: formats, atomic writing, memory-mapped reading and a concatenated view.

A shard is a ``.bin`` file of little-endian token ids in one of two layouts:

* llm.c / modded-nanogpt: a header of 256 int32 (``header[0]`` magic, ``header[1]``
  version, ``header[2]`` token count), then the ids. Magic 20240520 version 1 means uint16
  ids (GPT-2 vocabularies; modded-nanogpt's FineWeb shards); magic 20240801 version 7
  means uint32 ids (llm.c's Llama-3 files). ``moa prepare`` writes this layout, so its
  shards also load in those code bases.
* raw: ids only, no header (nanoGPT's ``train.bin``/``val.bin``, uint16).

``tokens:GLOB[@DTYPE]`` detects the layout per file: a file starting with a known magic
must carry its version and a count that fills the file exactly (anything else is a wrong
header, reported; an ``@DTYPE`` suffix must agree with it); a file without one holds raw
ids of ``DTYPE`` (default uint16).

The GLOB may also be a single file or a folder (its ``*.bin`` files). Shards whose names
say their split (a name part ``train`` or ``val``: nanoGPT's ``train.bin``/``val.bin``,
modded-nanogpt's ``fineweb_val_000000.bin``, ``moa prepare``'s ``val_000000.bin``) keep it
when both kinds are present; other shards are split by file like text (see
:mod:`moa.data.sources`); a single shard gives its tail ``val_fraction`` of tokens to
validation. The fingerprint hashes each shard's relative
path, layout, size and its first and last MiB, not every byte: shards run to many GB and
the fingerprint is recomputed on every run.

Reading never loads a shard: every shard is an ``np.memmap``, and several are presented
as one sequence by :class:`ShardedTokens`, which copies only the slices asked for.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from moa.data.cache import _tmp_name, open_tokens, short_hash
from moa.data.config import DataConfig, DataError
from moa.data.sources import FORMAT_VERSION, GLOB_CHARS, _glob_root, assign_splits, file_digest

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
# magic -> (version, dtype), as llm.c's dev/data/data_common.py writes them.
LLMC_FORMATS = {20240520: (1, "uint16"), 20240801: (7, "uint32")}
MAGIC_OF_DTYPE = {dtype: magic for magic, (_, dtype) in LLMC_FORMATS.items()}


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
    shards = [read_shard_info(p, spec.dtype, rel=p.relative_to(root).as_posix()) for p in paths]
    shards = [s for s in shards if s.count > 0]
    if not shards:
        raise DataError(f"source={config.source!r}: every shard is empty")
    return shards


def read_shard_info(path: Path, dtype: Optional[str] = None, rel: Optional[str] = None) -> Shard:
    """Layout, dtype and token count of one shard file (see module doc); DataError if malformed."""
    size = path.stat().st_size
    rel = rel or path.name
    if size >= 4:
        magic = int(np.fromfile(path, dtype="<i4", count=1)[0])
        if magic in LLMC_FORMATS:
            version, header_dtype = LLMC_FORMATS[magic]
            if dtype not in (None, header_dtype):
                raise DataError(f"shard {str(path)!r} has a header for {header_dtype} ids, not @{dtype}")
            dtype = header_dtype
            if size < HEADER_BYTES:
                raise DataError(f"shard {str(path)!r} starts with magic {magic} but is shorter than its "
                                f"{HEADER_BYTES}-byte header: wrong header")
            header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
            count = int(header[2])
            itemsize = np.dtype(dtype).itemsize
            if int(header[1]) != version:
                raise DataError(f"shard {str(path)!r} has magic {magic} with version {int(header[1])}, "
                                f"expected {version}: wrong header")
            if count < 0 or HEADER_BYTES + count * itemsize != size:
                raise DataError(f"shard {str(path)!r} header says {count} {dtype} tokens but the file holds "
                                f"{size - HEADER_BYTES} bytes after the header: wrong header or a cut file")
            return Shard(rel, path, dtype, HEADER_BYTES, count)
    dtype = dtype or "uint16"
    itemsize = np.dtype(dtype).itemsize
    if size % itemsize:
        raise DataError(f"shard {str(path)!r} has {size} bytes, not a multiple of {dtype}'s {itemsize}")
    return Shard(rel, path, dtype, 0, size // itemsize)


class ShardWriter:
    """Streams ids into a temporary llm.c-layout shard; ``commit()`` writes the header and
    renames it into place, ``discard()`` deletes it. Memory stays one write's worth,
    whatever the shard size."""

    def __init__(self, path: Path, dtype: str) -> None:
        self.path, self.dtype, self.count = path, np.dtype(dtype).newbyteorder("<"), 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _tmp_name(path)
        self._file = open(self._tmp, "wb")
        self._file.write(bytes(HEADER_BYTES))  # filled in by commit, once the count is known

    def write(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        if ids.size and int(ids.max()) > np.iinfo(self.dtype).max:
            raise DataError(f"token id {int(ids.max())} does not fit {self.dtype.name}; use uint32")
        self._file.write(ids.astype(self.dtype, copy=False).tobytes())
        self.count += ids.size

    def commit(self) -> None:
        header = np.zeros(HEADER_INTS, dtype="<i4")
        magic = MAGIC_OF_DTYPE[self.dtype.name]
        header[:3] = (magic, LLMC_FORMATS[magic][0], self.count)
        self._file.seek(0)
        self._file.write(header.tobytes())
        self._file.close()
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def write_shard(path: Path, ids: np.ndarray, dtype: str) -> None:
    """Write ``ids`` as an llm.c-layout shard of ``dtype``, atomically (temp file + rename)."""
    writer = ShardWriter(path, dtype)
    try:
        writer.write(ids)
        writer.commit()
    finally:
        writer.discard()


def shards_fingerprint(config: DataConfig, shards: list[Shard], is_val: list[bool]) -> str:
    parts = [f"{s.rel}\0{s.dtype}\0{s.offset}\0{s.count}\0{v}\0{file_digest(s.path)}"
             for s, v in zip(shards, is_val)]
    return short_hash(FORMAT_VERSION, "tokens", repr(float(config.val_fraction)), *parts)


def split_shards(config: DataConfig, shards: list[Shard]) -> list[bool]:
    """``is_val`` per shard (by name when the names say it, else by file); one shard is split by tail later."""
    if len(shards) == 1:
        return [False]
    named = [_named_split(s.rel) for s in shards]
    if None not in named and len(set(named)) == 2:
        return [n == "val" for n in named]
    return assign_splits([s.rel for s in shards], config.val_fraction)


def _named_split(rel: str) -> Optional[str]:
    """``train``/``val`` if exactly one of them is a part of the file name (split at ``_.-``)."""
    parts = set(re.split(r"[_.\-]", Path(rel).name.lower()))
    found = parts & {"train", "val"}
    return found.pop() if len(found) == 1 else None


def tail_cut(count: int, val_fraction: float) -> int:
    """Index where a single shard's validation tail starts (both parts non-empty)."""
    if count < 2:
        raise DataError(f"a single shard of {count} token(s) is too small to split into train and val")
    return min(count - 1, max(1, int(count * (1 - val_fraction))))


class ShardedTokens:
    """Several 1-D token arrays (memmaps) read as one, without copying them together.

    Supports what the batchers use: ``len``, ``dtype``, integer indexing and contiguous
    slices (``tokens[a:b]`` copies just those ids, across shard boundaries if needed).
    ``np.asarray`` materialises everything: for small data and tests only.
    """

    ndim = 1

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise DataError("no tokens to read: every shard is empty")
        dtypes = {p.dtype for p in parts}
        if len(dtypes) > 1:
            raise DataError(f"shards mix dtypes {sorted(map(str, dtypes))}; one split needs one dtype")
        self.parts = parts
        self.dtype = parts[0].dtype
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"index {key} out of range for {n} tokens")
            k = int(np.searchsorted(self.starts, i, side="right")) - 1
            return self.parts[k][i - self.starts[k]]
        if not isinstance(key, slice):
            raise TypeError(f"ShardedTokens takes an int or a slice, not {type(key).__name__}")
        start, stop, step = key.indices(n)
        if step != 1:
            return np.asarray(self[start:stop])[::step] if stop > start else np.empty(0, self.dtype)
        if stop <= start:
            return np.empty(0, self.dtype)
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        last = int(np.searchsorted(self.starts, stop - 1, side="right")) - 1
        pieces = [self.parts[k][max(start - self.starts[k], 0):min(stop - self.starts[k], len(self.parts[k]))]
                  for k in range(first, last + 1)]
        return np.array(pieces[0]) if len(pieces) == 1 else np.concatenate(pieces)

    def __array__(self, dtype=None, copy=None):
        whole = np.concatenate(self.parts)
        return whole if dtype is None else whole.astype(dtype)


def concat_tokens(parts: Sequence[np.ndarray]):
    """One array for one part (kept a memmap), a :class:`ShardedTokens` view for several."""
    parts = [p for p in parts if len(p)]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return np.empty(0, dtype=np.uint16)
    return ShardedTokens(parts)
