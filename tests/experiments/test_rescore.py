"""Re-scoring a finished compare on more validation data: at the runs' own eval_tokens it
reproduces their recorded losses; on the whole split it scores more tokens, pairs seeds."""

import json

import pytest

from moa.cli import main as moa_main
from moa.experiments.rescore import main, rescore

TINY = ["train.batch_size=4", "train.seq_len=32", "train.tokens=2048", "train.eval_tokens=512", "train.log_every=4"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("rescore") / "cmp"
    argv = ["compare", "--preset", "debug", "--out", str(out), "--variants", "swiglu,moa-glu", "--seeds", "2",
            "--search-seeds", "1", "--lr-factors", "1", *TINY]
    assert moa_main(argv) == 0
    return out


def test_rescore_at_the_runs_eval_tokens_reproduces_their_losses(compared):
    res = rescore(compared, eval_tokens=512)
    recorded = json.loads((compared / "results.json").read_text())
    assert res["eval_tokens"] == 512
    for name, v in res["variants"].items():
        assert v["val_loss_per_seed"] == pytest.approx(recorded["variants"][name]["val_loss_per_seed"], rel=1e-9)
        assert v["val_bpb_per_seed"] == pytest.approx(recorded["variants"][name]["val_bpb_per_seed"], rel=1e-9)


def test_rescore_on_the_whole_split_pairs_seeds_and_writes_its_table(compared, capsys):
    assert main([str(compared)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((compared / "rescore.json").read_text())
    assert res["eval_tokens"] > 512 and res["eval_tokens"] % 32 == 0 and res["eval_tokens_asked"] is None
    base, moa = res["variants"]["swiglu"], res["variants"]["moa-glu"]
    assert base["delta_vs_first"] is None
    diffs = [a - b for a, b in zip(moa["val_loss_per_seed"], base["val_loss_per_seed"])]
    assert moa["delta_vs_first"]["per_seed"] == pytest.approx(diffs)
    assert moa["delta_vs_first"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert moa["val_loss_per_seed"] != pytest.approx(moa["recorded_val_loss_per_seed"], rel=1e-6)  # other data
    md = (compared / "rescore.md").read_text()
    assert md.strip() == printed.strip() and "| moa-glu |" in md and f"first {res['eval_tokens']:,} validation" in md


def test_rescore_rejects_a_bad_token_count(compared):
    with pytest.raises(ValueError, match="eval_tokens=0 must be a positive integer"):
        rescore(compared, eval_tokens=0)


def test_rescore_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no results.json" in err and str(tmp_path) in err and "\n" not in err

