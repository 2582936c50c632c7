"""Shared test fixtures: one on-disk data cache per test session (no downloads, ever)."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def moa_cache(tmp_path_factory):
    """Point MOA_CACHE_DIR at a session temp dir, so the stdlib corpus is tokenized once."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("moa-cache")
    mp.setenv("MOA_CACHE_DIR", str(path))
    yield path
    mp.undo()
