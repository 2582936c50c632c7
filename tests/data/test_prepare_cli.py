"""``moa prepare`` end to end, and training on its shards (``prepared:DIR``), resumed exactly."""

from __future__ import annotations

import json

import pytest

from moa.cli import main
from moa.config import apply_overrides
from moa.data.sources import stdlib_root
from moa.presets import get_preset
from moa.train import train
from moa.train.records import read_metrics


@pytest.fixture
def prepared(tmp_path, capsys):
    """A jsonl corpus of stdlib paragraphs prepared into 3000-token shards by the CLI."""
    text = "\n".join((stdlib_root() / name).read_text() for name in ("argparse.py", "textwrap.py", "shlex.py"))
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": p}) + "\n" for p in text.split("\n\n") if p.strip()))
    out = tmp_path / "prepared"
    rc = main(["prepare", f"jsonl:{path}", "--tokenizer", "bytes", "--out", str(out), "--workers", "2",
               "--shard-tokens", "3k", "--val-fraction", "0.1", "--no-progress"])
    assert rc == 0
    (out / "printed.txt").write_text(capsys.readouterr().out)  # the CLI's summary, for the test below
    return out


def test_prepare_command_prints_totals_and_the_train_command(prepared):
    printed = (prepared / "printed.txt").read_text()
    manifest = json.loads((prepared / "manifest.json").read_text())
    train_split = manifest["splits"]["train"]
    assert f"{train_split['tokens']:,} tokens in {len(train_split['shards'])} shard(s)" in printed
    assert f"train with: moa train data.source=prepared:{prepared} data.tokenizer=bytes" in printed
    assert len(train_split["shards"]) > 20 and manifest["shard_tokens"] == 3000


def test_prepare_command_errors_are_one_line(tmp_path, capsys):
    rc = main(["prepare", f"text:{tmp_path}/nothing", "--tokenizer", "bytes", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("moa: error: ") and "does not exist" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["prepare", "stdlib", "--tokenizer", "bytes", "--out", str(tmp_path / "o"), "--shard-tokens", "3x"])
    assert "'3x' is not a count; use e.g. 65536, 100M or 2.5G" in capsys.readouterr().err
    for bad in ("inf", "1e400"):  # argparse's own error (exit 2), not an OverflowError traceback
        with pytest.raises(SystemExit) as exc:
            main(["prepare", "stdlib", "--tokenizer", "bytes", "--out", str(tmp_path / "o"), "--shard-tokens", bad])
        assert exc.value.code == 2 and f"{bad!r} is not a whole non-negative count" in capsys.readouterr().err
    rc = main(["prepare", "stdlib", "--tokenizer", "bytes", "--out", str(tmp_path / "o"), "--shard-tokens", "3G"])
    err = capsys.readouterr().err
    assert rc == 2 and "shard_tokens=3000000000 must be an integer in 1..2147483647" in err and err.count("\n") == 1


def test_training_streams_prepared_shards_and_resumes_exactly(prepared, tmp_path):
    cfg = apply_overrides(get_preset("debug"), [
        f"data.source=prepared:{prepared}", "data.tokenizer=bytes", "train.batch_size=8", "train.seq_len=32",
        f"train.tokens={12 * 8 * 32}", "train.eval_tokens=1024", "train.log_every=1", "train.ckpt_every=4"])
    full = train(cfg, tmp_path / "full", progress=False)
    train(cfg, tmp_path / "cut", progress=False, stop_after=10)  # "killed" after step 10; checkpoint at 8
    resumed = train(None, tmp_path / "cut", resume=True, progress=False)
    assert resumed["resumed_from_step"] == 8  # it did resume, from the step-8 checkpoint
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert [e["step"] for e in a] == [e["step"] for e in b]
    for ea, eb in zip(a, b):
        for key in ("train_loss", "val_loss"):
            assert ea.get(key) == eb.get(key), (ea["step"], key)
    assert full["final_val_loss"] == resumed["final_val_loss"]
    env = json.loads((tmp_path / "full" / "environment.json").read_text())
    assert env["data"]["cache_path"] == str(prepared) and len(env["data"]["splits"]["train"]["shards"]) > 20
