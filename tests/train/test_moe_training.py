"""MoE language models train with any expert FFN, log balance and load, and checkpoint."""

import dataclasses

import numpy as np
import pytest

from moa.cli import main
from moa.model import Transformer
from moa.nn import MoE
from moa.presets import get_preset
from moa.train import train
from moa.train.optim import build_optimizers
from moa.train.records import read_metrics


@pytest.mark.parametrize("ffn", ["swiglu", "la-glu", "moa-glu"])
def test_moe_debug_trains_for_each_expert_kind(ffn, tmp_path, tiny):
    cfg = tiny(f"model.ffn={ffn}", "model.moe.num_experts=4", "model.moe.top_k=2", "model.moe.expert_hidden=48",
               steps=40)
    summary = train(cfg, tmp_path / "run", progress=False)
    events = [e for e in read_metrics(tmp_path / "run") if e["event"] == "train"]
    losses = [e["train_loss"] for e in events]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0
    last = events[-1]
    assert last["moe_aux_loss"] > 0 and last["moe_z_loss"] > 0
    assert len(last["moe_load"]) == 2 and all(len(layer) == 4 for layer in last["moe_load"])
    assert all(abs(sum(layer) - 1) < 1e-3 for layer in last["moe_load"])  # fractions of routed rows
    assert summary["params_active"] < summary["params_total"] and summary["moe_experts"] == 4


def test_moe_preset_and_bias_balancing(tmp_path, tiny):
    base = get_preset("debug-moe")
    assert base.model.moe.num_experts == 4 and isinstance(Transformer(base.model.replace(vocab_size=256)).blocks[0].ffn, MoE)
    cfg = tiny("model.moe.num_experts=4", "model.moe.balance=bias", "model.moe.bias_rate=0.01",
               "model.moe.shared_experts=1", steps=20)
    train(cfg, tmp_path / "run", progress=False)
    import torch

    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    biases = [v for k, v in state.items() if k.endswith("expert_bias")]
    assert len(biases) == 2 and any(b.abs().sum() > 0 for b in biases)  # updated by the trainer


def test_router_on_adamw_without_decay():
    cfg = get_preset("debug-moe")
    model = Transformer(cfg.model.replace(vocab_size=256))
    for name in ("adamw", "muon"):
        opts = build_optimizers(model, dataclasses.replace(cfg.optim, name=name))
        groups = {g["name"]: (type(o).__name__, g["weight_decay"], len(g["params"])) for o in opts for g in o.param_groups}
        assert groups["router"] == ("AdamW", 0.0, 2)


def test_moe_override_errors(capsys):
    for pair, needle in [("model.moe.top_k=5", "top_k=5"), ("model.moe.top_k=0", "top_k=0"),
                         ("model.moe.balance=loss", "balance='loss'"), ("model.moe.router=relu", "router='relu'")]:
        rc = main(["train", "--preset", "debug", "model.moe.num_experts=4", pair])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and needle in err and "\n" not in err, err
