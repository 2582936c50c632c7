"""The README's "Hugging Face" commands, run verbatim in a temporary directory (slow:
three tiny training runs, exports, an upcycle and an lm-eval run)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from moa.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    section = README.read_text().split("## Hugging Face", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_block_has_every_feature():
    joined = "\n".join(readme_commands())
    for needle in ("moa export", "from_pretrained('hf/moa')", "trust_remote_code=True", "moa upcycle",
                   "--init-from", "moa eval"):
        assert needle in joined


@pytest.mark.slow
def test_readme_hugging_face_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed = []
    for line in readme_commands():
        args = shlex.split(line, comments=True)
        if args[0] == "moa":
            assert main(args[1:]) == 0, line
        else:
            assert args[0] == "python", line
            res = subprocess.run([sys.executable, *args[1:]], capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, (line, res.stderr[-2000:])
            printed.append(res.stdout)
    # the exported model generates from the prompt, and loads as moa's class without moa
    assert len(printed) == 2 and printed[0].startswith("def ") and len(printed[0].rstrip("\n")) > len("def ")
    assert printed[1].strip() == "MoaForCausalLM"
    assert (tmp_path / "hf/swiglu-moa/modeling_moa.py").exists()
    assert (tmp_path / "runs/swiglu-moa/summary.json").exists()
