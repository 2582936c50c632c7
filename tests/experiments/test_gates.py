"""``moa gates``: gate statistics of real tiny MoA runs (dense and MoE), checked against
direct hooks, and one-line errors for runs without gates."""

import argparse
import json
import math

import pytest
import torch

from moa.cli import gates as gates_cli
from moa.cli import run_guarded
from moa.train.runs import load_run
from moa.config import apply_overrides
from moa.data import prepare_data, val_batches
from moa.experiments.gates import ENTROPY_PNG, GATES_JSON, GATES_MD, HEATMAP_PNG, gate_statistics, run_gates
from moa.presets import get_preset
from moa.train import train

TINY = ["train.tokens=20480", "train.batch_size=8", "train.seq_len=32", "train.eval_tokens=2048"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """d=32 matmuls gain nothing from threads, and on a busy machine a second intra-op
    thread makes them several times slower (measured: 16 s vs 2 s for 20 steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(tmp_path_factory, name, *overrides):
    cfg = apply_overrides(get_preset("debug"), TINY + list(overrides))
    out = tmp_path_factory.mktemp(name) / "run"
    train(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    return _train(tmp_path_factory, "dense")


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory):
    return _train(tmp_path_factory, "moe", "model.moe.num_experts=4", "model.moe.top_k=2",
                  "model.moe.shared_experts=1", "model.moe.expert_hidden=48")


def _check_unit(u, names, rows=None):
    k = len(names)
    assert abs(sum(u["mean"].values()) - 1) < 1e-5  # softmax gates
    assert abs(sum(u["mean_normalised"].values()) - 1) < 1e-5
    assert abs(sum(u["argmax"].values()) - 1) < 1e-9
    assert all(0 <= v <= 1 for v in u["mean"].values()) and all(v >= 0 for v in u["std"].values())
    assert 0 <= u["entropy"] <= math.log(k) + 1e-9
    assert abs(u["entropy_norm"] - u["entropy"] / math.log(k)) < 1e-12
    if rows is not None:
        assert u["rows"] == rows
    assert set(u["top_tokens"]) == set(names)
    for act, entries in u["top_tokens"].items():
        assert entries, act
        weights = [e["mean_weight"] for e in entries]
        assert weights == sorted(weights, reverse=True)
        assert all(e["count"] >= 5 and e["max_weight"] >= e["mean_weight"] - 1e-12 for e in entries)


def test_dense_run_statistics_files_and_reference(dense_run, tmp_path):
    out = tmp_path / "gates"
    result = run_gates(dense_run, out, max_tokens=4096)
    for name in (GATES_JSON, GATES_MD, HEATMAP_PNG, ENTROPY_PNG):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / GATES_JSON).read_text()) == result
    assert result["tokens"] == 2048  # capped at the run's validation set (train.eval_tokens)
    names = result["activations"]
    assert names == ["relu", "gelu", "silu", "relu2"] and result["moe"] is None
    assert [l["layer"] for l in result["layers"]] == [0, 1]
    for layer in result["layers"]:
        assert "pooled" not in layer and len(layer["units"]) == 1
        _check_unit(layer["units"][0], names, rows=2048)
    md = (out / GATES_MD).read_text()
    assert "| layer | FFN | rows | relu | gelu | silu | relu2 | H (nats) | H / log K |" in md
    assert "## Tokens that most prefer each activation" in md

    # reference: gates recomputed from the blocks' FFN-norm outputs, captured independently
    model, tok, cfg = load_run(dense_run)
    batches = val_batches(prepare_data(cfg.data).val_tokens, 32, 8, 2048)
    captured = {i: [] for i in range(2)}
    handles = [b.ffn_norm.register_forward_hook(lambda m, a, o, i=i: captured[i].append(o.detach()))
               for i, b in enumerate(model.blocks)]
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    for h in handles:
        h.remove()
    for i, block in enumerate(model.blocks):
        with torch.no_grad():
            g = block.ffn.mixing_weights(torch.cat(captured[i]).reshape(-1, cfg.model.d_model)).double()
        unit = result["layers"][i]["units"][0]
        h = -(g * g.log()).sum(-1).mean()
        assert torch.allclose(g.mean((0, 1)), torch.tensor([unit["mean"][a] for a in names], dtype=torch.float64),
                              atol=1e-6)
        assert torch.allclose(g.std((0, 1), unbiased=False),
                              torch.tensor([unit["std"][a] for a in names], dtype=torch.float64), atol=1e-5)
        assert abs(h.item() - unit["entropy"]) < 1e-6
        top = unit["top_tokens"]["relu"][0]  # the listed mean weight of the top token type
        ids = torch.cat([x for x, _ in batches]).reshape(-1)
        assert abs(g[ids == top["id"], :, 0].mean().item() - top["mean_weight"]) < 1e-6
        assert (ids == top["id"]).sum().item() == top["count"]


def test_moe_run_matches_hooks_on_the_experts(moe_run, tmp_path):
    result = run_gates(moe_run, tmp_path / "g", max_tokens=1024)
    assert result["moe"] == {"num_experts": 4, "top_k": 2, "shared_experts": 1, "router": "softmax"}
    n, names = result["tokens"], result["activations"]
    assert n == 1024
    for layer in result["layers"]:
        routed = [u for u in layer["units"] if u["role"] == "routed"]
        shared = [u for u in layer["units"] if u["role"] == "shared"]
        assert len(routed) == 4 and len(shared) == 1
        assert sum(u["rows"] for u in routed) == 2 * n and shared[0]["rows"] == n
        assert layer["pooled"]["rows"] == 3 * n
        for u in routed + shared:
            if u["rows"]:
                assert abs(sum(u["mean"].values()) - 1) < 1e-5 and 0 <= u["entropy"] <= math.log(4) + 1e-9
        _check_unit(layer["pooled"], names)
    assert (tmp_path / "g" / HEATMAP_PNG).exists() and "all experts" in (tmp_path / "g" / GATES_MD).read_text()

    # the recomputed routing sees exactly the rows the (loop-dispatched) experts see
    model, tok, cfg = load_run(moe_run)
    batches = val_batches(prepare_data(cfg.data).val_tokens, 32, 8, 1024)
    seen = {}

    def hook(key):
        def fn(module, args, output):
            g = module.mixing_weights(args[0]).double()
            rows, total = seen.get(key, (0, 0.0))
            seen[key] = (rows + args[0].shape[0], total + g.sum((0, 1)))
        return fn

    handles = [e.register_forward_hook(hook((i, e_idx))) for i, b in enumerate(model.blocks)
               for e_idx, e in enumerate(b.ffn.experts)]
    stats = gate_statistics(model, batches, tok)
    for h in handles:
        h.remove()
    for i, layer in enumerate(stats["layers"]):
        for e_idx, u in enumerate(u for u in layer["units"] if u["role"] == "routed"):
            rows, total = seen.get((i, e_idx), (0, 0.0))
            assert u["rows"] == rows
            if rows:
                assert torch.allclose(total / rows, torch.tensor([u["mean"][a] for a in names], dtype=torch.float64),
                                      atol=1e-6)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="moa")
    gates_cli.add_parser(parser.add_subparsers(dest="command"))
    return run_guarded(gates_cli.run, parser.parse_args(["gates", *argv]))


def _one_line_error(capsys, argv, *needles):
    rc = _cli(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("moa: error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err


def test_cli_prints_the_table(dense_run, tmp_path, capsys):
    assert _cli([str(dense_run), "--out", str(tmp_path / "o"), "--max-tokens", "1024", "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "| layer | FFN | rows |" in text and "H / log K" in text and str(tmp_path / "o" / GATES_JSON) in text
    result = json.loads((tmp_path / "o" / GATES_JSON).read_text())
    assert result["tokens"] == 1024 and all(len(v) == 3 for v in result["layers"][0]["units"][0]["top_tokens"].values())


def test_errors_are_one_line(dense_run, tmp_path_factory, tmp_path, capsys):
    swiglu = _train(tmp_path_factory, "swiglu", "model.ffn=swiglu", "train.tokens=2560")
    with pytest.raises(ValueError, match="swiglu"):
        run_gates(swiglu, tmp_path / "x")
    _one_line_error(capsys, [str(swiglu)], "swiglu", "moa-mlp", "moa-glu")
    missing = tmp_path / "nothing"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        run_gates(missing)
    _one_line_error(capsys, [str(missing)], str(missing), "not a moa run directory")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, [str(tmp_path / "empty")], str(tmp_path / "empty"), "config.json")
    _one_line_error(capsys, [str(dense_run), "--max-tokens", "0"], "--max-tokens=0")
    _one_line_error(capsys, [str(dense_run), "--max-tokens", "16"], "max_tokens=16", "seq_len=32")
    _one_line_error(capsys, [str(dense_run), "--top", "0"], "--top=0")
    assert not (swiglu / "gates").exists() and not (dense_run / "gates").exists()


@pytest.mark.parametrize("gate_norm", ["sigmoid", "none"])
def test_sigmoid_and_raw_gates_are_normalised_for_entropy(gate_norm):
    from moa.data import ByteTokenizer
    from moa.model import ModelConfig, Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=2, ffn="moa-mlp", gate_groups=2,
                                    gate_norm=gate_norm))
    for block in model.blocks:
        torch.nn.init.normal_(block.ffn.gate.weight, std=1.0)
    x = torch.randint(0, 8, (6, 16))
    batches = [(x[:4], x[:4]), (x[4:], x[4:])]
    stats = gate_statistics(model, batches, ByteTokenizer(), min_count=3, top=2)
    assert stats["gate_norm"] == gate_norm and gate_norm in stats["normalisation"] and stats["tokens"] == 96
    captured = []
    handles = [b.ffn_norm.register_forward_hook(lambda m, a, o: captured.append(o)) for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    for block, out, layer in zip(model.blocks, captured, stats["layers"]):
        u = layer["units"][0]
        with torch.no_grad():
            g = block.ffn.mixing_weights(out.reshape(-1, 32)).double()  # (N, G=2, K)
        w = g if gate_norm == "sigmoid" else g.abs()
        p = w / w.sum(-1, keepdim=True)
        names = stats["activations"]

        def listed(key):
            return torch.tensor([u[key][a] for a in names], dtype=torch.float64)

        assert torch.allclose(g.mean((0, 1)), listed("mean"), atol=1e-6)
        assert torch.allclose(p.mean((0, 1)), listed("mean_normalised"), atol=1e-6)
        assert abs(-(p * p.log()).sum(-1).mean().item() - u["entropy"]) < 1e-6
        assert 0 <= u["entropy_norm"] <= 1 and abs(sum(u["argmax"].values()) - 1) < 1e-9
        assert u["rows"] == 96 and all(len(v) == 2 for v in u["top_tokens"].values())
