"""Shared test fixtures: one on-disk data cache per test session (no downloads, ever).

Without CUDA, Triton kernels run through Triton's interpreter. ``triton.jit`` reads
``TRITON_INTERPRET`` when a kernel is defined, so it is set here, before any test module
can import ``moa.nn.triton_kernels``: a per-module setting depended on test order.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session", autouse=True)
def moa_cache(tmp_path_factory):
    """Point MOA_CACHE_DIR at a session temp dir, so the stdlib corpus is tokenized once."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("moa-cache")
    mp.setenv("MOA_CACHE_DIR", str(path))
    yield path
    mp.undo()
