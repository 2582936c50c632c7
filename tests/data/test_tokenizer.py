"""Tokenizers: bytes, trained byte-level BPE (cached), local HF files, and byte counting."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

import moa.data.pretokenize as pretokenize_module
import moa.data.tokenizer as tokenizer_module
from moa.data import ByteTokenizer, DataConfig, DataError, count_utf8_bytes, prepare_data
from moa.data.sources import iter_documents, plan_source, stdlib_root
from moa.data.tokenizer import EOS_TEXT, load_hf_tokenizer

SAMPLE = "héllo €"  # 1 + 2 + 1 + 1 + 1 + 1 + 3 = 10 UTF-8 bytes
MIXED = "def f(x):\n    return x ** 2  # квадрат, 平方, 🙂\n"


@pytest.fixture
def bpe_data(text_corpus, cache_dir):
    return prepare_data(DataConfig(source=f"text:{text_corpus}", tokenizer="bpe:384", cache_dir=cache_dir))


def test_bytes_round_trip_and_eos():
    tok = ByteTokenizer()
    ids = tok.encode(MIXED)
    assert ids == list(MIXED.encode("utf-8")) and tok.decode(ids) == MIXED
    assert tok.vocab_size == 256 and tok.eos_id == 0xFF
    # The EOS byte never occurs in UTF-8 text and decodes to nothing.
    assert 0xFF not in ids and tok.decode(ids + [0xFF] + ids) == MIXED + MIXED
    assert tok.decode(np.array(ids, dtype=np.uint16)) == MIXED
    assert tok.decode(torch.tensor(ids)) == MIXED


def test_count_utf8_bytes_for_bytes():
    tok = ByteTokenizer()
    assert count_utf8_bytes(tok, tok.encode(SAMPLE)) == 10
    assert count_utf8_bytes(tok, torch.tensor(tok.encode(MIXED)).view(1, -1)) == len(MIXED.encode("utf-8"))


def test_bpe_trains_with_the_right_vocab_and_round_trips(bpe_data):
    tok = bpe_data.tokenizer
    assert tok.vocab_size == 384 and tok.spec == "bpe:384"
    assert tok.trained_vocab_size == 384  # 200 kB of text has merges to spare
    assert tok.eos_id == tok.backend.token_to_id(EOS_TEXT)
    for text in (SAMPLE, MIXED, (stdlib_root() / "this.py").read_text()):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert max(ids) < tok.vocab_size
    # BPE compresses real text: far fewer tokens than bytes.
    code = (stdlib_root() / "heapq.py").read_text()
    assert len(tok.encode(code)) < 0.7 * len(code.encode("utf-8"))
    # Document text cannot inject the EOS id.
    assert tok.eos_id not in tok.encode(f"a {EOS_TEXT} b")
    assert tok.decode(tok.encode(f"a {EOS_TEXT} b")) == f"a {EOS_TEXT} b"


def test_count_utf8_bytes_for_bpe(bpe_data):
    tok = bpe_data.tokenizer
    assert count_utf8_bytes(tok, tok.encode(SAMPLE)) == 10
    assert count_utf8_bytes(tok, tok.encode(MIXED)) == len(MIXED.encode("utf-8"))
    # Additive over any cut of the ids, with the EOS counted as one byte.
    ids = tok.encode(MIXED) + [tok.eos_id] + tok.encode(SAMPLE)
    assert count_utf8_bytes(tok, ids[:7]) + count_utf8_bytes(tok, ids[7:]) == len(MIXED.encode()) + 1 + 10
    val = bpe_data.val_tokens
    assert count_utf8_bytes(tok, val) == bpe_data.meta["splits"]["val"]["bytes"] + bpe_data.meta["splits"]["val"]["documents"]
    with pytest.raises(DataError, match="out of range"):
        count_utf8_bytes(tok, [tok.vocab_size])


def test_bpe_is_cached_and_not_retrained(text_corpus, cache_dir, bpe_data, monkeypatch):
    path = bpe_data.tokenizer.path
    assert path == os.path.join(bpe_data.meta["cache_path"], "tokenizer.json") and path.startswith(cache_dir)
    mtime = os.stat(path).st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the cached BPE tokenizer should have been reused")

    monkeypatch.setattr(pretokenize_module, "train_bpe", no_training)
    # Remove a shard too, so the splits are rebuilt with the tokenizer from its file.
    os.remove(os.path.join(bpe_data.meta["cache_path"], "val_000000.bin"))
    again = prepare_data(DataConfig(source=f"text:{text_corpus}", tokenizer="bpe:384", cache_dir=cache_dir))
    assert os.stat(path).st_mtime_ns == mtime
    assert np.array_equal(again.train_tokens, bpe_data.train_tokens)
    assert np.array_equal(again.val_tokens, bpe_data.val_tokens)
    assert again.tokenizer.fingerprint == bpe_data.tokenizer.fingerprint


def test_bpe_is_trained_on_the_training_split_only(text_corpus, cache_dir, bpe_data):
    # A vocabulary trained on train + val differs: val text must not shape the merges.
    val_files = bpe_data.meta["splits"]["val"]["files"]
    assert val_files >= 1
    everything = [p.read_text() for p in sorted(text_corpus.rglob("*.py"))]
    leaky = tokenizer_module.train_bpe(everything, 384)
    assert leaky.to_str() != bpe_data.tokenizer.backend.to_str()
    # and it is the vocabulary of exactly the training documents, in stream order
    plan = plan_source(DataConfig(source=f"text:{text_corpus}", tokenizer="bpe:384", cache_dir=cache_dir))
    train_docs = [doc for is_val, doc in iter_documents(plan) if not is_val]
    assert 0 < len(train_docs) < len(everything)
    assert tokenizer_module.train_bpe(train_docs, 384).to_str() == bpe_data.tokenizer.backend.to_str()


def test_long_documents_are_cut_without_changing_ids(bpe_data, monkeypatch):
    tok = bpe_data.tokenizer
    text = "".join((stdlib_root() / name).read_text() for name in ("bisect.py", "heapq.py", "textwrap.py"))
    monkeypatch.setattr(tokenizer_module, "ENCODE_PIECE_CHARS", 300)
    pieces = tok.pieces(text)
    assert len(pieces) > 20 and "".join(pieces) == text
    fast = np.concatenate(tok.encode_batch(pieces))
    assert fast.tolist() == tok.encode(text)  # the slow reference: one call on the whole text


def test_hf_tokenizer_from_a_local_file_and_folder(bpe_data, tmp_path):
    by_file = load_hf_tokenizer(bpe_data.tokenizer.path, "hf:file")
    folder = tmp_path / "tok"
    folder.mkdir()
    bpe_data.tokenizer.backend.save(str(folder / "tokenizer.json"))
    by_folder = load_hf_tokenizer(str(folder), "hf:folder")
    for tok in (by_file, by_folder):
        assert tok.vocab_size == 384 and tok.eos_id == bpe_data.tokenizer.eos_id
        assert tok.encode(MIXED) == bpe_data.tokenizer.encode(MIXED)
        assert count_utf8_bytes(tok, tok.encode(SAMPLE)) == 10


def test_hf_tokenizer_errors_name_the_path(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        load_hf_tokenizer(str(tmp_path / "nowhere"), "hf:nowhere")
    # a folder without tokenizer.json, with transformers (which fails with a multi-line
    # error naming no path) and without it
    with pytest.raises(DataError, match="has no tokenizer.json and transformers could not") as info:
        load_hf_tokenizer(str(tmp_path), "hf:folder")
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(DataError, match="has no tokenizer.json .install transformers") as info:
        load_hf_tokenizer(str(tmp_path), "hf:folder")
    assert str(tmp_path) in str(info.value)
    monkeypatch.undo()
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="not a tokenizers JSON file") as info:
        load_hf_tokenizer(str(bad), "hf:bad")
    assert "\n" not in str(info.value)
