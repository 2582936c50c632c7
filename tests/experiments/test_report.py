"""docs/RESULTS.md agrees with the files it cites, and the checker catches a document that does not."""

import json
from pathlib import Path

from moa.cli import main
from moa.experiments.report import check, commands, sync

ROOT = Path(__file__).resolve().parents[2]
TINY = ["train.batch_size=4", "train.seq_len=32", "train.tokens=1024", "train.eval_tokens=256", "train.log_every=4"]


def test_committed_results_document_is_in_sync():
    doc = ROOT / "docs" / "RESULTS.md"
    assert "<!-- include " in doc.read_text(), "RESULTS.md embeds no result file"
    assert check(doc) == []


def test_sync_check_and_command_verification(tmp_path):
    out = tmp_path / "exp"
    cmd = ["compare", "--preset", "debug", "--out", str(out), "--variants", "swiglu,moa-glu", "--seeds", "1",
           "--lr-factors", "1", *TINY]
    assert main(cmd) == 0
    docs = tmp_path / "docs"
    docs.mkdir()
    doc = docs / "R.md"
    shown = " ".join(cmd)
    doc.write_text(f"# R\n\n```bash\nOMP_NUM_THREADS=1 moa {shown}   # a comment\n```\n\n"
                   f"<!-- include ../exp/results.md -->\nstale\n<!-- end include -->\n\n![c](../exp/loss_curves.png)\n")
    assert commands(doc.read_text()) == [cmd]
    problems = check(doc, root=tmp_path)
    assert len(problems) == 1 and "differs from the file" in problems[0]
    assert sync(doc) == 1 and check(doc, root=tmp_path) == [] and sync(doc) == 0
    assert (out / "results.md").read_text() in doc.read_text()
    # a command that would not reproduce the stored experiment is caught, as is a missing image
    wrong = doc.read_text().replace("--seeds 1", "--seeds 2").replace("train.tokens=1024", "train.tokens=2048")
    doc.write_text(wrong.replace("loss_curves.png", "nope.png"))
    problems = check(doc, root=tmp_path)
    assert any("train.tokens: 2048 vs 1024" in p for p in problems), problems
    assert any("compare_config" in p and "'seeds': 2" in p for p in problems), problems
    assert any("image ../exp/nope.png" in p for p in problems), problems
    # a file written before a setting existed (here: no search_seeds recorded) passes a command
    # that leaves the setting alone, not one that sets it
    stored = json.loads((out / "results.json").read_text())
    del stored["compare_config"]["search_seeds"]
    (out / "results.json").write_text(json.dumps(stored))
    doc.write_text(f"```bash\nmoa {shown}\n```\n")
    assert check(doc, root=tmp_path) == []
    doc.write_text(f"```bash\nmoa {shown} --search-seeds 3\n```\n")
    problems = check(doc, root=tmp_path)
    assert len(problems) == 1 and "sets --search-seeds, which" in problems[0], problems


def test_missing_document_is_a_one_line_error(tmp_path, capsys):
    import pytest

    from moa.experiments.report import main as report_main

    with pytest.raises(SystemExit) as exc:
        report_main([str(tmp_path / "nope.md")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nope.md is not a file" in err


def test_a_config_key_newer_than_the_results_is_ignored_only_at_its_preset_value():
    from moa.experiments.report import _without_new_keys

    preset = {"optim": {"lr": 1e-3, "mixing_lr_mult": 1.0}, "seed": 0}
    stored = {"optim": {"lr": 2e-3}, "seed": 0}  # written before mixing_lr_mult existed
    assert _without_new_keys({"optim": {"lr": 2e-3, "mixing_lr_mult": 1.0}, "seed": 0}, stored, preset) == stored
    changed = _without_new_keys({"optim": {"lr": 2e-3, "mixing_lr_mult": 0.5}, "seed": 0}, stored, preset)
    assert changed != stored and changed["optim"]["mixing_lr_mult"] == 0.5
