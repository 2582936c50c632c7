"""Commands that never touch a model do not import torch (start-up in a fraction of a second,
and ``moa prepare``'s worker processes stay small), and the CLI still maps a diverged run
to one line and exit status 1 once the trainer is loaded."""

import json
import subprocess
import sys

from moa.cli import main

PROBE = """
import json, sys
import moa.cli
rc = moa.cli.main(sys.argv[1:])
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules, "numpy": "numpy" in sys.modules}))
"""


def probe(*argv):
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_and_parsers_import_neither_torch_nor_numpy():
    r = probe()  # bare `moa` builds every sub-command's parser and prints the help
    assert r == {"rc": 0, "torch": False, "numpy": False}


def test_prepare_runs_without_torch(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text("def f(x):\n    return x + 1\n" * 300)
    for tok, workers in (("bytes", "1"), ("bpe:300", "2")):
        out = tmp_path / tok.replace(":", "")
        r = probe("prepare", f"text:{src}", "--tokenizer", tok, "--out", str(out), "--workers", workers,
                  "--no-progress")
        assert r["rc"] == 0 and not r["torch"], r
        assert (out / "manifest.json").exists()


def test_a_diverged_run_is_one_line_and_exit_1(capsys, tmp_path):
    rc = main(["train", "--preset", "debug", "--no-progress", "--out", str(tmp_path / "run"), "optim.lr=1e30",
               "optim.grad_clip=0", "schedule.warmup=0", "train.batch_size=4", "train.seq_len=32",
               "train.tokens=2560", "train.eval_tokens=256", "train.log_every=1"])
    err = capsys.readouterr().err.strip()
    assert rc == 1, err
    assert err.startswith("moa: error: ") and "not finite" in err and "\n" not in err, err
