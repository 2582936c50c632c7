"""Shared fixtures for the data-layer tests: small real corpora copied from the stdlib."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from moa.data.sources import stdlib_root

# A few mid-sized standard-library modules: real text, about 200 kB in all.
CORPUS_MODULES = ("argparse.py", "textwrap.py", "string.py", "glob.py", "fnmatch.py",
                  "shlex.py", "heapq.py", "bisect.py", "copy.py", "json/decoder.py")


@pytest.fixture
def text_corpus(tmp_path: Path) -> Path:
    """A folder of real text files in two levels (``corpus/`` and ``corpus/sub/``)."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    for i, name in enumerate(CORPUS_MODULES):
        target = root / ("sub" if i % 2 else "") / name.replace("/", "_")
        shutil.copyfile(stdlib_root() / name, target)
    return root


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    return str(tmp_path / "cache")
