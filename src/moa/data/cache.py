"""On-disk cache: where it lives, atomic writes, and token files read back by memmap.

Layout under the cache root (``cache_dir`` → ``$MOA_CACHE_DIR`` → ``~/.cache/moa``)::

    prepared/{key}/            one pre-tokenized text corpus per (corpus, tokenizer): shards,
                               tokenizer.json and manifest.json (see moa.data.pretokenize)
    tokens/{shards_fp}-{tokenizer_fp}/meta.json
                               counts and the id check of a ``tokens:`` source's shards

Every file is written to a unique temporary name in the same folder and moved into place
with ``os.replace``, so a reader never sees half a file; a prepared folder is built by one
process at a time (a lock on it), so processes preparing the same corpus at once all
succeed, the later ones reading what the first made.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Optional

import numpy as np


def cache_root(cache_dir: Optional[str]) -> Path:
    """The cache root: ``cache_dir``, else ``$MOA_CACHE_DIR``, else ``~/.cache/moa``."""
    root = cache_dir or os.environ.get("MOA_CACHE_DIR") or os.path.join("~", ".cache", "moa")
    return Path(root).expanduser()


def short_hash(*parts: str | bytes) -> str:
    """First 16 hex digits of sha256 over ``parts`` (length-prefixed, so joins are unambiguous)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:16]


def _tmp_name(path: Path) -> Path:
    # pid + random suffix: concurrent writers (ranks, processes) never share a temp file.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path) -> Optional[dict]:
    """The JSON object at ``path``, or None if it is missing or unreadable (a stale cache)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def open_tokens(path: Path, dtype: str, count: int, offset: int = 0) -> np.ndarray:
    """A read-only memmap of ``count`` ids of ``dtype`` starting at byte ``offset``.

    np.memmap cannot map zero bytes, so an empty split is an empty in-memory array.
    """
    dt = np.dtype(dtype).newbyteorder("<")
    if count == 0:
        return np.empty(0, dtype=dt)
    return np.memmap(path, dtype=dt, mode="r", offset=offset, shape=(count,))


def token_dtype(vocab_size: int) -> str:
    """The narrowest unsigned dtype holding every id of a ``vocab_size`` vocabulary."""
    return "uint16" if vocab_size <= 2**16 else "uint32"
