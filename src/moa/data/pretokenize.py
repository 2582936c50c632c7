"""Streaming, parallel, resumable pre-tokenization: a text source → fixed-size token shards.

Output folder (``moa prepare --out DIR``, or the cache folder of ``moa train``)::

    manifest.json          written last: settings, tokenizer, counts per split and shard
    tokenizer.json         the tokenizer (``bpe:N`` trained here, ``hf:PATH`` copied); none for bytes
    train_000000.bin ...   shards of exactly ``shard_tokens`` ids, the last of a split shorter,
    val_000000.bin ...     in the llm.c layout (see :mod:`moa.data.shards`)
    progress.json          while running: the settings and, per committed shard, where the
                           next one starts; removed when the manifest is written

Pipeline: the main process streams documents (:func:`moa.data.sources.iter_documents`)
and groups consecutive documents of one split into chunks of about ``CHUNK_CHARS``
characters; N worker processes encode chunks (each document followed by the tokenizer's
separator, the end-of-text token); the main process takes results in submission order
from a queue of at most ``2N + 2`` chunks, so memory stays bounded whatever the corpus
size, and cuts each split's token stream into shards. Every shard is streamed to a temporary
file (never held in memory) and renamed into place once full.

Determinism: chunks do not depend on N, and a document's ids do not depend on the other
documents of its chunk, so the shards are byte-identical for any ``--workers``.

Resume: after each shard, ``progress.json`` records for its split the index of the
document holding the next shard's first token and how many of that document's tokens are
already written (the manifest keeps these too). A rerun checks that the settings match,
keeps the committed shards up to the first one missing or damaged (also after a finished
prepare lost a shard), re-streams the source skipping (without encoding) the
documents before that point, drops the already-written tokens of the document straddling
it and continues: the result is byte-identical to an uninterrupted run.

``bpe:N`` is trained on a bounded, deterministic sample: the first ``BPE_SAMPLE_CHARS``
(50 M) characters of the training split in stream order (the last document cut), so
training time and memory do not grow with the corpus and validation never leaks into the
vocabulary.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from moa.data.cache import atomic_write_bytes, atomic_write_json, read_json, token_dtype
from moa.data.config import DataConfig, DataError
from moa.data.shards import ShardWriter, read_shard_info
from moa.data.sources import SourcePlan, iter_documents, plan_source
from moa.data.tokenizer import (ByteTokenizer, Tokenizer, bpe_tokenizer, load_hf_tokenizer, tokenizer_from_payload,
                                tokenizer_payload, train_bpe)

PREPARED_FORMAT = "moa-prepared-v1"
SPLITS = ("train", "val")
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB of uint16, as modded-nanogpt's FineWeb shards
BPE_SAMPLE_CHARS = 50_000_000
CHUNK_CHARS = 1 << 20
CHUNK_DOCS = 4096
# Sources smaller than this are encoded in the main process when workers are not given:
# starting processes would cost more than it saves.
AUTO_INPROCESS_BYTES = 8 << 20
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
LOCK = ".prepare.lock"
MAX_SHARD_TOKENS = 2**31 - 1
TOKENIZER_FILE = "tokenizer.json"


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


def pretokenize(config: DataConfig, out: str | Path, *, workers: Optional[int] = None,
                shard_tokens: int = DEFAULT_SHARD_TOKENS, dtype: Optional[str] = None,
                progress: Optional[bool] = None, plan: Optional[SourcePlan] = None) -> dict:
    """Tokenize ``config.source`` into shards under ``out``; return the manifest.

    workers: encoder processes (0: encode in this process; None: 0 for sources under 8 MiB,
        else all cores up to 8). Output is identical for every value.
    dtype: ``uint16``/``uint32`` for the shards; None picks the narrowest for the vocab.
    progress: show a progress bar (None: only on a terminal).
    plan: the source's :func:`~moa.data.sources.plan_source`, if the caller has it already.
    Returns at once if ``out`` already holds a finished prepare with the same settings;
    resumes an interrupted one; raises DataError if ``out`` holds another prepare.
    """
    if (isinstance(shard_tokens, bool) or not isinstance(shard_tokens, int)
            or not 1 <= shard_tokens <= MAX_SHARD_TOKENS):
        raise DataError(f"shard_tokens={shard_tokens!r} must be an integer in 1..{MAX_SHARD_TOKENS} "
                        "(the shard header counts tokens in an int32)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise DataError(f"workers={workers!r} must be a non-negative integer")
    out = Path(out).expanduser()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        # one prepare per folder at a time: a second (another sweep worker, another rank, a
        # second command) waits, then finds the finished manifest
        with _exclusive(out / LOCK):
            return _pretokenize(config, out, workers, shard_tokens, dtype, progress, plan)
    except BaseException:
        if created and [p.name for p in out.iterdir()] == [LOCK]:  # refused before any work: leave nothing
            (out / LOCK).unlink(missing_ok=True)
            out.rmdir()
        raise


@contextlib.contextmanager
def _exclusive(path: Path):
    """An exclusive ``flock`` on ``path`` (released when the file closes, also if this process dies)."""
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _pretokenize(config: DataConfig, out: Path, workers: Optional[int], shard_tokens: int, dtype: Optional[str],
                 progress: Optional[bool], plan: Optional[SourcePlan]) -> dict:
    plan = plan if plan is not None else plan_source(config)
    tokenizer_spec = config.tokenizer_spec
    vocab = tokenizer_spec.vocab if tokenizer_spec.scheme != "hf" else None
    hf_tok = load_hf_tokenizer(tokenizer_spec.path, config.tokenizer) if tokenizer_spec.scheme == "hf" else None
    vocab = hf_tok.vocab_size if hf_tok is not None else vocab
    dtype = _resolve_dtype(dtype, vocab, config.tokenizer)
    identity = {"format": PREPARED_FORMAT, "source_fingerprint": plan.fingerprint, "tokenizer": config.tokenizer,
                "shard_tokens": shard_tokens, "dtype": dtype}
    if hf_tok is not None:  # the same hf:PATH spelling may name a changed file
        identity["tokenizer_file"] = hf_tok.fingerprint

    manifest = read_json(out / MANIFEST)
    state = read_json(out / PROGRESS)
    if manifest is not None:
        check_identity(out, manifest.get("identity"), identity)
        shards = {name: manifest["splits"][name]["shards"] for name in SPLITS}
        if all(_intact(out, shards[name], dtype) == shards[name] for name in SPLITS):
            return manifest
        # A shard went missing or was damaged after the prepare finished: redo from there.
        state = {"identity": identity, "tokenizer_fingerprint": manifest["tokenizer_fingerprint"], "splits": shards}
        atomic_write_json(out / PROGRESS, state)
        (out / MANIFEST).unlink()
    elif state is not None and not any((state.get("splits") or {}).values()):
        state = None  # a first attempt that failed before its first shard: nothing to keep
    elif state is not None:
        check_identity(out, state.get("identity"), identity)
    tokenizer = _tokenizer(config, plan, out, hf_tok, resume=state is not None)
    if state is None:
        state = {"identity": identity, "tokenizer_fingerprint": tokenizer.fingerprint, "splits": {s: [] for s in SPLITS}}
        atomic_write_json(out / PROGRESS, state)
    elif state.get("tokenizer_fingerprint") != tokenizer.fingerprint:
        raise DataError(f"{str(out)!r} holds an unfinished prepare made with a different {config.tokenizer!r} "
                        "tokenizer file; delete the folder or use another --out")
    if workers is None:
        small = plan.files and sum(m["bytes"] for m in plan.manifest) < AUTO_INPROCESS_BYTES
        workers = 0 if small else min(os.cpu_count() or 1, 8)

    for stale in out.glob(".*_*.bin.*.tmp"):  # an unfinished shard of a killed run
        stale.unlink()
    writers = {name: _SplitWriter(out, name, shard_tokens, dtype, _intact(out, state["splits"][name], dtype))
               for name in SPLITS}

    def save_progress() -> None:
        state["splits"] = {name: w.shards for name, w in writers.items()}
        atomic_write_json(out / PROGRESS, state)

    for w in writers.values():
        w.on_commit = save_progress
    try:
        _run(plan, tokenizer, writers, workers, dtype, progress)
        for w in writers.values():
            w.finish()
    finally:
        for w in writers.values():
            w.discard()

    files = {"train": 0, "val": 0}
    for m in plan.manifest:
        if m["path"] in plan.skipped:
            continue
        for name in SPLITS:
            files[name] += m["split"] in (name, "by-document")
    manifest = {
        "format": PREPARED_FORMAT, "identity": identity,
        "source": config.source, "source_fingerprint": plan.fingerprint, "text_field": config.text_field,
        "val_fraction": config.val_fraction, "max_chars": config.max_chars,
        "tokenizer": config.tokenizer, "tokenizer_fingerprint": tokenizer.fingerprint,
        "tokenizer_file": TOKENIZER_FILE if tokenizer.spec != "bytes" else None,
        "bpe_sample_chars": BPE_SAMPLE_CHARS if tokenizer_spec.scheme == "bpe" else None,
        "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
        "separator_ids": [int(i) for i in tokenizer.separator_ids],
        "dtype": dtype, "shard_tokens": shard_tokens,
        "splits": {name: {"files": files[name], **w.totals(), "shards": w.shards} for name, w in writers.items()},
        "files": plan.manifest, "skipped": list(plan.skipped),
    }
    atomic_write_json(out / MANIFEST, manifest)
    (out / PROGRESS).unlink(missing_ok=True)
    return manifest


def _resolve_dtype(dtype: Optional[str], vocab: Optional[int], spec: str) -> str:
    if dtype in (None, "auto"):
        return token_dtype(vocab)
    if dtype not in ("uint16", "uint32"):
        raise DataError(f"dtype={dtype!r} is invalid; valid: auto, uint16, uint32")
    if vocab > np.iinfo(dtype).max + 1:
        raise DataError(f"tokenizer={spec!r} has vocab {vocab}, too large for dtype={dtype} "
                        f"(at most {np.iinfo(dtype).max + 1} ids); use uint32")
    return dtype


def check_identity(out: Path, found: Optional[dict], wanted: dict) -> None:
    """DataError naming the first differing setting if ``out`` was prepared differently."""
    if not isinstance(found, dict) or found.get("format") != wanted["format"]:
        raise DataError(f"{str(out)!r} is not a {wanted['format']} folder; delete it or use another --out")
    for key in ("tokenizer", "source_fingerprint", "shard_tokens", "dtype", "tokenizer_file"):
        if key == "tokenizer_file" and (key not in wanted or key not in found):  # folders from before it
            continue
        if found.get(key) != wanted[key]:
            what = (" (another source or source setting: files, text_field, val_fraction, max_chars)"
                    if key == "source_fingerprint" else "")
            raise DataError(f"{str(out)!r} was prepared with {key}={found.get(key)!r}, not {wanted[key]!r}{what}; "
                            "delete it or use another --out")


def _tokenizer(config: DataConfig, plan: SourcePlan, out: Path, hf_tok, resume: bool) -> Tokenizer:
    spec = config.tokenizer_spec
    path = out / TOKENIZER_FILE
    if spec.scheme == "bytes":
        return ByteTokenizer()
    if spec.scheme == "hf":
        if not path.is_file():
            atomic_write_bytes(path, hf_tok.backend.to_str().encode("utf-8"))
        return hf_tok
    from tokenizers import Tokenizer as _Tok

    if not (resume and path.is_file()):
        tok = train_bpe(bpe_sample(plan), spec.vocab)
        atomic_write_bytes(path, tok.to_str().encode("utf-8"))
    return bpe_tokenizer(_Tok.from_file(str(path)), config.tokenizer, path=str(path))


def bpe_sample(plan: SourcePlan, max_chars: int = BPE_SAMPLE_CHARS) -> Iterator[str]:
    """The first ``max_chars`` characters of the training split, in stream order."""
    budget = max_chars
    for is_val, doc in iter_documents(plan):
        if is_val:
            continue
        doc = doc[:budget]
        budget -= len(doc)
        yield doc
        if budget == 0:
            return


def _intact(out: Path, shards: list[dict], dtype: str) -> list[dict]:
    """The committed shards up to the first one missing or damaged."""
    kept = []
    for entry in shards:
        path = out / entry["path"]
        try:
            info = read_shard_info(path)
        except (OSError, DataError):
            break
        if info.count != entry["tokens"] or info.dtype != dtype:
            break
        kept.append(entry)
    return kept


class _SplitWriter:
    """Cuts one split's token stream into shards of ``shard_tokens`` ids; see module doc."""

    def __init__(self, out: Path, name: str, shard_tokens: int, dtype: str, done: list[dict]) -> None:
        self.out, self.name, self.shard_tokens, self.dtype = out, name, shard_tokens, dtype
        self.shards = list(done)
        last = done[-1] if done else {"next_doc": 0, "skip": 0, "documents": 0, "chars": 0, "bytes": 0}
        self.resume_doc, self.drop = last["next_doc"], last["skip"]
        # Counts over documents before resume_doc (whole documents, however they are sharded).
        self.documents, self.chars, self.bytes = last["documents"], last["chars"], last["bytes"]
        self.tokens = sum(s["tokens"] for s in done)
        self.current: Optional[ShardWriter] = None  # the shard being written, streamed to a temp file
        self.on_commit = lambda: None

    def _write(self, ids: np.ndarray) -> None:
        if self.current is None:
            self.current = ShardWriter(self.out / shard_name(self.name, len(self.shards)), self.dtype)
        self.current.write(ids)

    @property
    def buffered(self) -> int:
        return self.current.count if self.current is not None else 0

    def add(self, start: int, ids: np.ndarray, tok_lens: np.ndarray, byte_lens: np.ndarray,
            char_lens: np.ndarray) -> None:
        if start != self.documents:
            raise RuntimeError(f"{self.name}: chunk starts at document {start}, expected {self.documents}")
        dropped, self.drop = self.drop, 0
        if dropped:  # tokens of the straddling document already in the last kept shard
            ids = ids[dropped:]
            tok_lens = tok_lens.copy()
            tok_lens[0] -= dropped
        ends = np.cumsum(tok_lens)
        pos = 0
        while self.buffered + len(ids) - pos >= self.shard_tokens:
            take = self.shard_tokens - self.buffered
            self._write(ids[pos:pos + take])
            pos += take
            j = int(np.searchsorted(ends, pos, side="right"))  # first document not wholly before the cut
            self._commit(next_doc=start + j, skip=int(pos - ends[j - 1] if j else pos + dropped),
                         documents=self.documents + j, chars=self.chars + int(char_lens[:j].sum()),
                         bytes=self.bytes + int(byte_lens[:j].sum()))
        if pos < len(ids):
            self._write(ids[pos:])
        self.documents += len(tok_lens)
        self.chars += int(char_lens.sum())
        self.bytes += int(byte_lens.sum())

    def finish(self) -> None:
        if self.buffered:
            self._commit(next_doc=self.documents, skip=0, documents=self.documents, chars=self.chars, bytes=self.bytes)

    def _commit(self, **position) -> None:
        shard = self.current
        shard.commit()
        self.current = None
        self.tokens += shard.count
        self.shards.append({"path": shard.path.name, "tokens": int(shard.count), **position})
        self.on_commit()

    def discard(self) -> None:
        """Delete the temporary file of an unfinished shard (after an error)."""
        if self.current is not None:
            self.current.discard()
            self.current = None

    def totals(self) -> dict:
        return {"documents": self.documents, "chars": self.chars, "bytes": self.bytes, "tokens": self.tokens}


def _chunks(plan: SourcePlan, writers: dict) -> Iterator[tuple[str, int, list[str]]]:
    """``(split, index of the first document in its split, documents)``, skipping resumed ones."""
    docs = {name: [] for name in SPLITS}
    size = dict.fromkeys(SPLITS, 0)
    start = dict.fromkeys(SPLITS, 0)
    index = dict.fromkeys(SPLITS, 0)
    for is_val, doc in iter_documents(plan):
        name = SPLITS[is_val]
        i = index[name]
        index[name] += 1
        if i < writers[name].resume_doc:
            continue
        if not docs[name]:
            start[name] = i
        docs[name].append(doc)
        size[name] += len(doc)
        if size[name] >= CHUNK_CHARS or len(docs[name]) >= CHUNK_DOCS:
            yield name, start[name], docs[name]
            docs[name], size[name] = [], 0
    for name in SPLITS:
        if docs[name]:
            yield name, start[name], docs[name]


def encode_documents(tokenizer: Tokenizer, docs: list[str], dtype: str):
    """``(ids, tokens per doc, UTF-8 bytes per doc, chars per doc)``; each doc followed by the separator."""
    pieces, n_pieces = [], []
    for doc in docs:
        cut = tokenizer.pieces(doc)
        pieces.extend(cut)
        n_pieces.append(len(cut))
    encoded = iter(tokenizer.encode_batch(pieces))
    separator = np.asarray(tokenizer.separator_ids, dtype=dtype)
    parts = []
    tok_lens = np.empty(len(docs), dtype=np.int64)
    for k, n in enumerate(n_pieces):
        count = len(separator)
        for _ in range(n):
            ids = next(encoded)
            parts.append(ids)
            count += len(ids)
        parts.append(separator)
        tok_lens[k] = count
    ids = np.concatenate(parts)
    if ids.size and int(ids.max()) > np.iinfo(dtype).max:  # before the cast, which would wrap
        raise DataError(f"token id {int(ids.max())} does not fit {dtype}; use uint32")
    ids = ids.astype(dtype, copy=False)
    byte_lens = np.fromiter((len(d.encode("utf-8")) for d in docs), dtype=np.int64, count=len(docs))
    char_lens = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    return ids, tok_lens, byte_lens, char_lens


_WORKER: dict = {}


def _init_worker(payload: tuple, dtype: str) -> None:
    # One core per worker: the processes are the parallelism, not tokenizers' own threads.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER.update(tokenizer=tokenizer_from_payload(payload), dtype=dtype)


def _encode_chunk(item: tuple[str, int, list[str]]):
    name, start, docs = item
    return (name, start, *encode_documents(_WORKER["tokenizer"], docs, _WORKER["dtype"]))


def _encoded(chunks: Iterable, tokenizer: Tokenizer, workers: int, dtype: str) -> Iterator[tuple]:
    """Encoded chunks in input order; at most ``2 * workers + 2`` in flight."""
    if workers == 0:
        for name, start, docs in chunks:
            yield (name, start, *encode_documents(tokenizer, docs, dtype))
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer_payload(tokenizer), dtype))
    try:
        pending: deque = deque()
        for item in chunks:
            pending.append(pool.apply_async(_encode_chunk, (item,)))
            if len(pending) >= 2 * workers + 2:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _run(plan: SourcePlan, tokenizer: Tokenizer, writers: dict, workers: int, dtype: str,
         progress: Optional[bool]) -> None:
    from tqdm.auto import tqdm

    started = time.perf_counter()
    tokens = 0
    with tqdm(unit="doc", unit_scale=True, desc="prepare", disable=None if progress is None else not progress,
              dynamic_ncols=True) as bar:
        last = started
        for name, start, ids, tok_lens, byte_lens, char_lens in _encoded(_chunks(plan, writers), tokenizer,
                                                                          workers, dtype):
            writers[name].add(start, ids, tok_lens, byte_lens, char_lens)
            tokens += len(ids)
            bar.update(len(tok_lens))
            now = time.perf_counter()
            if now - last > 0.5:
                bar.set_postfix_str(f"{tokens / (now - started):,.0f} tok/s", refresh=False)
                last = now
