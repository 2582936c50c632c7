"""The moa CLI: commands work, and every user error is one line naming the bad value."""

import json
import re
import subprocess
import sys

import pytest

from moa.cli import main

TINY = ["--preset", "debug", "--no-progress", "train.batch_size=4", "train.seq_len=32", "train.tokens=1280",
        "train.eval_tokens=512", "train.log_every=5"]


def fails(capsys, argv, *needles, code=2):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert err.startswith("moa: error: ") and "\n" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture
def text_dir(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.txt").write_text("def f(x):\n    return x + 1\n" * 400)
    (d / "b.txt").write_text("class A:\n    pass\n" * 400)
    return d


def test_user_errors_are_one_line(capsys, tmp_path):
    fails(capsys, ["train", "--preset", "nope"], "'nope'", "debug", "demo")
    fails(capsys, ["train", "--preset", "debug", "model.fnn=swiglu"], "model.fnn", "did you mean 'model.ffn'")
    fails(capsys, ["train", "--preset", "debug", "train.tokens=lots"], "train.tokens='lots'", "int")
    fails(capsys, ["train", "--preset", "debug", "train.batch_size=2.5"], "train.batch_size='2.5'")
    fails(capsys, ["train", "--preset", "debug", "optim.name=sgd"], "'sgd'", "adamw", "muon")
    fails(capsys, ["train", "--preset", "debug", "model.ffn=swishglu"], "swishglu", "moa-glu")
    fails(capsys, ["train", "--preset", "debug", "schedule.name=linear"], "'linear'", "cosine", "wsd")
    fails(capsys, ["train", "--preset", "debug", "train.device=tpu"], "'tpu'", "cpu")
    fails(capsys, ["train", "--preset", "debug", "notakeyvalue"], "notakeyvalue", "key=value")
    fails(capsys, ["train", "--preset", "debug", "data.tokenizer=wordpiece"], "wordpiece", "bpe")
    fails(capsys, ["train", *TINY, "--out", str(tmp_path / "r"), f"data.source=text:{tmp_path / 'missing'}"],
          str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    fails(capsys, ["train", *TINY, "--out", str(tmp_path / "r2"), f"data.source=text:{tmp_path / 'empty'}"],
          str(tmp_path / "empty"))


def test_corpus_smaller_than_one_batch(capsys, tmp_path):
    d = tmp_path / "small"
    d.mkdir()
    (d / "a.txt").write_text("x = 1\n" * 200)
    (d / "b.txt").write_text("y = 2\n" * 200)
    fails(capsys, ["train", *TINY, "--out", str(tmp_path / "r"), f"data.source=text:{d}", "train.batch_size=64",
                   "train.tokens=2048"], "batch_size=64")


def test_train_resume_sample_and_resume_errors(capsys, tmp_path, text_dir):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "val" in text and "bits/byte" in text and str(out) in text
    assert re.search(r"s wall, [0-9,]+ tokens/s", text), text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 10
    # a finished run resumes to the same summary
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    fails(capsys, ["train", *TINY, "--out", str(out)], "already holds a run", "--resume")
    fails(capsys, ["train", "--resume", str(out), "model.d_model=64"], "different config", "model.d_model")
    fails(capsys, ["train", "--resume", str(tmp_path / "nothing")], "nothing")
    # the same run dir but a tokenizer that gives another vocabulary
    cfg = json.loads((out / "config.json").read_text())
    cfg["data"]["tokenizer"] = "bpe:300"
    cfg["data"]["source"] = f"text:{text_dir}"
    (out / "config.json").write_text(json.dumps(cfg))
    fails(capsys, ["train", "--resume", str(out), "--no-progress"], "vocab mismatch on resume", "bpe:300")
    assert main(["sample", str(out), "--prompt", "def ", "--tokens", "20", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("def ")
    fails(capsys, ["sample", str(out), "--tokens", "0"], "--tokens=0")


def test_non_finite_loss_exit_code_and_message(capsys, tmp_path):
    fails(capsys, ["train", *TINY, "--out", str(tmp_path / "r"), "optim.lr=1e30", "optim.grad_clip=0",
                   "schedule.warmup=0"], "not finite", "Last good checkpoint", code=1)


def test_dry_run_presets_and_ffn(capsys):
    assert main(["train", "--preset", "debug", "--dry-run", "model.ffn=swiglu"]) == 0
    out = capsys.readouterr().out
    assert '"ffn": "swiglu"' in out and '"non_embedding"' in out
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("debug", "demo", "cpu-s", "gpu-125m", "gpu-2b"):
        assert name in out
    assert main(["ffn", "--d-model", "64", "--variants", "swiglu,moa-glu"]) == 0
    assert "moa-glu" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "moa.train", "--preset", "debug", "--dry-run"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert '"d_model": 32' in r.stdout
    r = subprocess.run(["moa", "train", "--preset", "debug", "optim.lr=-1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "moa: error: optim.lr=-1.0 must be > 0"
