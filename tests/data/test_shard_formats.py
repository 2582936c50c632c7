"""Shard files: nanoGPT raw uint16, llm.c/modded-nanogpt headers, wrong headers, ShardedTokens."""

from __future__ import annotations

import os

import numpy as np
import pytest

from moa.data import DataConfig, DataError, ShardedTokens, prepare_data
from moa.data.shards import HEADER_INTS, read_shard_info, write_shard

RNG = np.random.default_rng(0)


def _header(magic: int, version: int, count: int) -> bytes:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (magic, version, count)
    return header.tobytes()


def test_sharded_tokens_slices_equal_the_concatenation():
    parts = [RNG.integers(0, 60000, size=n).astype(np.uint16) for n in (7, 1, 30, 2, 19)]
    view, whole = ShardedTokens(parts), np.concatenate(parts)
    assert len(view) == len(whole) == 59 and view.dtype == np.uint16 and view.shape == (59,)
    for start in range(0, 60, 3):
        for stop in range(start, 62, 5):
            assert np.array_equal(view[start:stop], whole[start:stop]), (start, stop)
    assert [int(view[i]) for i in range(-59, 59)] == [int(whole[i]) for i in range(-59, 59)]
    assert np.array_equal(view[::4], whole[::4]) and np.array_equal(np.asarray(view), whole)
    with pytest.raises(IndexError):
        view[59]


def test_nanogpt_train_and_val_bin_keep_their_split(tmp_path, cache_dir):
    train, val = RNG.integers(0, 256, size=5000), RNG.integers(0, 256, size=700)
    folder = tmp_path / "nanogpt"
    folder.mkdir()
    train.astype(np.uint16).tofile(folder / "train.bin")
    val.astype(np.uint16).tofile(folder / "val.bin")
    data = prepare_data(DataConfig(source=f"tokens:{folder}", val_fraction=0.5, cache_dir=cache_dir))
    assert isinstance(data.train_tokens, np.memmap) and data.train_tokens.dtype == np.uint16
    assert np.array_equal(data.train_tokens, train) and np.array_equal(data.val_tokens, val)
    assert data.meta["shards"][0]["header"] is False


def test_modded_nanogpt_fineweb_shards(tmp_path, cache_dir):
    """256 x int32 header (magic 20240520, version 1, token count), then uint16 tokens."""
    folder = tmp_path / "fineweb10B"
    folder.mkdir()
    shards = {name: RNG.integers(0, 256, size=n).astype(np.uint16)
              for name, n in (("fineweb_val_000000", 900), ("fineweb_train_000001", 3000),
                              ("fineweb_train_000002", 2500))}
    for name, ids in shards.items():
        (folder / f"{name}.bin").write_bytes(_header(20240520, 1, len(ids)) + ids.tobytes())
    data = prepare_data(DataConfig(source=f"tokens:{folder}/fineweb_*.bin", cache_dir=cache_dir))
    assert isinstance(data.train_tokens, ShardedTokens)
    expected = np.concatenate([shards["fineweb_train_000001"], shards["fineweb_train_000002"]])
    assert np.array_equal(data.train_tokens[0:len(expected)], expected)
    assert np.array_equal(data.val_tokens, shards["fineweb_val_000000"])
    assert data.meta["splits"]["train"]["tokens"] == 5500 and all(s["header"] for s in data.meta["shards"])


def test_llmc_uint32_header_and_round_trip(tmp_path):
    ids = RNG.integers(0, 2**20, size=1000).astype(np.uint32)
    path = tmp_path / "llama.bin"
    path.write_bytes(_header(20240801, 7, len(ids)) + ids.tobytes())
    info = read_shard_info(path)
    assert (info.dtype, info.offset, info.count) == ("uint32", 1024, 1000)
    assert np.array_equal(info.tokens(), ids)
    # moa's own shards use the same layout and are written atomically (no temp file left).
    for dtype, top in (("uint16", 2**16), ("uint32", 2**20)):
        ids = RNG.integers(0, top, size=333)
        write_shard(tmp_path / f"own_{dtype}.bin", ids, dtype)
        info = read_shard_info(tmp_path / f"own_{dtype}.bin")
        assert info.dtype == dtype and np.array_equal(info.tokens(), ids)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    with pytest.raises(DataError, match="does not fit uint16"):
        write_shard(tmp_path / "big.bin", np.array([70000]), "uint16")


@pytest.mark.parametrize("case, match", [
    ("version", "version 2, expected 1: wrong header"),
    ("count", "header says 600 uint16 tokens but the file holds 1000 bytes"),
    ("short", "shorter than its 1024-byte header"),
    ("dtype", "has a header for uint16 ids, not @uint32"),
])
def test_wrong_headers_are_one_line_errors(tmp_path, cache_dir, case, match):
    ids = RNG.integers(0, 256, size=500).astype(np.uint16)
    path = tmp_path / "shard.bin"
    data = {"version": _header(20240520, 2, 500) + ids.tobytes(),
            "count": _header(20240520, 1, 600) + ids.tobytes(),
            "short": _header(20240520, 1, 500)[:100],
            "dtype": _header(20240520, 1, 500) + ids.tobytes()}[case]
    path.write_bytes(data)
    source = f"tokens:{path}@uint32" if case == "dtype" else f"tokens:{path}"
    with pytest.raises(DataError, match=match) as info:
        prepare_data(DataConfig(source=source, cache_dir=cache_dir))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
