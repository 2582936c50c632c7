"""prepare_data: the stdlib default, the on-disk cache, pre-tokenized shards, hf errors."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import moa.data.pretokenize as pretokenize_module
from moa.data import ByteTokenizer, DataConfig, DataError, ShardedTokens, prepare_data
from moa.data.shards import HEADER_INTS


def test_stdlib_default_prepares_and_is_cached(cache_dir, monkeypatch):
    config = DataConfig(cache_dir=cache_dir)
    data = prepare_data(config)
    meta = data.meta
    assert data.tokenizer.spec == "bytes" and data.train_tokens.dtype == np.uint16
    assert meta["fingerprint"] == data.fingerprint and meta["source"] == "stdlib"
    train, val = meta["splits"]["train"], meta["splits"]["val"]
    assert train["tokens"] == len(data.train_tokens) and val["tokens"] == len(data.val_tokens)
    # bytes: one id per UTF-8 byte plus one EOS per document.
    assert train["tokens"] == train["bytes"] + train["documents"]
    assert 0.02 < val["files"] / (train["files"] + val["files"]) < 0.10
    assert train["bytes"] > 10_000_000
    json.dumps(meta)
    assert data.tokenizer.decode(data.val_tokens[:2000]).count("\n") > 10

    monkeypatch.setattr(pretokenize_module, "_run", _fail("the cached splits should have been reused"))
    again = prepare_data(config)
    assert isinstance(again.train_tokens, np.memmap)  # one shard per split: used as it lies
    assert np.array_equal(again.train_tokens, data.train_tokens) and np.array_equal(again.val_tokens, data.val_tokens)


def _fail(message):
    def fail(*args, **kwargs):
        raise AssertionError(message)
    return fail


def test_cache_reuse_and_rebuild_after_damage(text_corpus, cache_dir, monkeypatch):
    config = DataConfig(source=f"text:{text_corpus}", tokenizer="bpe:300", cache_dir=cache_dir)
    data = prepare_data(config)
    folder = data.meta["cache_path"]
    assert sorted(os.listdir(folder)) == [".prepare.lock", "manifest.json", "tokenizer.json", "train_000000.bin",
                                          "val_000000.bin"]
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    assert len(manifest["files"]) == 10 and all(len(f["digest"]) == 64 for f in manifest["files"])

    with monkeypatch.context() as patch:
        patch.setattr(pretokenize_module, "_run", _fail("the cached splits should have been reused"))
        patch.setattr(pretokenize_module, "train_bpe", _fail("the cached tokenizer should have been reused"))
        again = prepare_data(config)
    assert np.array_equal(again.train_tokens, data.train_tokens)
    assert again.meta == data.meta

    # A cut-short shard (a crash, a full disk) is noticed and rebuilt, with the same
    # tokenizer. Cutting a mapped file in place would crash its readers, so the old maps
    # are copied and dropped first.
    expected = np.array(data.train_tokens)
    del data, again
    with open(os.path.join(folder, "train_000000.bin"), "r+b") as f:
        f.truncate(100)
    with monkeypatch.context() as patch:
        patch.setattr(pretokenize_module, "train_bpe", _fail("the cached tokenizer should have been reused"))
        rebuilt = prepare_data(config)
    assert np.array_equal(rebuilt.train_tokens, expected)


def test_the_cache_key_includes_the_tokenizer_and_the_corpus(text_corpus, cache_dir):
    as_bytes = prepare_data(DataConfig(source=f"text:{text_corpus}", cache_dir=cache_dir))
    as_bpe = prepare_data(DataConfig(source=f"text:{text_corpus}", tokenizer="bpe:300", cache_dir=cache_dir))
    other_split = prepare_data(DataConfig(source=f"text:{text_corpus}", val_fraction=0.3, cache_dir=cache_dir))
    paths = {d.meta["cache_path"] for d in (as_bytes, as_bpe, other_split)}
    assert len(paths) == 3
    assert len(as_bpe.train_tokens) < 0.8 * len(as_bytes.train_tokens)


def _bytes_of(text_corpus, cache_dir) -> np.ndarray:
    data = prepare_data(DataConfig(source=f"text:{text_corpus}", cache_dir=cache_dir))
    return np.concatenate([data.train_tokens, data.val_tokens])


def test_tokens_glob_reads_shards_by_memmap(text_corpus, cache_dir, tmp_path):
    ids = _bytes_of(text_corpus, cache_dir)
    shards = tmp_path / "shards"
    shards.mkdir()
    parts = np.array_split(ids, 8)
    for k, part in enumerate(parts):
        part.astype(np.uint16).tofile(shards / f"shard_{k:02d}.bin")
    data = prepare_data(DataConfig(source=f"tokens:{shards}/*.bin", val_fraction=0.25, cache_dir=cache_dir))
    # Several shards are one view over their memmaps, never copied together.
    assert isinstance(data.train_tokens, ShardedTokens) and data.train_tokens.dtype == np.uint16
    assert all(isinstance(part, np.memmap) for part in data.train_tokens.parts)
    assert os.listdir(data.meta["cache_path"]) == ["meta.json"]
    listing = data.meta["shards"]
    assert [s["path"] for s in listing] == [f"shard_{k:02d}.bin" for k in range(8)]
    expected = {name: np.concatenate([parts[k] for k, s in enumerate(listing) if s["split"] == name])
                for name in ("train", "val")}
    assert np.array_equal(data.train_tokens, expected["train"]) and np.array_equal(data.val_tokens, expected["val"])
    assert data.meta["splits"]["val"]["files"] >= 1 and data.meta["splits"]["train"]["files"] >= 1
    # The bytes tokenizer decodes them back to the corpus text.
    assert "def " in data.tokenizer.decode(data.train_tokens[:5000])


def test_tokens_single_shard_uint32_and_llmc_header(text_corpus, cache_dir, tmp_path):
    ids = _bytes_of(text_corpus, cache_dir)
    path = tmp_path / "all.bin"
    ids.astype(np.uint32).tofile(path)
    data = prepare_data(DataConfig(source=f"tokens:{path}@uint32", val_fraction=0.1, cache_dir=cache_dir))
    assert data.train_tokens.dtype == np.uint32
    assert np.array_equal(np.concatenate([data.train_tokens, data.val_tokens]), ids)  # used in place
    assert 0.09 < len(data.val_tokens) / len(ids) < 0.11

    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:3] = (20240520, 1, len(ids))
    llmc = tmp_path / "llmc.bin"
    llmc.write_bytes(header.tobytes() + ids.astype(np.uint16).tobytes())
    data = prepare_data(DataConfig(source=f"tokens:{llmc}", cache_dir=cache_dir))
    assert data.train_tokens.dtype == np.uint16
    assert np.array_equal(np.concatenate([data.train_tokens, data.val_tokens]), ids)


def test_tokens_errors(tmp_path, cache_dir):
    with pytest.raises(DataError, match="does not exist"):
        prepare_data(DataConfig(source=f"tokens:{tmp_path}/none.bin", cache_dir=cache_dir))
    with pytest.raises(DataError, match="matches no shard files"):
        prepare_data(DataConfig(source=f"tokens:{tmp_path}/*.bin", cache_dir=cache_dir))
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="not a multiple of uint16"):
        prepare_data(DataConfig(source=f"tokens:{odd}", cache_dir=cache_dir))
    # Ids beyond the tokenizer's vocabulary are caught before any model sees them.
    big = tmp_path / "big.bin"
    np.array([1, 2, 300, 4], dtype=np.uint16).tofile(big)
    with pytest.raises(DataError, match="token id 300 >= vocab_size 256"):
        prepare_data(DataConfig(source=f"tokens:{big}", tokenizer="bytes", cache_dir=cache_dir))


def test_hf_source_without_datasets_is_a_one_line_error(cache_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed; no network
    with pytest.raises(DataError) as info:
        prepare_data(DataConfig(source="hf:roneneldan/TinyStories", cache_dir=cache_dir))
    assert "'hf:roneneldan/TinyStories'" in str(info.value) and "datasets" in str(info.value)
    assert "\n" not in str(info.value)


def test_default_cache_dir_comes_from_the_environment(text_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("MOA_CACHE_DIR", str(tmp_path / "env-cache"))
    data = prepare_data(DataConfig(source=f"text:{text_corpus}"))
    assert data.meta["cache_path"].startswith(str(tmp_path / "env-cache"))
    assert isinstance(data.tokenizer, ByteTokenizer)


@pytest.mark.slow
def test_stdlib_bpe_8192(cache_dir, monkeypatch):
    """The full default corpus with a real BPE vocabulary (about 40 s on 2 cores, then cached)."""
    config = DataConfig(tokenizer="bpe:8192", cache_dir=cache_dir)
    data = prepare_data(config)
    val = data.meta["splits"]["val"]
    assert data.tokenizer.vocab_size == 8192 and data.train_tokens.dtype == np.uint16
    assert val["bytes"] / val["tokens"] > 3  # Python source compresses to ~3.8 bytes/token
    text = data.tokenizer.decode(data.val_tokens[:5000])
    assert data.tokenizer.decode(data.tokenizer.encode(text)) == text
    monkeypatch.setattr(pretokenize_module, "_run", _fail("the cached splits should have been reused"))
    again = prepare_data(config)
    assert isinstance(again.val_tokens, np.memmap) and np.array_equal(again.val_tokens, data.val_tokens)
