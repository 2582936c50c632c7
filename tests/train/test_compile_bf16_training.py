"""The trainer's compiled (``train.compile=true``) and bf16-autocast (``train.dtype=bfloat16``)
paths on CPU, against the same run in eager fp32.

Compiled training goes through the trainer's own ``torch.compile`` call with the
``aot_eager`` backend (dynamo traces the whole model, AOTAutograd the fused MoA op's
backward; inductor's code generation would take minutes for the model on a CPU and is
covered per FFN in ``tests/nn``); a compile counter proves the steps ran compiled.
"""

import functools

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from moa.config import apply_overrides
from moa.presets import get_preset
from moa.train import train
from moa.train.records import read_metrics

STEPS = 3


def _config(*overrides):
    base = ["train.batch_size=8", "train.seq_len=32", f"train.tokens={STEPS * 8 * 32}", "train.eval_tokens=512",
            "train.log_every=1", "schedule.warmup=0.1"]
    return apply_overrides(get_preset("debug"), base + list(overrides))


def _losses(out):
    return [e["train_loss"] for e in read_metrics(out) if e["event"] == "train"]


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    out = tmp_path_factory.mktemp("eager") / "run"
    summary = train(_config(), out, progress=False)
    return summary, _losses(out), torch.load(out / "checkpoint.pt", weights_only=False)["model"]


def test_compiled_training_equals_eager(eager, tmp_path, monkeypatch):
    counter = CompileCounterWithBackend("aot_eager")
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counter))
    summary = train(_config("train.compile=true"), tmp_path / "run", progress=False)
    assert counter.frame_count >= 2  # the training graph and the no-grad evaluation graph
    eager_summary, eager_losses, eager_state = eager
    assert _losses(tmp_path / "run") == pytest.approx(eager_losses, rel=1e-5)
    assert summary["final_val_loss"] == pytest.approx(eager_summary["final_val_loss"], rel=1e-5)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    for key, value in eager_state.items():
        torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_bf16_autocast_training_on_cpu(eager, tmp_path):
    summary = train(_config("train.dtype=bfloat16"), tmp_path / "run", progress=False)
    eager_summary, eager_losses, eager_state = eager
    losses = _losses(tmp_path / "run")
    assert losses != eager_losses  # autocast really ran
    assert losses == pytest.approx(eager_losses, rel=1e-2)
    assert summary["final_val_loss"] != eager_summary["final_val_loss"]
    assert summary["final_val_loss"] == pytest.approx(eager_summary["final_val_loss"], rel=1e-2)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    assert set(state) == set(eager_state) and all(v.dtype == torch.float32 for v in state.values())  # fp32 weights
