"""Text corpora: find the files of a source, read their documents, split by file, fingerprint.

Rules (MOA.md §7):

* ``stdlib``: every ``.py`` file under ``sysconfig.get_paths()["stdlib"]``, recursively,
  except anything inside ``site-packages``/``dist-packages`` (installed packages are not
  the standard library and differ between machines) and ``__pycache__``.
* ``text:PATH``: a file, a folder (recursive; hidden names such as ``.git`` skipped) or a
  glob (``**`` allowed). Every file is one document.
* ``jsonl:PATH``: a file, a folder (its ``*.jsonl`` files) or a glob; every non-blank line
  is a JSON object whose ``text_field`` string is one document.
* Files that are not valid UTF-8 (or hold NUL bytes: binary files) are skipped and listed
  in the manifest; empty documents are dropped.
* Files are ordered by their path relative to the source root, so the corpus and its
  fingerprint do not depend on where the corpus lives or on file-system order.
* ``max_chars`` keeps the first that many characters of that order (the last document
  cut) before splitting.
* Split by file: a file is held out when ``sha256(relative path)``, read as a number in
  [0, 1), is below ``val_fraction`` — stable across runs, machines and Python's salted
  ``hash()``, and a file never moves when other files are added. If that leaves a split
  empty, the file nearest the threshold moves over, so both splits always exist.
  With one file, the contiguous tail ``val_fraction`` of its documents (jsonl records, or
  the text cut at a line start) is validation.
* Fingerprint: 16 hex digits of sha256 over the scheme, ``text_field`` (jsonl), the split
  settings and, for each file in order, its relative path, split and content sha256.
  It names the corpus in the cache: same content, same fingerprint, wherever it lives.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from moa.data.cache import short_hash
from moa.data.config import DataConfig, DataError, SourceSpec, first_line

FORMAT_VERSION = "moa-corpus-v1"
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
GLOB_CHARS = frozenset("*?[")


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
    """A split text corpus: ``train``/``val`` documents, fingerprint and per-file manifest."""

    fingerprint: str
    train: Split
    val: Split
    manifest: list[dict]
    skipped: list[str]


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def list_files(spec: SourceSpec) -> tuple[list[tuple[str, Path]], Path]:
    """``([(relative path, path), ...] sorted by relative path, root)`` of a file source."""
    if spec.scheme == "stdlib":
        root = stdlib_root()
        return _walk(root, lambda name: name.endswith(".py"), skip_hidden=False), root
    suffix = ".jsonl" if spec.scheme == "jsonl" else ""
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
        files = _walk(path, lambda name: name.endswith(suffix), skip_hidden=True)
        if not files:
            kind = "*.jsonl files" if suffix else "files"
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


def _read_text(path: Path) -> tuple[Optional[str], str]:
    """``(text or None if not UTF-8 text, sha256 of the bytes)``."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if b"\x00" in data:
        return None, digest
    try:
        return data.decode("utf-8"), digest
    except UnicodeDecodeError:
        return None, digest


def _jsonl_documents(text: str, rel: str, field_name: str) -> list[str]:
    docs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise DataError(f"{rel}:{lineno} is not valid JSON ({first_line(e)})") from None
        if not isinstance(record, dict):
            raise DataError(f"{rel}:{lineno} is a JSON {type(record).__name__}, not an object")
        if field_name not in record:
            keys = ", ".join(map(str, list(record)[:10])) or "none"
            raise DataError(f"{rel}:{lineno} has no field text_field={field_name!r}; its keys: {keys}")
        value = record[field_name]
        if not isinstance(value, str):
            raise DataError(f"{rel}:{lineno} field {field_name!r} is a {type(value).__name__}, not a string")
        docs.append(value)
    return docs


def _truncate(files: list[tuple[str, list[str]]], max_chars: Optional[int]) -> list[tuple[str, list[str]]]:
    """Keep the first ``max_chars`` characters of the documents in order, dropping empties."""
    budget = max_chars if max_chars is not None else -1
    out = []
    for rel, docs in files:
        kept = []
        for doc in docs:
            if budget == 0:
                break
            if budget > 0:
                doc = doc[:budget]
                budget -= len(doc)
            if doc:
                kept.append(doc)
        if kept:
            out.append((rel, kept))
        if budget == 0:
            break
    return out


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


def tail_split(docs: list[str], val_fraction: float, where: str) -> tuple[list[str], list[str]]:
    """Train/val from one file: the contiguous tail ``val_fraction`` is validation."""
    if len(docs) >= 2:
        n_val = min(len(docs) - 1, max(1, round(val_fraction * len(docs))))
        return docs[:-n_val], docs[-n_val:]
    text = docs[0]
    if len(text) < 2:
        raise DataError(f"{where} holds {len(text)} character(s); too little to split into train and val")
    cut = min(len(text) - 1, max(1, int(len(text) * (1 - val_fraction))))
    # Start validation at a line start when there is one after the cut, so no line is split.
    newline = text.find("\n", cut - 1, len(text) - 1)
    if newline != -1:
        cut = newline + 1
    return [text[:cut]], [text[cut:]]


def load_corpus(config: DataConfig) -> Corpus:
    """Read, split and fingerprint the text corpus of a file source (stdlib/text/jsonl)."""
    spec = config.source_spec
    listed, _ = list_files(spec)
    files: list[tuple[str, list[str]]] = []
    digests: dict[str, str] = {}
    skipped = []
    for rel, path in listed:
        text, digests[rel] = _read_text(path)
        if text is None:
            skipped.append(rel)
            continue
        docs = _jsonl_documents(text, rel, config.text_field) if spec.scheme == "jsonl" else [text]
        files.append((rel, docs))
    files = _truncate(files, config.max_chars)
    if not files:
        raise DataError(f"source={config.source!r} has no non-empty UTF-8 text ({len(skipped)} files skipped)")

    train, val = Split(), Split()
    if len(files) == 1:
        rel, docs = files[0]
        train.documents, val.documents = tail_split(docs, config.val_fraction, f"source={config.source!r}")
        train.files, val.files = [rel], [rel]
        splits = ["train+val"]
    else:
        is_val = assign_splits([rel for rel, _ in files], config.val_fraction)
        splits = ["val" if v else "train" for v in is_val]
        for (rel, docs), v in zip(files, is_val):
            target = val if v else train
            target.files.append(rel)
            target.documents.extend(docs)

    manifest = [{"path": rel, "split": s, "sha256": digests[rel]} for (rel, _), s in zip(files, splits)]
    fingerprint = short_hash(
        FORMAT_VERSION, spec.scheme, config.text_field if spec.scheme == "jsonl" else "",
        repr(float(config.val_fraction)), repr(config.max_chars),
        *(f"{m['path']}\0{m['split']}\0{m['sha256']}" for m in manifest),
    )
    return Corpus(fingerprint, train, val, manifest, skipped)


# Hugging Face streaming --------------------------------------------------------------

HF_DEFAULT_MAX_CHARS = 50_000_000


def hf_fingerprint(config: DataConfig) -> str:
    """Fingerprint of an ``hf:`` source from its spec alone.

    Streaming the data to hash it would defeat the cache (and need the network every
    run), so a streamed corpus is named by dataset, config, field and split settings;
    the Hub's datasets are versioned, which makes this good enough in practice.
    """
    return short_hash(FORMAT_VERSION, config.source, config.text_field,
                      repr(float(config.val_fraction)), repr(hf_max_chars(config)))


def hf_max_chars(config: DataConfig) -> int:
    return config.max_chars if config.max_chars is not None else HF_DEFAULT_MAX_CHARS


def load_hf_corpus(config: DataConfig) -> Corpus:
    """Stream the ``train`` split of ``hf:NAME[:CONFIG]`` up to ``max_chars`` characters.

    Records are documents; record ``i`` is held out when ``unit_hash(str(i)) <
    val_fraction`` (there are no files to split by). ``datasets`` is imported here only,
    so the rest of moa never needs it.
    """
    name, _, subset = config.source_spec.arg.partition(":")
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"source={config.source!r} needs the 'datasets' package and network access; "
            "pip install datasets, or use a local source (stdlib, text:, jsonl:, tokens:)"
        ) from None
    records = _stream(datasets, name, subset or None, config)
    train, val = Split(files=[name]), Split(files=[name])
    for i, doc in enumerate(records):
        (val if unit_hash(str(i)) < config.val_fraction else train).documents.append(doc)
    if not train.documents or not val.documents:
        raise DataError(f"source={config.source!r} gave too few records to split; raise max_chars")
    return Corpus(hf_fingerprint(config), train, val, [{"path": name, "split": "train+val"}], [])


def _stream(datasets, name: str, subset: Optional[str], config: DataConfig) -> Iterator[str]:
    budget = hf_max_chars(config)
    try:
        stream = datasets.load_dataset(name, subset, split="train", streaming=True)
        for i, record in enumerate(stream):
            doc = record.get(config.text_field)
            if not isinstance(doc, str):
                raise DataError(
                    f"source={config.source!r} record {i} has no string field "
                    f"text_field={config.text_field!r}; its keys: {', '.join(map(str, record))}"
                )
            doc = doc[:budget]
            budget -= len(doc)
            if doc:
                yield doc
            if budget == 0:
                return
    except DataError:
        raise
    except Exception as e:  # datasets raises many types (network, auth, missing config)
        raise DataError(
            f"source={config.source!r} could not be streamed ({type(e).__name__}: {first_line(e)}); "
            "it needs network access to the Hugging Face Hub"
        ) from None
