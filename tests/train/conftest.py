"""Tiny real runs for trainer tests: the debug preset on the stdlib corpus, few steps."""

import pytest

from moa.config import apply_overrides
from moa.presets import get_preset


def tiny(*overrides: str, steps: int = 30):
    """Debug preset cut to ``steps`` optimizer steps of 8 x 32 tokens, eval at the end."""
    base = ["train.batch_size=8", "train.seq_len=32", f"train.tokens={steps * 8 * 32}", "train.eval_tokens=2048",
            "train.log_every=1", "schedule.warmup=0.1"]
    return apply_overrides(get_preset("debug"), base + list(overrides))


@pytest.fixture(name="tiny")
def tiny_fixture():
    return tiny
