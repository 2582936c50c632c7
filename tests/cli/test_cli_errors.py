"""Configuration errors of ``moa train`` are one line, exit 2, and are found before the run
directory exists, so the same ``--out`` works once the configuration is fixed."""

import sys

import pytest

from moa.cli import main

TINY = ["--preset", "debug", "--no-progress", "train.batch_size=4", "train.seq_len=32", "train.tokens=256",
        "train.eval_tokens=256", "train.log_every=1", "model.moe.num_experts=4", "model.moe.top_k=2"]


def fails_before_run_dir(capsys, out, argv, *needles):
    rc = main(["train", *TINY, "--out", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("moa: error: ") and "\n" not in err, err
    for n in needles:
        assert n in err, err
    assert not out.exists(), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("argv, needles", [
    # torch._grouped_mm has no float64 kernel: found when the layer would first run
    (["model.moe.dispatch=grouped", "train.dtype=float64"], ["dispatch='grouped'", "float64", "loop"]),
    # torch.compile traces grouped GEMMs in bfloat16 only
    (["model.moe.dispatch=grouped", "train.compile=true"], ["dispatch='grouped'", "bfloat16", "loop"]),
    # a vocabulary smaller than the tokenizer's is found once the data is prepared
    (["model.vocab_size=100"], ["model.vocab_size=100", "256"]),
])
def test_config_errors_leave_no_run_dir(capsys, tmp_path, argv, needles):
    out = tmp_path / "run"
    fails_before_run_dir(capsys, out, argv, *needles)
    fails_before_run_dir(capsys, out, argv, *needles)  # the same --out is still free
    assert main(["train", *TINY, "--out", str(out), "model.moe.dispatch=loop"]) == 0
    assert (out / "summary.json").exists()


def test_missing_extra_is_one_line(capsys, tmp_path, monkeypatch):
    """An optional ecosystem that is not installed (here: transformers for --init-from) is
    an ImportError naming the extra: one line, exit 2, no run directory."""
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    for name in [m for m in sys.modules if m == "moa.hf" or m.startswith("moa.hf.")]:
        monkeypatch.delitem(sys.modules, name)
    out = tmp_path / "run"
    fails_before_run_dir(capsys, out, ["--init-from", str(tmp_path)], "transformers", 'pip install -e ".[hf]"')
