"""Data configuration: a frozen, validated dataclass and the parsers of its spec strings.

A data source and a tokenizer are each named by one string so that a CLI override
(``data.source=text:~/corpus``) sets them in one go:

========================  =============================================================
``source``                meaning
========================  =============================================================
``stdlib``                the running interpreter's standard-library ``.py`` files
``text:PATH``             a text file, a folder (recursive) or a glob of text files
``jsonl:PATH``            ``.jsonl``/``.jsonl.gz``/``.jsonl.zst`` files (a file, a folder of
                          them or a glob); one JSON object per line, the document in
                          ``text_field``
``parquet:PATH``          ``.parquet`` files (FineWeb/DCLM layout); the ``text_field`` column
``prepared:DIR``          the output of ``moa prepare`` (shards + manifest), memory-mapped
``tokens:GLOB[@DTYPE]``   pre-tokenized ``.bin`` shards read by ``np.memmap``: nanoGPT's raw
                          uint16, llm.c/modded-nanogpt headers auto-detected; DTYPE is
                          ``uint16`` or ``uint32`` (see :mod:`moa.data.shards`)
``hf:NAME[:CONFIG]``      a Hugging Face dataset, streamed (needs ``datasets`` + network)
========================  =============================================================

``tokenizer`` is ``bytes`` (vocab 256), ``bpe:N`` (byte-level BPE with vocab N trained on
a bounded sample of the training split, see :mod:`moa.data.pretokenize`) or ``hf:PATH`` (a local Hugging Face tokenizer, never from the hub).

Validation here is syntactic only; whether paths exist is checked by
:func:`moa.data.prepare_data`, so a config can be built on one machine and run on another.
Every error is a :class:`DataError` (a ``ValueError``) with a one-line message.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

SOURCE_SCHEMES = ("stdlib", "text", "jsonl", "parquet", "prepared", "tokens", "hf")
# Sources whose tokens already exist: no tokenizer is trained and no characters are cut.
TOKENIZED_SCHEMES = ("tokens", "prepared")
TOKENIZER_SCHEMES = ("bytes", "bpe:N", "hf:PATH")
TOKEN_DTYPES = ("uint16", "uint32")
# 256 byte symbols + the end-of-text token are the smallest byte-level BPE vocabulary.
BPE_MIN_VOCAB = 257
# Ids must fit the uint32 token files; far beyond any vocabulary anyone trains.
BPE_MAX_VOCAB = 2**31 - 1


class DataError(ValueError):
    """A user error in the data layer: bad config, missing path, corpus too small.

    The message is one line so that the CLI can print it without a traceback.
    """


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, for one-line errors wrapping it."""
    return (str(exc).strip().splitlines() or [""])[0][:limit]


class SourceSpec(NamedTuple):
    """A parsed ``source`` string: ``scheme``, its ``arg`` (path/name), ``dtype`` for shards."""

    scheme: str
    arg: str = ""
    dtype: Optional[str] = None


class TokenizerSpec(NamedTuple):
    """A parsed ``tokenizer`` string: ``scheme`` in bytes/bpe/hf, ``vocab`` (bpe), ``path`` (hf)."""

    scheme: str
    vocab: Optional[int] = None
    path: str = ""


def parse_source(source: str) -> SourceSpec:
    """Split ``source`` into scheme and argument; raise DataError on a bad spec."""
    if not isinstance(source, str) or not source:
        raise DataError(f"source={source!r} is invalid; valid schemes: {_schemes()}")
    scheme, sep, arg = source.partition(":")
    if scheme not in SOURCE_SCHEMES:
        raise DataError(f"source={source!r} has unknown scheme {scheme!r}; valid schemes: {_schemes()}")
    if scheme == "stdlib":
        if sep:
            raise DataError(f"source={source!r} is invalid; 'stdlib' takes no argument")
        return SourceSpec("stdlib")
    if not arg:
        raise DataError(f"source={source!r} needs a {'name' if scheme == 'hf' else 'path'} after '{scheme}:'")
    if scheme == "tokens":
        path, at, dtype = arg.rpartition("@")
        # A path may itself hold "@"; only a bare word after the last "@" is a dtype suffix.
        if at and not any(c in dtype for c in "/\\*?[."):
            if dtype not in TOKEN_DTYPES:
                raise DataError(
                    f"source={source!r} has dtype {dtype!r}; valid: {', '.join(TOKEN_DTYPES)}"
                )
            if not path:
                raise DataError(f"source={source!r} needs a glob before '@{dtype}'")
            return SourceSpec("tokens", path, dtype)
    return SourceSpec(scheme, arg)


def parse_tokenizer(tokenizer: str) -> TokenizerSpec:
    """Split ``tokenizer`` into scheme and argument; raise DataError on a bad spec."""
    if tokenizer == "bytes":
        return TokenizerSpec("bytes", vocab=256)
    scheme, sep, arg = tokenizer.partition(":") if isinstance(tokenizer, str) else ("", "", "")
    if scheme == "bpe" and sep:
        if not arg.isdigit() or not BPE_MIN_VOCAB <= int(arg) <= BPE_MAX_VOCAB:
            raise DataError(
                f"tokenizer={tokenizer!r} is invalid; bpe:N needs an integer vocab size N >= {BPE_MIN_VOCAB}"
            )
        return TokenizerSpec("bpe", vocab=int(arg))
    if scheme == "hf" and sep and arg:
        return TokenizerSpec("hf", path=arg)
    raise DataError(f"tokenizer={tokenizer!r} is invalid; valid: {', '.join(TOKENIZER_SCHEMES)}")


def _schemes() -> str:
    return ("stdlib, text:PATH, jsonl:PATH, parquet:PATH, prepared:DIR, tokens:GLOB[@uint16|@uint32], "
            "hf:NAME[:CONFIG]")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the tokens come from and how they are made.

    source: see the module docstring; default ``stdlib`` (offline, nothing downloaded).
    tokenizer: ``bytes`` | ``bpe:N`` | ``hf:PATH``.
    text_field: key of the document in each JSON object (``jsonl:``, ``hf:``) or the text
        column (``parquet:``).
    val_fraction: share of files (of documents for one-file and ``hf:`` sources) held out
        for validation, 0 < f < 1 (see :mod:`moa.data.sources`).
    cache_dir: where tokenized splits and trained tokenizers live; ``None`` means
        ``$MOA_CACHE_DIR`` or ``~/.cache/moa``.
    max_chars: keep only the first ``max_chars`` characters of the corpus (documents in
        sorted order, the last one cut), before splitting; ``None`` keeps everything.
        ``hf:`` sources stream until this many characters (default cap 50M for them);
        not allowed with ``tokens:``/``prepared:`` sources.
    """

    source: str = "stdlib"
    tokenizer: str = "bytes"
    text_field: str = "text"
    val_fraction: float = 0.05
    cache_dir: Optional[str] = None
    max_chars: Optional[int] = None

    def __post_init__(self) -> None:
        source = parse_source(self.source)
        tokenizer = parse_tokenizer(self.tokenizer)
        if source.scheme == "tokens" and tokenizer.scheme == "bpe":
            raise DataError(
                f"tokenizer={self.tokenizer!r} trains on text, but source={self.source!r} is "
                "already tokenized; use tokenizer=bytes or hf:PATH (the one that made the shards)"
            )
        if source.scheme in TOKENIZED_SCHEMES and self.max_chars is not None:
            raise DataError(
                f"max_chars={self.max_chars!r} cuts text, but source={self.source!r} is already "
                "tokenized; leave max_chars=None (a token budget is the trainer's)"
            )
        if not isinstance(self.text_field, str) or not self.text_field:
            raise DataError(f"text_field={self.text_field!r} must be a non-empty string")
        f = self.val_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and 0 < f < 1):
            raise DataError(f"val_fraction={f!r} must be a number with 0 < val_fraction < 1")
        if self.cache_dir is not None and (not isinstance(self.cache_dir, str) or not self.cache_dir):
            raise DataError(f"cache_dir={self.cache_dir!r} must be a non-empty path or None")
        m = self.max_chars
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m <= 0):
            raise DataError(f"max_chars={m!r} must be a positive integer or None")

    @property
    def source_spec(self) -> SourceSpec:
        return parse_source(self.source)

    @property
    def tokenizer_spec(self) -> TokenizerSpec:
        return parse_tokenizer(self.tokenizer)

    def replace(self, **changes) -> "DataConfig":
        return dataclasses.replace(self, **changes)
