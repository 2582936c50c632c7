"""Tokenizers: raw bytes, byte-level BPE trained on the training split, local HF files.

All three share one small interface: ``spec``, ``vocab_size``, ``eos_id``,
``encode(text) -> list[int]``, ``decode(ids) -> str``, ``encode_batch(texts) ->
list[np.ndarray]`` (parallel for BPE), ``pieces(text)`` (a long document cut where that
leaves its ids unchanged, to parallelise it), ``separator_ids`` (appended after every
document), ``fingerprint`` (names the tokenizer in the token cache), ``path`` (its file,
if any) and ``token_bytes`` (UTF-8 bytes per id, for bits per byte).

Choices the trainer relies on:

* ``bytes``: ids are the UTF-8 bytes, vocab 256. The end of a document is byte ``0xFF``,
  which never occurs in UTF-8, so it is an unambiguous EOS inside the 256-symbol
  vocabulary (``"\\n\\n"`` would be invisible in source code full of blank lines).
* ``bpe:N``: GPT-2-style byte-level BPE (``tokenizers``; ByteLevel pre-tokenizer, no
  prefix space, no normalizer), ``<|endoftext|>`` as EOS (id 0). ``vocab_size`` is always N
  so model shapes follow from the config, even if a tiny corpus runs out of merges first
  (ids above the trained ones then never occur).
* ``hf:PATH``: a ``tokenizer.json`` (or a folder holding one; with ``transformers``
  installed, any local folder it can load fast). Never the hub. EOS is the first of
  ``HF_EOS_CANDIDATES`` in the vocabulary; without one, documents end with ``"\\n\\n"``.
* Encoding never adds special tokens (no BOS/EOS templates) and treats the text
  ``"<|endoftext|>"`` inside a document as plain text, so a corpus cannot inject an EOS.
* Bytes per token (bits per byte, :func:`count_utf8_bytes`): the token's UTF-8 bytes;
  the EOS counts as 1 byte (it stands for one separator byte in every tokenizer, so the
  bpb denominator of a corpus is the same whatever the tokenizer) and other special
  tokens as 0. Exact for byte-level vocabularies; for SentencePiece-style ones ``▁`` is
  a space and ``<0xHH>`` one byte.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from moa.data.cache import short_hash
from moa.data.config import DataConfig, DataError, first_line, parse_tokenizer

EOS_TEXT = "<|endoftext|>"
HF_EOS_CANDIDATES = (EOS_TEXT, "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")
BYTES_EOS = 0xFF
# Long documents are cut into pieces of about this many characters so that encode_batch
# can spread one huge file over all cores.
ENCODE_PIECE_CHARS = 1 << 18
# A "\n" between two non-space characters is a pre-token of its own under the GPT-2
# regex wherever the text is cut, so cutting after it leaves the BPE ids unchanged.
_SAFE_CUT = re.compile(r"(?<=\S)\n(?=\S)")


def _as_int_array(ids) -> np.ndarray:
    """Any ids (list, numpy array, torch tensor on any device) as a flat int64 array."""
    if hasattr(ids, "detach"):
        ids = ids.detach().cpu().numpy()
    return np.asarray(ids, dtype=np.int64).reshape(-1)


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocab 256); byte 0xFF, never valid in UTF-8, ends a document."""

    spec = "bytes"
    vocab_size = 256
    eos_id = BYTES_EOS
    separator_ids = (BYTES_EOS,)
    fingerprint = "bytes"
    path: Optional[str] = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def pieces(self, text: str) -> list[str]:
        return [text]

    def decode(self, ids) -> str:
        ids = _as_int_array(ids)
        data = ids[ids != BYTES_EOS].astype(np.uint8).tobytes()
        return data.decode("utf-8", errors="replace")

    @cached_property
    def token_bytes(self) -> np.ndarray:
        return np.ones(self.vocab_size, dtype=np.int64)


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` behind the common interface (trained BPE or local HF)."""

    def __init__(self, tok, spec: str, vocab_size: Optional[int] = None,
                 path: Optional[str] = None, cut_long_documents: bool = False) -> None:
        # Document text is data: "<|endoftext|>" written in it must not become the EOS id.
        if hasattr(tok, "encode_special_tokens"):
            tok.encode_special_tokens = True
        self._tok = tok
        self.spec = spec
        self.path = path
        # ids may skip numbers: the embedding needs the largest id + 1, not the number of entries
        self.trained_vocab_size = max(tok.get_vocab(with_added_tokens=True).values(), default=-1) + 1
        self.vocab_size = max(vocab_size or 0, self.trained_vocab_size)
        self.eos_id = next((i for i in map(tok.token_to_id, HF_EOS_CANDIDATES) if i is not None), None)
        self.separator_ids = (self.eos_id,) if self.eos_id is not None else tuple(self.encode("\n\n"))
        self.fingerprint = short_hash(tok.to_str())
        self._cut_long_documents = cut_long_documents

    @property
    def backend(self):
        """The wrapped ``tokenizers.Tokenizer`` (e.g. to save it next to a run)."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        fast = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [np.asarray(e.ids, dtype=np.int64) for e in fast(list(texts), add_special_tokens=False)]

    def pieces(self, text: str) -> list[str]:
        """``text`` cut where encoding the pieces gives the same ids as the whole.

        Only our own byte-level BPE is cut (see ``_SAFE_CUT``); other pre-tokenizers (e.g.
        SentencePiece's prefix space) would change the ids at every cut.
        """
        if not self._cut_long_documents or len(text) <= 2 * ENCODE_PIECE_CHARS:
            return [text]
        out, start = [], 0
        while len(text) - start > 2 * ENCODE_PIECE_CHARS:
            m = _SAFE_CUT.search(text, start + ENCODE_PIECE_CHARS)
            if m is None:
                break
            out.append(text[start:m.end()])
            start = m.end()
        out.append(text[start:])
        return out

    def decode(self, ids) -> str:
        return self._tok.decode(_as_int_array(ids).tolist(), skip_special_tokens=True)

    @cached_property
    def token_bytes(self) -> np.ndarray:
        tok = self._tok
        from tokenizers.pre_tokenizers import ByteLevel

        byte_level = '"ByteLevel"' in json.dumps(json.loads(tok.to_str()).get("decoder"))
        alphabet = set(ByteLevel.alphabet())
        added = tok.get_added_tokens_decoder()
        table = np.zeros(self.vocab_size, dtype=np.int64)
        for token, i in tok.get_vocab(with_added_tokens=True).items():
            if i == self.eos_id:
                table[i] = 1
            elif i in added:
                table[i] = 0 if added[i].special else len(token.encode("utf-8"))
            elif byte_level:
                # Each alphabet character stands for exactly one byte (GPT-2's bytes_to_unicode).
                table[i] = sum(1 if c in alphabet else len(c.encode("utf-8")) for c in token)
            elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
                table[i] = 1
            else:
                table[i] = len(token.replace("\u2581", " ").encode("utf-8"))
        return table


Tokenizer = ByteTokenizer | HFTokenizer


def count_utf8_bytes(tokenizer: Tokenizer, ids) -> int:
    """UTF-8 bytes the token ``ids`` stand for (EOS = 1 byte); ``len(ids)`` for ``bytes``.

    Additive over any split of ``ids``, so per-batch counts sum to the whole; the trainer
    computes ``bpb = sum_nats / (ln 2 * count_utf8_bytes(tokenizer, targets))``.
    """
    ids = _as_int_array(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.vocab_size):
        raise DataError(f"token id out of range [0, {tokenizer.vocab_size}) for tokenizer {tokenizer.spec!r}")
    return int(tokenizer.token_bytes[ids].sum())


def train_bpe(documents: Iterable[str], vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` with ``vocab_size`` ids trained on ``documents``."""
    from tokenizers import Tokenizer as _Tok, decoders, models, pre_tokenizers, trainers

    tok = _Tok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_batched(documents, 256), trainer)
    return tok


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenizer_payload(tokenizer: Tokenizer) -> tuple:
    """A picklable description from which :func:`tokenizer_from_payload` rebuilds ``tokenizer``."""
    if isinstance(tokenizer, ByteTokenizer):
        return ("bytes",)
    return ("hf", tokenizer.backend.to_str(), tokenizer.spec, tokenizer.vocab_size, tokenizer.path,
            tokenizer._cut_long_documents)


def tokenizer_from_payload(payload: tuple) -> Tokenizer:
    if payload[0] == "bytes":
        return ByteTokenizer()
    from tokenizers import Tokenizer as _Tok

    _, text, spec, vocab_size, path, cut = payload
    return HFTokenizer(_Tok.from_str(text), spec, vocab_size=vocab_size, path=path, cut_long_documents=cut)


def bpe_tokenizer(tok, spec: str, path: Optional[str] = None) -> HFTokenizer:
    """A trained byte-level BPE ``tokenizers.Tokenizer`` behind the common interface."""
    return HFTokenizer(tok, spec, vocab_size=parse_tokenizer(spec).vocab, path=path, cut_long_documents=True)


def load_tokenizer(config: DataConfig) -> Tokenizer:
    """The tokenizer of ``config`` when it needs no training: ``bytes`` or a local ``hf:PATH``.

    ``bpe:N`` is trained on the corpus by :mod:`moa.data.pretokenize` and lives next to the
    shards it made.
    """
    spec = config.tokenizer_spec
    if spec.scheme == "bytes":
        return ByteTokenizer()
    if spec.scheme == "hf":
        return load_hf_tokenizer(spec.path, config.tokenizer)
    raise DataError(f"tokenizer={config.tokenizer!r} is trained by moa prepare on a text source; "
                    "it cannot be loaded on its own")


def load_hf_tokenizer(raw_path: str, spec: str) -> HFTokenizer:
    """A local Hugging Face tokenizer: a ``tokenizer.json`` file or a folder (never the hub)."""
    from tokenizers import Tokenizer as _Tok

    path = Path(raw_path).expanduser()
    if not path.exists():
        raise DataError(f"tokenizer={spec!r}: path {str(path)!r} does not exist (hf: loads local files only)")
    file = path / "tokenizer.json" if path.is_dir() else path
    if file.is_file():
        try:
            return HFTokenizer(_Tok.from_file(str(file)), spec, path=str(file))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise DataError(f"tokenizer={spec!r}: {str(file)!r} is not a tokenizers JSON file ({first_line(e)})") from None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise DataError(f"tokenizer={spec!r}: {str(path)!r} has no tokenizer.json (install transformers to load other formats)") from None
    try:
        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # OSError/ValueError with multi-line advice, naming no path
        raise DataError(f"tokenizer={spec!r}: {str(path)!r} has no tokenizer.json and transformers could not "
                        f"load a tokenizer from it ({first_line(e)})") from None
    if not getattr(hf, "is_fast", False):
        raise DataError(f"tokenizer={spec!r}: transformers loaded only a slow tokenizer from {str(path)!r}; a fast one is needed")
    return HFTokenizer(hf.backend_tokenizer, spec, path=str(path))
