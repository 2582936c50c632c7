"""moa prepare's engine: shards equal the in-memory reference for any worker count, resume
is byte-identical, every format gives the same shards, bad input is a one-line error."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import moa.data.pretokenize as pretokenize_module
from moa.data import DataConfig, DataError, prepare_data
from moa.data.pretokenize import pretokenize
from moa.data.shards import ShardWriter, read_shard_info
from moa.data.sources import load_corpus, stdlib_root

SHARD = 4000  # tokens per shard: many shards, documents straddling their edges


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _split_ids(folder: Path, manifest: dict, split: str) -> np.ndarray:
    return np.concatenate([read_shard_info(folder / s["path"]).tokens() for s in manifest["splits"][split]["shards"]])


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few documents, so that two workers really share the work."""
    monkeypatch.setattr(pretokenize_module, "CHUNK_CHARS", 6000)


def test_shards_equal_the_reference_for_any_worker_count(text_corpus, tmp_path, small_chunks):
    config = DataConfig(source=f"text:{text_corpus}", tokenizer="bpe:300", val_fraction=0.2)
    outs = {w: tmp_path / f"w{w}" for w in (0, 1, 2)}
    manifests = {w: pretokenize(config, out, workers=w, shard_tokens=SHARD) for w, out in outs.items()}
    assert _files(outs[0]) == _files(outs[1]) == _files(outs[2])  # byte-identical, manifest included
    manifest, folder = manifests[2], outs[2]
    assert sorted(p.name for p in folder.iterdir())[:3] == [".prepare.lock", "manifest.json", "tokenizer.json"]

    # The slow reference: the corpus in memory, each document encoded whole, EOS after each.
    data = prepare_data(DataConfig(source=f"prepared:{folder}", tokenizer="bpe:300"))
    tok = data.tokenizer
    corpus = load_corpus(config)
    for split in ("train", "val"):
        docs = getattr(corpus, split).documents
        expected = [i for doc in docs for i in tok.encode(doc) + [tok.eos_id]]
        ids = _split_ids(folder, manifest, split)
        assert ids.dtype == np.uint16 and ids.tolist() == expected
        assert np.array_equal(np.asarray(getattr(data, f"{split}_tokens")), ids)
        counts = manifest["splits"][split]
        sizes = [s["tokens"] for s in counts["shards"]]
        assert all(n == SHARD for n in sizes[:-1]) and 0 < sizes[-1] <= SHARD
        assert counts["tokens"] == len(expected) and counts["documents"] == len(docs)
        assert counts["bytes"] == sum(len(d.encode()) for d in docs) and counts["chars"] == sum(map(len, docs))
    assert len(manifest["splits"]["train"]["shards"]) >= 5
    assert manifest["bpe_sample_chars"] == 50_000_000 and manifest["vocab_size"] == 300


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("where", ["shard", "progress"])
def test_interrupted_prepare_resumes_to_identical_output(tmp_path, monkeypatch, small_chunks, where):
    """Killed while writing the 4th shard, or after writing it but before recording it."""
    path = tmp_path / "paragraphs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in _paragraphs()))
    config = DataConfig(source=f"jsonl:{path}", tokenizer="bpe:300", val_fraction=0.2)
    pretokenize(config, tmp_path / "full", workers=1, shard_tokens=SHARD)

    calls = {"n": 0}
    owner, target = (ShardWriter, "commit") if where == "shard" else (pretokenize_module, "atomic_write_json")
    real = getattr(owner, target)

    def crash_on_fourth(first, *args):
        # the first atomic_write_json is the initial progress file; shards come after it
        if where == "shard" or first.name == "progress.json":
            calls["n"] += 1
            if calls["n"] == 4 + (where == "progress"):
                raise _Interrupt
        return real(first, *args)

    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        patch.setattr(owner, target, crash_on_fourth)
        with pytest.raises(_Interrupt):
            pretokenize(config, cut, workers=1, shard_tokens=SHARD)
    assert (cut / "progress.json").exists() and not (cut / "manifest.json").exists()
    assert not list(cut.glob(".*.tmp"))  # the unfinished shard's temporary file is gone
    with pytest.raises(DataError, match="unfinished moa prepare"):
        prepare_data(DataConfig(source=f"prepared:{cut}", tokenizer="bpe:300"))

    encoded = []
    real_encode = pretokenize_module.encode_documents

    def counting(tokenizer, docs, dtype):
        encoded.extend(docs)
        return real_encode(tokenizer, docs, dtype)

    monkeypatch.setattr(pretokenize_module, "encode_documents", counting)
    (cut / ".train_000009.bin.1.deadbeef.tmp").write_bytes(b"left by a killed run")
    monkeypatch.setattr(pretokenize_module, "train_bpe", lambda *a: pytest.fail("the tokenizer was retrained"))
    pretokenize(config, cut, workers=0, shard_tokens=SHARD)
    assert _files(cut) == _files(tmp_path / "full")
    total = sum(s["documents"] for s in json.loads((cut / "manifest.json").read_text())["splits"].values())
    assert 0 < len(encoded) < total  # the documents before the resume point were not encoded again


def test_a_lost_shard_is_rebuilt_and_other_settings_are_refused(text_corpus, tmp_path):
    config = DataConfig(source=f"text:{text_corpus}", val_fraction=0.2)
    out = tmp_path / "out"
    pretokenize(config, out, workers=0, shard_tokens=SHARD)
    before = _files(out)
    (out / "train_000003.bin").unlink()
    pretokenize(config, out, workers=0, shard_tokens=SHARD)
    assert _files(out) == before
    with pytest.raises(DataError, match="was prepared with tokenizer='bytes', not 'bpe:300'") as info:
        pretokenize(config.replace(tokenizer="bpe:300"), out, shard_tokens=SHARD)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="shard_tokens=4000, not 5000"):
        pretokenize(config, out, shard_tokens=5000)
    with pytest.raises(DataError, match=r"made with tokenizer='bytes', not data.tokenizer='bpe:300'"):
        prepare_data(DataConfig(source=f"prepared:{out}", tokenizer="bpe:300"))


def _paragraphs() -> list[str]:
    text = "\n".join((stdlib_root() / name).read_text() for name in ("textwrap.py", "shlex.py"))
    return [p for p in text.split("\n\n") if p.strip()]


def test_every_format_gives_the_same_shards(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    docs = _paragraphs()
    lines = "".join(json.dumps({"id": i, "content": d}) + "\n" for i, d in enumerate(docs))
    (tmp_path / "a.jsonl").write_text(lines)
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write(lines)
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    # Parquet as FineWeb ships it: several row groups, more columns, and a null text.
    table = pa.table({"content": docs[:50] + [None] + docs[50:], "id": list(range(len(docs) + 1))})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=64)
    outputs = []
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.parquet"):
        scheme = "parquet" if name.endswith("parquet") else "jsonl"
        config = DataConfig(source=f"{scheme}:{tmp_path / name}", text_field="content", val_fraction=0.1)
        manifest = pretokenize(config, tmp_path / f"out-{name}", workers=0, shard_tokens=SHARD)
        outputs.append({p: b for p, b in _files(tmp_path / f"out-{name}").items() if p.endswith(".bin")})
        assert sum(s["documents"] for s in manifest["splits"].values()) == len(docs)
    assert outputs[0] == outputs[1] == outputs[2] == outputs[3]


def test_folder_of_parquet_files_splits_by_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = _paragraphs()
    folder = tmp_path / "fineweb"
    folder.mkdir()
    for k in range(6):
        pq.write_table(pa.table({"text": docs[k::6]}), folder / f"{k:03d}_00000.parquet")
    manifest = pretokenize(DataConfig(source=f"parquet:{folder}", val_fraction=0.3), tmp_path / "out",
                           workers=2, shard_tokens=SHARD)
    splits = {f["path"]: f["split"] for f in manifest["files"]}
    assert set(splits.values()) == {"train", "val"} and len(splits) == 6
    assert manifest["splits"]["val"]["files"] == list(splits.values()).count("val")


def test_bad_inputs_are_one_line_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cases = []
    with pytest.raises(DataError, match="does not exist") as info:
        pretokenize(DataConfig(source=f"jsonl:{tmp_path}/missing.jsonl"), tmp_path / "o1")
    cases.append(info)
    (tmp_path / "empty.jsonl").write_text('{"text": ""}\n\n{"text": ""}\n')
    with pytest.raises(DataError, match="has no non-empty text") as info:
        pretokenize(DataConfig(source=f"jsonl:{tmp_path}/empty.jsonl"), tmp_path / "o2")
    cases.append(info)
    pq.write_table(pa.table({"body": ["some text"], "url": ["x"]}), tmp_path / "web.parquet")
    with pytest.raises(DataError, match="web.parquet has no column text_field='text'; its columns: body, url") as info:
        pretokenize(DataConfig(source=f"parquet:{tmp_path}/web.parquet"), tmp_path / "o3")
    cases.append(info)
    with pytest.raises(DataError, match="vocab 70000, too large for dtype=uint16") as info:
        pretokenize(DataConfig(source="stdlib", tokenizer="bpe:70000"), tmp_path / "o4", dtype="uint16")
    cases.append(info)
    (tmp_path / "o5").mkdir()
    with pytest.raises(DataError, match="has no manifest.json; it is not the output of moa prepare") as info:
        prepare_data(DataConfig(source=f"prepared:{tmp_path}/o5"))
    cases.append(info)
    assert all("\n" not in str(c.value) for c in cases)
    assert not (tmp_path / "o4").exists()  # refused before any work


def _prepare_in_child(config, out, queue):
    try:
        queue.put(("ok", pretokenize(config, out, workers=0, shard_tokens=SHARD)["splits"]["train"]["tokens"]))
    except BaseException as e:  # reported, not raised: the parent asserts on it
        queue.put(("error", f"{type(e).__name__}: {e}"))


def test_two_prepares_of_one_folder_at_once_both_succeed(text_corpus, tmp_path, monkeypatch):
    """Sweep workers (or ranks, or two commands) preparing one cold cache at the same time:
    the second waits for the first and finds its manifest; nothing is deleted under it."""
    import multiprocessing
    import time

    real_write = ShardWriter.write
    monkeypatch.setattr(ShardWriter, "write", lambda self, ids: (time.sleep(0.02), real_write(self, ids))[1])
    config = DataConfig(source=f"text:{text_corpus}", tokenizer="bytes", val_fraction=0.2)
    ctx = multiprocessing.get_context("fork")  # the children keep the slowed writer
    queue = ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(config, tmp_path / "out", queue)) for _ in range(2)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert [r[0] for r in results] == ["ok", "ok"], results
    monkeypatch.setattr(ShardWriter, "write", real_write)
    reference = pretokenize(config, tmp_path / "reference", workers=0, shard_tokens=SHARD)
    assert results[0][1] == results[1][1] == reference["splits"]["train"]["tokens"]
    assert _files(tmp_path / "out") == _files(tmp_path / "reference")  # the same shards and manifest


def test_a_first_prepare_that_failed_does_not_lock_its_folder(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"content": "some text"}\n{"content": null}\n{"content": "more"}\n')
    with pytest.raises(DataError, match="no field text_field='text'"):
        pretokenize(DataConfig(source=f"jsonl:{tmp_path}/data.jsonl", tokenizer="bytes"), tmp_path / "out")
    # the corrected command runs (the failed attempt had written progress, no shard); a null text is skipped
    manifest = pretokenize(DataConfig(source=f"jsonl:{tmp_path}/data.jsonl", tokenizer="bytes", text_field="content",
                                      val_fraction=0.5), tmp_path / "out")
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"] == 2


def test_a_damaged_gzip_and_skipped_token_ids_are_one_line_errors(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from moa.data.tokenizer import load_hf_tokenizer

    blob = gzip.compress(("\n".join(json.dumps({"text": f"document {i} " * 50}) for i in range(200))).encode())
    (tmp_path / "bad.jsonl.gz").write_bytes(blob[:200] + bytes(b ^ 0x5A for b in blob[200:400]) + blob[400:])
    with pytest.raises(DataError, match="bad.jsonl.gz cannot be read") as info:
        pretokenize(DataConfig(source=f"jsonl:{tmp_path}/bad.jsonl.gz", tokenizer="bytes"), tmp_path / "o1")
    assert "\n" not in str(info.value)
    # a tokenizer whose ids skip numbers: the vocabulary is the largest id + 1, not the entry count
    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<|endoftext|>": 70000}, unk_token="a"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.save(str(tmp_path / "tok.json"))
    assert load_hf_tokenizer(str(tmp_path / "tok.json"), "hf:tok").vocab_size == 70001
    # an hf:PATH file changed after a prepare: the same spelling no longer passes for the same tokenizer
    small = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<|endoftext|>": 2}, unk_token="a"))
    small.pre_tokenizer = pre_tokenizers.Whitespace()
    small.save(str(tmp_path / "small.json"))
    (tmp_path / "ab.txt").write_text("a b a b b a\n" * 50)
    config = DataConfig(source=f"text:{tmp_path}/ab.txt", tokenizer=f"hf:{tmp_path}/small.json", val_fraction=0.5)
    pretokenize(config, tmp_path / "o3")
    assert pretokenize(config, tmp_path / "o3")["identity"]["tokenizer_file"]  # unchanged: reused
    small.add_tokens(["c"])
    small.save(str(tmp_path / "small.json"))
    with pytest.raises(DataError, match="was prepared with tokenizer_file="):
        pretokenize(config, tmp_path / "o3")
    (tmp_path / "t.txt").write_text("a b a")
    with pytest.raises(DataError, match="vocab 70001, too large for dtype=uint16"):
        pretokenize(DataConfig(source=f"text:{tmp_path}/t.txt", tokenizer=f"hf:{tmp_path}/tok.json"), tmp_path / "o2",
                    dtype="uint16")
