"""Training runs for real: learning, resume, atomic checkpoints, records."""

import json
import math

import numpy as np
import pytest
import torch

from moa.data import prepare_data
from moa.nn import FFN_PRESETS
from moa.presets import get_preset
from moa.train import TrainingDiverged, train
from moa.train import checkpoint as ckpt
from moa.train.records import read_metrics



@pytest.mark.parametrize("ffn", list(FFN_PRESETS))
def test_loss_decreases_for_every_ffn(ffn, tmp_path, tiny):
    summary = train(tiny(f"model.ffn={ffn}", steps=40), tmp_path / "run", progress=False)
    losses = [e["train_loss"] for e in read_metrics(tmp_path / "run") if e["event"] == "train"]
    assert len(losses) == 40
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first - 1.0, (first, last)  # from ~ln(256)=5.5 to well below
    assert summary["final_val_loss"] < 4.0 and summary["ffn"] == ffn


def test_debug_preset_learns_below_unigram_entropy(tmp_path):
    """The full debug preset (under a minute on 2 cores) beats the corpus' unigram entropy."""
    cfg = get_preset("debug")
    summary = train(cfg, tmp_path / "run", progress=False)
    data = prepare_data(cfg.data)
    counts = np.bincount(np.asarray(data.train_tokens), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * np.log(p)).sum())  # nats/token
    assert summary["final_val_loss"] < 0.75 * unigram, (summary["final_val_loss"], unigram)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.json", "environment.json", "checkpoint.pt", "tb"} <= files
    for key in ("final_val_loss", "final_val_bpb", "params_total", "params_non_embedding", "tokens", "wall_s",
                "tokens_per_s", "git_commit", "corpus_fingerprint"):
        assert key in summary
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["final_val_loss"] == summary["final_val_loss"]
    events = read_metrics(tmp_path / "run")
    assert {"step", "tokens", "train_loss", "lr", "tokens_per_s"} <= set(events[0])
    assert any({"val_loss", "val_bpb"} <= set(e) for e in events)


@pytest.mark.parametrize("opt", ["adamw", "muon"])
def test_resume_equals_uninterrupted(opt, tmp_path, tiny):
    cfg = tiny(f"optim.name={opt}", "train.ckpt_every=5", "train.micro_batch_size=4", steps=16)
    full = train(cfg, tmp_path / "full", progress=False)
    train(cfg, tmp_path / "cut", progress=False, stop_after=12)  # "killed" at step 12; last checkpoint: 10
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["step"] == 10
    resumed = train(None, tmp_path / "cut", resume=True, progress=False)
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert [e["step"] for e in a] == [e["step"] for e in b]  # events past the checkpoint were dropped
    for ea, eb in zip(a, b):
        for key in ("train_loss", "val_loss", "val_bpb"):
            if key in ea:
                assert ea[key] == pytest.approx(eb[key], rel=1e-6, abs=1e-7)
    sa = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["model"]
    sb = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-6, atol=1e-7)
    assert resumed["final_val_loss"] == pytest.approx(full["final_val_loss"], rel=1e-6)
    assert resumed["resumed_from_step"] == 10
    assert resumed["tokens_per_s"] > 0


def test_a_finished_run_resumed_keeps_its_throughput(tmp_path, tiny):
    """Killed after its final checkpoint, before summary.json: the resume trains nothing and
    reports the run's throughput, not 0 tokens/s (which would drag a sweep's mean down)."""
    cfg = tiny(steps=8)
    first = train(cfg, tmp_path / "run", progress=False)
    (tmp_path / "run" / "summary.json").unlink()
    again = train(None, tmp_path / "run", resume=True, progress=False)
    assert again["resumed_from_step"] == 8 and again["final_val_loss"] == first["final_val_loss"]
    assert again["tokens_per_s"] == first["tokens_per_s"] == first["tokens"] / first["train_s"] > 0


def test_atomic_checkpoint_survives_crash_mid_write(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, {"step": 1, "w": torch.arange(10)})

    def crashing_save(obj, f):
        f.write(b"partial bytes of a checkpoint")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt.torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, {"step": 2, "w": torch.zeros(10)})
    monkeypatch.undo()
    state = ckpt.load_checkpoint(tmp_path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(10))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny):
    cfg = tiny("optim.lr=1e30", "optim.grad_clip=0", "schedule.warmup=0", "train.ckpt_every=1", steps=20)
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, tmp_path / "run", progress=False)
    msg = str(e.value)
    assert "not finite" in msg and "\n" not in msg and "Last good checkpoint" in msg
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    bad_step = int(msg.split(" step ")[1].split(";")[0])
    assert state["step"] == bad_step - 1 and f"(step {state['step']})" in msg


def test_gradient_accumulation_matches_full_batch(tmp_path, tiny):
    a = train(tiny("train.micro_batch_size=2", steps=6), tmp_path / "a", progress=False)
    b = train(tiny(steps=6), tmp_path / "b", progress=False)
    assert a["final_val_loss"] == pytest.approx(b["final_val_loss"], rel=1e-4)


def test_bits_per_byte_on_a_known_string(tmp_path):
    """A model with uniform logits has loss ln V per token; bpb = tokens·ln V / (ln 2 · bytes)."""
    from moa.data import ByteTokenizer, count_utf8_bytes
    from moa.model import ModelConfig, Transformer
    from moa.train import evaluate

    text = "héllo wörld € 🙂 " * 8  # multi-byte characters: bytes != characters
    tok = ByteTokenizer()
    ids = torch.tensor(tok.encode(text))
    x, y = ids[:-1].view(1, -1), ids[1:].view(1, -1)
    model = Transformer(ModelConfig(vocab_size=256, d_model=32, n_layers=1, n_heads=2, ffn="swiglu"))
    torch.nn.init.zeros_(model.head.weight)  # tied: zero embedding too → logits all zero
    n_bytes = count_utf8_bytes(tok, y)
    assert n_bytes == len(text.encode()) - 1
    ev = evaluate(model, [(x, y)], torch.device("cpu"), None, n_bytes)
    assert ev.loss == pytest.approx(math.log(256), rel=1e-6)
    assert ev.bpb == pytest.approx(8.0, rel=1e-6)  # bytes tokenizer: log2(256) bits per byte


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path, tiny):
    """Nothing to resume from: --resume says so in one line, and the same command without it
    starts the run again (its partial records cleared); another config is still refused."""
    from moa.train.loop import RunDirError

    cfg = tiny("train.ckpt_every=0", steps=8)
    run = tmp_path / "run"
    assert train(cfg, run, progress=False, stop_after=5) == {}
    assert (run / "config.json").exists() and not ckpt.has_checkpoint(run)
    with pytest.raises(RunDirError, match="stopped before its first checkpoint") as exc:
        train(None, run, resume=True, progress=False)
    assert "\n" not in str(exc.value) and "without --resume starts it again" in str(exc.value)
    with pytest.raises(RunDirError, match="already holds a run"):
        train(cfg.replace(seed=cfg.seed + 1), run, progress=False)
    with pytest.raises(RunDirError, match="stopped before its first checkpoint"):  # the same config given again
        train(cfg, run, resume=True, progress=False)  # (vocab_size unset in it, filled in the saved one)
    again = train(cfg, run, progress=False)
    fresh = train(cfg, tmp_path / "fresh", progress=False)
    assert again["final_val_loss"] == fresh["final_val_loss"]
    assert [e["step"] for e in read_metrics(run)] == [e["step"] for e in read_metrics(tmp_path / "fresh")]


def test_tensorboard_keeps_the_checkpoint_steps_events_like_metrics_jsonl(tmp_path, tiny):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny("train.ckpt_every=4", "train.eval_every=4", steps=8)
    train(cfg, tmp_path / "run", progress=False, stop_after=6)  # last checkpoint: step 4
    train(None, tmp_path / "run", resume=True, progress=False)
    tb = EventAccumulator(str(tmp_path / "run" / "tb"))
    tb.Reload()
    for tag, kind in (("train/train_loss", "train"), ("eval/val_loss", "eval")):
        logged = [(e["step"], e[tag.split("/")[1]]) for e in read_metrics(tmp_path / "run") if e["event"] == kind]
        assert [(e.step, pytest.approx(e.value)) for e in tb.Scalars(tag)] == logged, tag
    assert 4 in [e.step for e in tb.Scalars("eval/val_loss")]
