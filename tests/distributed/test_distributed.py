"""DDP and FSDP2 on 2 gloo ranks equal one process with the same global batch (README "Many processes").

Every run is compared on everything it reports: each logged training loss, each
evaluation event (val_loss, val_bpb), the summary's final_val_loss / final_val_bpb /
val_tokens, and the final weights. The validation set holds 67 windows: with batch 8 its
last batch has 3 rows, which 2 ranks split 1 + 2 (with micro-batch 1, evaluation batches
hold one row per rank and the last a single row: one rank has an empty share), so an
evaluation that drops the all-reduce or miscounts an uneven split shows up in the
reported numbers.

Runs use ``train.dtype=float64``: in fp32 the different summation order of a sharded
gradient (~1e-7 relative) is amplified by Adam's 1/√v on near-zero coordinates to ~1e-5
after a dozen steps, which would hide a real bug behind a loose tolerance. One-process
references are trained once per configuration and shared by the tests (``reference``).
"""

import json
import subprocess
import sys

import pytest
import torch

from moa.config import apply_overrides
from moa.presets import get_preset
from moa.testing.distributed import init_gloo, run_distributed
from moa.train import train
from moa.train.records import read_json, read_metrics

STEPS = 12
EVAL_STEPS = [6, 12]
VAL_WINDOWS = 67  # 8 batches of 8 + one of 3


def config(*overrides):
    base = ["train.batch_size=8", "train.seq_len=32", f"train.tokens={STEPS * 8 * 32}",
            f"train.eval_tokens={VAL_WINDOWS * 32}", f"train.eval_every={EVAL_STEPS[0]}",
            "train.log_every=1", "schedule.warmup=0.2", "train.dtype=float64"]
    return apply_overrides(get_preset("debug"), base + list(overrides))


def _train_rank(rank, cfg, out, resume, stop_after):
    torch.set_num_threads(1)
    return train(None if resume else cfg, out, resume=resume, progress=False, stop_after=stop_after)


def train_2_ranks(cfg, out, resume=False, stop_after=None):
    return run_distributed(_train_rank, 2, (cfg, str(out), resume, stop_after))


def final_weights(run_dir):
    if (run_dir / "model.pt").exists():
        return torch.load(run_dir / "model.pt", weights_only=False)
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]


def events(run_dir, kind, *keys):
    return [[e[k] for k in keys] for e in read_metrics(run_dir) if e["event"] == kind]


def close(a, b, tol):
    return abs(a - b) <= tol * abs(b)


def assert_same_run(a, b, tol=1e-9):
    """Run ``a`` reports and holds what run ``b`` does, to ``tol`` relative (float64 runs:
    measured here, the weights of every mode, Muon's included, agree to ~3e-16)."""
    ta, tb = events(a, "train", "step", "train_loss"), events(b, "train", "step", "train_loss")
    assert [s for s, _ in ta] == [s for s, _ in tb] == list(range(1, STEPS + 1))
    # the logged training loss is all-reduced and written in fp32: equal to its rounding
    assert all(close(x, y, max(tol, 3e-7)) for (_, x), (_, y) in zip(ta, tb)), (ta, tb)
    ea, eb = events(a, "eval", "step", "val_loss", "val_bpb"), events(b, "eval", "step", "val_loss", "val_bpb")
    assert [e[0] for e in ea] == [e[0] for e in eb] == EVAL_STEPS
    assert all(close(x, y, tol) for ra, rb in zip(ea, eb) for x, y in zip(ra[1:], rb[1:])), (ea, eb)
    sa, sb = read_json(a / "summary.json"), read_json(b / "summary.json")
    assert sa["val_tokens"] == sb["val_tokens"] == VAL_WINDOWS * 32
    for key in ("final_val_loss", "final_val_bpb"):
        assert close(sa[key], sb[key], tol), (key, sa[key], sb[key])
    assert [sa["final_val_loss"], sa["final_val_bpb"]] == ea[-1][1:]  # the summary reports the last evaluation
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        rel = (wa[k].double() - wb[k].double()).norm() / wb[k].double().norm().clamp_min(1e-300)
        assert rel <= tol, (k, rel.item())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``reference(*overrides)``: the one-process run (global batch 8) of that config, trained once."""
    runs = {}

    def get(*overrides):
        if overrides not in runs:
            torch.set_num_threads(1)
            out = tmp_path_factory.mktemp("one") / "run"
            train(config("train.parallel=none", *overrides), out, progress=False)
            runs[overrides] = out
        return runs[overrides]

    return get


MUON = ("optim.name=muon",)
MOE = ("model.moe.num_experts=4", "model.moe.top_k=2", "model.moe.expert_hidden=32", "model.moe.balance=bias")
MODES = [("ddp", ()), ("fsdp", ()), ("fsdp", MUON)]  # (parallel, optimizer overrides)
MODE_IDS = ["ddp-adamw", "fsdp-adamw", "fsdp-muon"]


@pytest.mark.parametrize("parallel,optim", MODES, ids=MODE_IDS)
def test_distributed_equals_single_process(parallel, optim, reference, tmp_path):
    out = tmp_path / "two"
    summaries = train_2_ranks(config(f"train.parallel={parallel}", *optim), out)
    assert all(s["world_size"] == 2 and s["parallel"] == parallel for s in summaries)
    assert_same_run(out, reference(*optim))


@pytest.mark.parametrize("parallel,optim", MODES, ids=MODE_IDS)
def test_moe_distributed_equals_single_process(parallel, optim, reference, tmp_path):
    train_2_ranks(config(f"train.parallel={parallel}", *optim, *MOE), tmp_path / "two")
    assert_same_run(tmp_path / "two", reference(*optim, *MOE))


def test_ddp_with_accumulation_and_muon_equals_single_process(reference, tmp_path):
    # micro-batches of 1 row: evaluation batches of 1 × 2 ranks, the last (67 = 33 × 2 + 1) one row,
    # so one rank has an empty share
    train_2_ranks(config("train.parallel=ddp", *MUON, "train.micro_batch_size=1"), tmp_path / "two")
    assert_same_run(tmp_path / "two", reference(*MUON))


def test_fsdp_with_accumulation_equals_single_process(reference, tmp_path):
    """FSDP2 reduce-scatters every micro-batch (gradients stay sharded); the sum is the same."""
    train_2_ranks(config("train.parallel=fsdp", "train.micro_batch_size=2"), tmp_path / "two")
    assert_same_run(tmp_path / "two", reference())


@pytest.mark.parametrize("parallel,optim", MODES, ids=MODE_IDS)
def test_kill_and_resume(parallel, optim, reference, tmp_path):
    out = tmp_path / "two"
    cfg = config(f"train.parallel={parallel}", *optim, "train.ckpt_every=4")
    train_2_ranks(cfg, out, stop_after=10)  # "killed" after step 10; last checkpoint at 8
    if parallel == "fsdp":  # its shards and RNG states are per rank: another world size is refused
        from moa.train.loop import RunDirError

        with pytest.raises(RunDirError, match="written by 2 ranks, this is 1; resume with torchrun --nproc_per_node 2"):
            train(None, out, resume=True, progress=False)
    train_2_ranks(cfg, out, resume=True)
    assert_same_run(out, reference(*optim))


def _rank_batches(rank, steps):
    import torch.distributed as dist

    from moa.data import TokenBatcher, prepare_data
    from moa.train.distributed import DistEnv, rank_rows

    init_gloo()
    env = DistEnv(rank, dist.get_world_size(), rank)
    cfg = config()
    data = prepare_data(cfg.data)
    batcher = TokenBatcher(data.train_tokens, 32, 8, cfg.seed)
    first, micro, accum = rank_rows(8, 2, env)
    rows = []
    for step in steps:
        rows.append(torch.cat([batcher.batch(step, first + i * micro, first + (i + 1) * micro)[0] for i in range(accum)]))
    gathered = [None, None]
    dist.all_gather_object(gathered, rows)
    return gathered if rank == 0 else None


def test_each_rank_reads_disjoint_data_whose_union_is_the_global_batch():
    from moa.data import TokenBatcher, prepare_data

    steps = [0, 1, 5]
    per_rank = run_distributed(_rank_batches, 2, (steps,))[0]
    data = prepare_data(config().data)
    batcher = TokenBatcher(data.train_tokens, 32, 8, 0)
    for i, step in enumerate(steps):
        r0, r1 = per_rank[0][i], per_rank[1][i]
        assert r0.shape == r1.shape == (4, 32)
        assert not any(torch.equal(a, b) for a in r0 for b in r1)
        assert torch.equal(torch.cat([r0, r1]), batcher.batch(step)[0])


def test_moa_train_nproc_launches_torchrun(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "moa", "train", "--preset", "debug", "--nproc", "2", "--no-progress",
                        "--out", str(out), "train.tokens=2048", "train.batch_size=4", "train.seq_len=32",
                        "train.eval_tokens=512"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["parallel"] == "ddp"


def _fail_alone(rank, cfg, out):
    """Rank 1 fails at its first evaluation (as if out of memory); rank 0 trains on."""
    import moa.train.loop as loop

    if rank == 1:
        def out_of_memory(*args, **kwargs):
            raise MemoryError("rank 1 alone ran out of memory")
        loop.evaluate = out_of_memory
    return train(cfg, out, progress=False)


def test_a_rank_failing_alone_stops_the_job_instead_of_hanging_it(tmp_path):
    """The failing rank leaves the group without a barrier (which would pair with the other
    rank's pending all-reduce and hang both until the 30-minute timeout): the peer's
    collective fails within seconds and the job ends with the first rank's error."""
    from pathlib import Path

    cfg = config("train.parallel=ddp", "train.eval_every=4")
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "import pickle\n"
              "from test_distributed import _fail_alone\n"
              "from moa.testing.distributed import run_distributed\n"
              f"cfg = pickle.loads({__import__('pickle').dumps(cfg)!r})\n"
              "try:\n"
              f"    run_distributed(_fail_alone, 2, (cfg, {str(tmp_path / 'run')!r}))\n"
              "except RuntimeError as exc:\n"
              "    print('FAILED:', exc)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert "FAILED: rank " in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])
    assert "ran out of memory" in r.stdout or "Connection" in r.stdout
