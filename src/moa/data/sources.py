"""Text corpora as document streams: find the files of a source, split them, fingerprint them.

A source is read one document at a time (:func:`iter_documents`), never whole, so a
corpus of any size streams through :mod:`moa.data.pretokenize` in bounded memory.
:func:`load_corpus` materialises the same stream for small corpora and tests.

Rules:

* ``stdlib``: every ``.py`` file under ``sysconfig.get_paths()["stdlib"]``, recursively,
  except anything inside ``site-packages``/``dist-packages`` (installed packages are not
  the standard library and differ between machines) and ``__pycache__``.
* ``text:PATH``: a file, a folder (recursive; hidden names such as ``.git`` skipped) or a
  glob (``**`` allowed). Every file is one document (read whole, so one file must fit in
  memory); files that are not UTF-8 or hold NUL bytes (binary files) are skipped and listed.
* ``jsonl:PATH``: ``.jsonl``, ``.jsonl.gz`` or ``.jsonl.zst`` files (a file, a folder or a
  glob), read line by line; every non-blank line is a JSON object whose ``text_field``
  string is one document.
* ``parquet:PATH``: ``.parquet`` files read by pyarrow in record batches of
  ``PARQUET_BATCH_ROWS`` rows; the ``text_field`` column (default ``text``, as in FineWeb,
  FineWeb-Edu and DCLM) holds the documents; nulls are skipped.
* ``hf:NAME[:CONFIG]``: the ``train`` split of a Hugging Face dataset, streamed.
* Empty documents are dropped. ``max_chars`` keeps the first that many characters of the
  stream (the last document cut) before splitting; with several files, only the files
  holding those characters are listed and split (a pre-pass reads at most ``max_chars``).
* Files are ordered by their path relative to the source root, so the stream does not
  depend on where the corpus lives or on file-system order.
* Split, several files: by file. A file is held out when ``sha256(relative path)``, read as
  a number in [0, 1), is below ``val_fraction`` (stable across runs and machines; a file
  never moves when others are added). If that leaves a split without files, the file
  nearest the threshold moves over.
* Split, one file or ``hf:``: by document. Document ``i`` is held out when
  ``unit_hash(str(i)) < val_fraction``; if the stream ends with one split empty, its last
  document moves over (a one-document look-ahead keeps this streaming). A source of a
  single document gives the tail ``val_fraction`` of its text, cut at a line start.
* Fingerprint: 16 hex digits of sha256 over the scheme, ``text_field``, the split settings
  and, per file in order, its relative path, split, size and the sha256 of its first and
  last MiB (the whole file when it is at most 2 MiB). Hashing every byte of a 100 GB
  corpus on every run would cost minutes; an edit inside the middle of a large file that
  keeps its size is the one change this misses.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

from moa.data.cache import short_hash
from moa.data.config import DataConfig, DataError, SourceSpec, first_line

FORMAT_VERSION = "moa-corpus-v2"
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
GLOB_CHARS = frozenset("*?[")
SUFFIXES = {"jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst"), "parquet": (".parquet",)}
PARQUET_BATCH_ROWS = 1024
DATA_EXTRA = 'pip install -e ".[data]"'
_EDGE = 1 << 20


@dataclass
class Split:
    """The documents of one split and the relative paths of the files they came from."""

    files: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)

    @property
    def chars(self) -> int:
        return sum(len(d) for d in self.documents)


@dataclass
class Corpus:
    """A split text corpus held in memory: ``train``/``val`` documents, fingerprint, manifest."""

    fingerprint: str
    train: Split
    val: Split
    manifest: list[dict]
    skipped: list[str]


@dataclass
class SourcePlan:
    """What a source will stream, known before reading any document.

    files: ``(relative path, path)`` in stream order (empty for ``hf:``).
    file_is_val: split per file, or None when the split is by document (one file, ``hf:``).
    manifest: per file its path, split (``train``/``val``/``by-document``), size and digest.
    skipped: files found unreadable while streaming (filled in by :func:`iter_documents`).
    """

    config: DataConfig
    files: list[tuple[str, Path]]
    file_is_val: Optional[list[bool]]
    fingerprint: str
    manifest: list[dict]
    skipped: list[str] = field(default_factory=list)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _has_suffix(name: str, scheme: str) -> bool:
    suffixes = SUFFIXES.get(scheme)
    return suffixes is None or name.endswith(suffixes)


def list_files(spec: SourceSpec) -> tuple[list[tuple[str, Path]], Path]:
    """``([(relative path, path), ...] sorted by relative path, root)`` of a file source."""
    if spec.scheme == "stdlib":
        root = stdlib_root()
        return _walk(root, lambda name: name.endswith(".py"), skip_hidden=False), root
    raw = spec.arg
    path = Path(os.path.expanduser(raw))
    if any(c in raw for c in GLOB_CHARS):
        root = _glob_root(path)
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [(p.relative_to(root).as_posix(), p) for p in found if p.is_file()]
        if not files:
            raise DataError(f"source={spec.scheme}:{raw!r} matches no files")
        return sorted(files), root
    if path.is_file():
        return [(path.name, path)], path.parent
    if path.is_dir():
        files = _walk(path, lambda name: _has_suffix(name, spec.scheme), skip_hidden=True)
        if not files:
            kind = " or ".join(f"*{s}" for s in SUFFIXES[spec.scheme]) + " files" if spec.scheme in SUFFIXES else "files"
            raise DataError(f"source={spec.scheme}:{raw!r} is a folder with no {kind}")
        return files, path
    raise DataError(f"source={spec.scheme}:{raw!r}: path {str(path)!r} does not exist")


def _walk(root: Path, keep, skip_hidden: bool) -> list[tuple[str, Path]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if d not in EXCLUDED_DIRS and not (skip_hidden and d.startswith("."))]
        for name in filenames:
            if keep(name) and not (skip_hidden and name.startswith(".")):
                p = Path(dirpath) / name
                out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


def _glob_root(pattern: Path) -> Path:
    """The longest leading folder of ``pattern`` without glob characters."""
    parts = []
    for part in pattern.parts:
        if any(c in part for c in GLOB_CHARS):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def file_digest(path: Path) -> str:
    """sha256 of a file's first and last MiB (all of it when it is at most 2 MiB), and its size."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        h.update(size.to_bytes(8, "little"))
        h.update(f.read(_EDGE))
        if size > _EDGE:
            f.seek(max(_EDGE, size - _EDGE))
            h.update(f.read(_EDGE))
    return h.hexdigest()


def unit_hash(key: str) -> float:
    """``sha256(key)`` as a number in [0, 1): a deterministic, unsalted coin."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:16], 16) / 2.0**64


def assign_splits(keys: list[str], val_fraction: float) -> list[bool]:
    """``is_val`` per key: hash below ``val_fraction``; both splits kept non-empty (len >= 2)."""
    u = [unit_hash(k) for k in keys]
    is_val = [x < val_fraction for x in u]
    if len(keys) >= 2 and not any(is_val):
        is_val[min(range(len(u)), key=u.__getitem__)] = True
    if len(keys) >= 2 and all(is_val):
        is_val[max(range(len(u)), key=u.__getitem__)] = False
    return is_val


HF_DEFAULT_MAX_CHARS = 50_000_000


def hf_max_chars(config: DataConfig) -> int:
    return config.max_chars if config.max_chars is not None else HF_DEFAULT_MAX_CHARS


def plan_source(config: DataConfig) -> SourcePlan:
    """List, split and fingerprint a text source without reading its documents."""
    spec = config.source_spec
    if spec.scheme not in ("stdlib", "text", "jsonl", "parquet", "hf"):
        raise DataError(f"source={config.source!r} is not a text source")
    settings = (FORMAT_VERSION, spec.scheme, config.text_field if spec.scheme != "text" else "",
                repr(float(config.val_fraction)))
    if spec.scheme == "hf":
        # Streaming the data to hash it would defeat the cache (and need the network every
        # run), so a streamed corpus is named by dataset, config, field and split settings.
        fingerprint = short_hash(*settings, config.source, repr(hf_max_chars(config)))
        return SourcePlan(config, [], None, fingerprint, [{"path": spec.arg, "split": "by-document"}])
    files, _ = list_files(spec)
    if config.max_chars is not None and len(files) > 1:
        files = _files_within(files, config)
    file_is_val = assign_splits([rel for rel, _ in files], config.val_fraction) if len(files) > 1 else None
    splits = ["by-document"] * len(files) if file_is_val is None else ["val" if v else "train" for v in file_is_val]
    manifest = []
    for (rel, path), split in zip(files, splits):
        manifest.append({"path": rel, "split": split, "bytes": path.stat().st_size, "digest": file_digest(path)})
    fingerprint = short_hash(*settings, repr(config.max_chars),
                             *(f"{m['path']}\0{m['split']}\0{m['bytes']}\0{m['digest']}" for m in manifest))
    return SourcePlan(config, files, file_is_val, fingerprint, manifest)


def iter_documents(plan: SourcePlan) -> Iterator[tuple[bool, str]]:
    """``(is_val, document)`` pairs of the source, in stream order, split as the rules say.

    Raises DataError if the corpus is empty or a split ends up without documents.
    """
    config = plan.config
    plan.skipped.clear()
    counts = [0, 0]
    if plan.file_is_val is None:
        stream = _split_by_document(_truncate(_raw_documents(plan), _budget(config)), config)
    else:
        stream = _truncate(_raw_documents(plan), _budget(config))
    for is_val, doc in stream:
        counts[is_val] += 1
        yield is_val, doc
    if not any(counts):
        raise DataError(f"source={config.source!r} has no non-empty text ({len(plan.skipped)} files skipped)")
    if not all(counts):
        empty = "val" if counts[0] else "train"
        raise DataError(f"source={config.source!r} is too little to split into train and val: the {empty} "
                        "split's files hold no text; add files or change val_fraction")


def _budget(config: DataConfig) -> Optional[int]:
    return hf_max_chars(config) if config.source_spec.scheme == "hf" else config.max_chars


def _truncate(docs: Iterable[tuple[bool, str]], max_chars: Optional[int]) -> Iterator[tuple[bool, str]]:
    """The first ``max_chars`` characters of the stream (last document cut), empties dropped."""
    budget = max_chars if max_chars is not None else -1
    for is_val, doc in docs:
        if budget == 0:
            return
        if budget > 0:
            doc = doc[:budget]
            budget -= len(doc)
        if doc:
            yield is_val, doc


def _split_by_document(docs: Iterable[tuple[bool, str]], config: DataConfig) -> Iterator[tuple[bool, str]]:
    """Document ``i`` goes to val when ``unit_hash(str(i)) < val_fraction``; see module doc."""
    held = None
    counts = [0, 0]
    for i, (_, doc) in enumerate(docs):
        if held is not None:
            counts[held[0]] += 1
            yield held
        held = (unit_hash(str(i)) < config.val_fraction, doc)
    if held is None:
        return
    if not any(counts):  # one document: its text is cut
        yield from ((v, part) for v, part in zip((False, True), tail_cut_text(held[1], config)))
        return
    is_val, doc = held
    if not counts[True]:
        is_val = True
    elif not counts[False]:
        is_val = False
    yield is_val, doc


def tail_cut_text(text: str, config: DataConfig) -> tuple[str, str]:
    """Train/val parts of a one-document corpus: the tail ``val_fraction``, cut at a line start."""
    if len(text) < 2:
        raise DataError(f"source={config.source!r} holds {len(text)} character(s); too little to split into train and val")
    cut = min(len(text) - 1, max(1, int(len(text) * (1 - config.val_fraction))))
    newline = text.find("\n", cut - 1, len(text) - 1)
    if newline != -1:
        cut = newline + 1
    return text[:cut], text[cut:]


def _raw_documents(plan: SourcePlan) -> Iterator[tuple[bool, str]]:
    config = plan.config
    scheme = config.source_spec.scheme
    if scheme == "hf":
        yield from ((False, doc) for doc in _stream_hf(config))
        return
    for k, (rel, path) in enumerate(plan.files):
        is_val = bool(plan.file_is_val[k]) if plan.file_is_val is not None else False
        for doc in _file_documents(scheme, rel, path, config.text_field, plan.skipped):
            yield is_val, doc


def _file_documents(scheme: str, rel: str, path: Path, text_field: str, skipped: list[str]) -> Iterable[str]:
    if scheme == "jsonl":
        return _jsonl_documents(path, rel, text_field)
    if scheme == "parquet":
        return _parquet_documents(path, rel, text_field)
    text = _read_text(path)
    if text is None:
        skipped.append(rel)
        return ()
    return (text,)


def _files_within(files: list[tuple[str, Path]], config: DataConfig) -> list[tuple[str, Path]]:
    """The files holding the first ``max_chars`` characters, so that only they are split.

    Reads at most ``max_chars`` characters (a cap is meant for small runs).
    """
    budget = config.max_chars
    kept = []
    for rel, path in files:
        chars = 0
        for doc in _file_documents(config.source_spec.scheme, rel, path, config.text_field, []):
            chars += len(doc)
            if chars >= budget:
                break
        if chars:
            kept.append((rel, path))
            budget -= min(chars, budget)
        if budget == 0:
            break
    return kept or files


def _read_text(path: Path) -> Optional[str]:
    """The file's text, or None if it is not UTF-8 text (binary, NUL bytes)."""
    data = path.read_bytes()
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _open_binary(path: Path, rel: str):
    if path.name.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    if path.name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{rel} is zstd-compressed and needs the zstandard package; {DATA_EXTRA}") from None
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def _jsonl_documents(path: Path, rel: str, field_name: str) -> Iterator[str]:
    with _open_binary(path, rel) as raw:
        lines = io.BufferedReader(raw, 1 << 20) if not isinstance(raw, io.BufferedReader) else raw
        try:
            for lineno, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                text = _jsonl_record(line, rel, lineno, field_name)
                if text is not None:  # a null text is no document, as in parquet
                    yield text
        except (OSError, EOFError) as e:  # a truncated .gz/.zst
            raise DataError(f"{rel} cannot be read ({type(e).__name__}: {first_line(e)})") from None
        except Exception as e:
            if not _corrupt_stream(e):
                raise
            raise DataError(f"{rel} cannot be read ({type(e).__name__}: {first_line(e)})") from None


def _corrupt_stream(exc: Exception) -> bool:
    """A damaged .gz or .zst (zlib.error, zstandard.ZstdError), not a bug."""
    import sys
    import zlib

    zstd = sys.modules.get("zstandard")
    return isinstance(exc, zlib.error) or (zstd is not None and isinstance(exc, zstd.ZstdError))


def _jsonl_record(line: bytes, rel: str, lineno: int, field_name: str) -> Optional[str]:
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        raise DataError(f"{rel}:{lineno} is not UTF-8 text") from None
    except ValueError as e:
        raise DataError(f"{rel}:{lineno} is not valid JSON ({first_line(e)})") from None
    if not isinstance(record, dict):
        raise DataError(f"{rel}:{lineno} is a JSON {type(record).__name__}, not an object")
    if field_name not in record:
        keys = ", ".join(map(str, list(record)[:10])) or "none"
        raise DataError(f"{rel}:{lineno} has no field text_field={field_name!r}; its keys: {keys}")
    value = record[field_name]
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError(f"{rel}:{lineno} field {field_name!r} is a {type(value).__name__}, not a string")
    return value


def _parquet_documents(path: Path, rel: str, field_name: str) -> Iterator[str]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"parquet sources need pyarrow; {DATA_EXTRA}") from None
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{rel} is not a readable parquet file ({first_line(e)})") from None
    schema = file.schema_arrow
    if field_name not in schema.names:
        raise DataError(f"{rel} has no column text_field={field_name!r}; its columns: "
                        f"{', '.join(schema.names[:20]) or 'none'}")
    kind = schema.field(field_name).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{rel} column {field_name!r} holds {kind}, not strings")
    for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[field_name]):
        for doc in batch.column(0).to_pylist():
            if doc:
                yield doc


def _stream_hf(config: DataConfig) -> Iterator[str]:
    """Records of ``hf:NAME[:CONFIG]``'s ``train`` split, streamed; ``datasets`` is imported here only."""
    name, _, subset = config.source_spec.arg.partition(":")
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"source={config.source!r} needs the 'datasets' package and network access; "
            "pip install datasets, or use a local source (stdlib, text:, jsonl:, parquet:, tokens:)"
        ) from None
    try:
        stream = datasets.load_dataset(name, subset or None, split="train", streaming=True)
        for i, record in enumerate(stream):
            doc = record.get(config.text_field)
            if not isinstance(doc, str):
                raise DataError(
                    f"source={config.source!r} record {i} has no string field "
                    f"text_field={config.text_field!r}; its keys: {', '.join(map(str, record))}"
                )
            yield doc
    except DataError:
        raise
    except Exception as e:  # datasets raises many types (network, auth, missing config)
        raise DataError(
            f"source={config.source!r} could not be streamed ({type(e).__name__}: {first_line(e)}); "
            "it needs network access to the Hugging Face Hub"
        ) from None


def load_corpus(config: DataConfig) -> Corpus:
    """The whole split corpus in memory: the stream of :func:`iter_documents`, materialised.

    For small corpora and as the reference that the streaming shards are tested against.
    """
    plan = plan_source(config)
    train, val = Split(), Split()
    for is_val, doc in iter_documents(plan):
        (val if is_val else train).documents.append(doc)
    for m, (rel, _) in zip(plan.manifest, plan.files):
        if rel in plan.skipped:
            continue
        if m["split"] in ("train", "by-document"):
            train.files.append(rel)
        if m["split"] in ("val", "by-document"):
            val.files.append(rel)
    if config.source_spec.scheme == "hf":
        train.files = val.files = [config.source_spec.arg]
    return Corpus(plan.fingerprint, train, val, plan.manifest, list(plan.skipped))
