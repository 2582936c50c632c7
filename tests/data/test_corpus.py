"""Corpora: the stdlib default, text/jsonl sources, by-file splits and fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moa.data import DataConfig, DataError
from moa.data.sources import assign_splits, load_corpus, stdlib_root, unit_hash


def stdlib_text(name: str) -> str:
    return (stdlib_root() / name).read_text(encoding="utf-8")


def test_stdlib_split_is_deterministic_disjoint_and_by_file():
    config = DataConfig()
    first, second = load_corpus(config), load_corpus(config)
    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 16 and set(first.fingerprint) <= set("0123456789abcdef")
    assert first.train.files == second.train.files and first.val.files == second.val.files
    train, val = set(first.train.files), set(first.val.files)
    assert train.isdisjoint(val)
    assert first.train.files == sorted(first.train.files)
    n = len(train) + len(val)
    assert n > 500
    assert 0.02 < len(val) / n < 0.10  # about val_fraction=0.05 of the files
    # Installed packages are not the standard library.
    assert not any("site-packages" in f or "dist-packages" in f for f in train | val)
    assert all(f.endswith(".py") for f in train | val)
    # Files that are not UTF-8 are skipped and listed, not read.
    for rel in first.skipped:
        with pytest.raises(UnicodeDecodeError):
            (stdlib_root() / rel).read_bytes().decode("utf-8")


def test_stdlib_fingerprint_changes_with_split_settings():
    base = load_corpus(DataConfig())
    other = load_corpus(DataConfig(val_fraction=0.1))
    assert other.fingerprint != base.fingerprint
    assert len(other.val.files) > len(base.val.files)
    # A larger fraction only adds files to val: a file's coin does not depend on the others.
    assert set(base.val.files) <= set(other.val.files)


def test_split_is_stable_when_files_are_added():
    names = [f"pkg/module_{i}.py" for i in range(200)]
    before = assign_splits(names, 0.2)
    after = assign_splits(names + ["pkg/new.py"], 0.2)
    assert after[:-1] == before
    assert 20 < sum(before) < 60


def test_text_folder_recursive_skips_hidden_and_binary(text_corpus, cache_dir):
    (text_corpus / ".git").mkdir()
    (text_corpus / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (text_corpus / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff")
    corpus = load_corpus(DataConfig(source=f"text:{text_corpus}", val_fraction=0.2))
    files = corpus.train.files + corpus.val.files
    assert len(files) == 10 and corpus.val.files and corpus.train.files
    assert any(f.startswith("sub/") for f in files)
    assert not any(f.startswith(".git") for f in files)
    assert corpus.skipped == ["image.bin"]
    assert "".join(corpus.train.documents + corpus.val.documents).count("def ") > 50


def test_fingerprint_depends_on_content_not_location(text_corpus, tmp_path):
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for path in text_corpus.rglob("*.py"):
        target = copy / path.relative_to(text_corpus)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    a = load_corpus(DataConfig(source=f"text:{text_corpus}"))
    b = load_corpus(DataConfig(source=f"text:{copy}"))
    assert a.fingerprint == b.fingerprint
    (copy / "heapq.py").write_text("changed\n")
    assert load_corpus(DataConfig(source=f"text:{copy}")).fingerprint != a.fingerprint


def test_text_glob_and_single_file_tail_split(text_corpus):
    globbed = load_corpus(DataConfig(source=f"text:{text_corpus}/**/*.py"))
    assert sorted(globbed.train.files + globbed.val.files)[0] == "argparse.py"
    single = load_corpus(DataConfig(source=f"text:{text_corpus}/argparse.py", val_fraction=0.1))
    text = stdlib_text("argparse.py")
    (train,), (val,) = single.train.documents, single.val.documents
    assert train + val == text  # contiguous: nothing lost, nothing repeated
    assert train.endswith("\n")  # cut at a line start
    assert 0.08 < len(val) / len(text) < 0.12


def test_max_chars_caps_the_corpus(text_corpus):
    corpus = load_corpus(DataConfig(source=f"text:{text_corpus}", max_chars=30_000))
    assert corpus.train.chars + corpus.val.chars == 30_000
    assert corpus.fingerprint != load_corpus(DataConfig(source=f"text:{text_corpus}")).fingerprint


def _write_jsonl(path: Path, texts: list[str], field: str = "text") -> None:
    path.write_text("".join(json.dumps({"id": i, field: t}) + "\n" for i, t in enumerate(texts)))


def test_jsonl_reads_text_field_and_splits_by_file(tmp_path):
    folder = tmp_path / "jsonl"
    folder.mkdir()
    paragraphs = stdlib_text("textwrap.py").split("\n\n")
    for k in range(6):
        _write_jsonl(folder / f"part{k}.jsonl", paragraphs[k::6], field="body")
    (folder / "notes.txt").write_text("not part of a jsonl source\n")
    corpus = load_corpus(DataConfig(source=f"jsonl:{folder}", text_field="body", val_fraction=0.3))
    assert corpus.train.files and corpus.val.files
    assert sorted(corpus.train.files + corpus.val.files) == [f"part{k}.jsonl" for k in range(6)]
    docs = corpus.train.documents + corpus.val.documents
    assert sorted(docs) == sorted(p for p in paragraphs if p)


def test_jsonl_single_file_splits_by_document(tmp_path):
    records = [f"record {i}: " + line for i, line in enumerate(stdlib_text("glob.py").splitlines()) if line]
    path = tmp_path / "one.jsonl"
    _write_jsonl(path, records)
    corpus = load_corpus(DataConfig(source=f"jsonl:{path}", val_fraction=0.1))
    held_out = [r for i, r in enumerate(records) if unit_hash(str(i)) < 0.1]
    assert corpus.val.documents == held_out and 0.05 < len(held_out) / len(records) < 0.15
    assert corpus.train.documents == [r for r in records if r not in held_out]


def test_by_document_split_keeps_both_splits(tmp_path):
    # Three documents whose coins all say "train": the last one moves to val.
    path = tmp_path / "few.jsonl"
    _write_jsonl(path, ["first", "second", "third"])
    assert not any(unit_hash(str(i)) < 0.01 for i in range(3))
    corpus = load_corpus(DataConfig(source=f"jsonl:{path}", val_fraction=0.01))
    assert corpus.train.documents == ["first", "second"] and corpus.val.documents == ["third"]


def test_jsonl_missing_field_and_bad_json_are_one_line_errors(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine"}\n{"content": "no text here"}\n')
    with pytest.raises(DataError) as info:
        load_corpus(DataConfig(source=f"jsonl:{path}"))
    assert "data.jsonl:2" in str(info.value) and "'text'" in str(info.value) and "content" in str(info.value)
    assert "\n" not in str(info.value)
    path.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(DataError, match="data.jsonl:2 is not valid JSON"):
        load_corpus(DataConfig(source=f"jsonl:{path}"))


@pytest.mark.parametrize("source", ["text:{tmp}/missing", "jsonl:{tmp}/missing.jsonl", "text:{tmp}/*.nothing"])
def test_missing_paths_name_the_path(tmp_path, source):
    source = source.format(tmp=tmp_path)
    with pytest.raises(DataError) as info:
        load_corpus(DataConfig(source=source))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_empty_sources_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no files"):
        load_corpus(DataConfig(source=f"text:{tmp_path / 'empty'}"))
    (tmp_path / "empty" / "blank.txt").write_text("")
    with pytest.raises(DataError, match="no non-empty text"):
        load_corpus(DataConfig(source=f"text:{tmp_path / 'empty'}"))
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="too little to split"):
        load_corpus(DataConfig(source=f"text:{tmp_path / 'empty'}"))
