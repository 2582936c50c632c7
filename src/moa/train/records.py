"""What a run leaves behind: config, environment, metrics stream, summary (docs/DESIGN.md §7).

``metrics.jsonl`` holds one JSON object per log or eval event; TensorBoard event files
mirror its numbers under ``tb/``. Reports are computed from these files only.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch

METRICS, SUMMARY, CONFIG, ENVIRONMENT = "metrics.jsonl", "summary.json", "config.json", "environment.json"


def format_rate(tokens_per_s: float | None) -> str:
    """Tokens/s for a table or summary line: thousands separated, "—" where none was measured."""
    return "—" if tokens_per_s is None else f"{tokens_per_s:,.0f}"


def git_commit() -> str:
    """Commit of the moa source tree (``+dirty`` when it has uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict:
    env = {
        "python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(), "git_commit": git_commit(), "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name()
        env["cuda_version"] = torch.version.cuda
    return env


def write_json(path: Path, obj) -> None:
    from moa.train.checkpoint import atomic_write

    atomic_write(Path(path), lambda f: f.write((json.dumps(obj, indent=2, default=str) + "\n").encode()))


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLogger:
    """Appends events to ``metrics.jsonl`` (flushed each time) and TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, keep_until_step: Optional[int] = None):
        self.path = Path(run_dir) / METRICS
        if keep_until_step is not None:  # resume: drop events past the checkpoint
            from moa.train.checkpoint import atomic_write

            kept = [e for e in read_metrics(run_dir) if e.get("step", 0) <= keep_until_step]
            atomic_write(self.path, lambda f: f.write("".join(json.dumps(e) + "\n" for e in kept).encode()))
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a declared dependency; tolerate its absence
                SummaryWriter = None
            if SummaryWriter is not None:
                # purge_step hides events at steps ≥ it; those at the checkpoint's own step stay,
                # as in metrics.jsonl
                purge = None if keep_until_step is None else keep_until_step + 1
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=purge)

    def log(self, event: dict) -> None:
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()
        if self._tb is not None:
            kind = event.get("event", "train")
            for key, value in event.items():
                if isinstance(value, (int, float)) and key not in ("step", "event"):
                    self._tb.add_scalar(f"{kind}/{key}", value, event["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def clear_unstarted(run_dir: Path) -> None:
    """Remove the records a run writes before its first checkpoint (config, environment, log,
    TensorBoard events), and nothing else: what a run stopped before then leaves behind."""
    for name in (METRICS, ENVIRONMENT, CONFIG):
        (run_dir / name).unlink(missing_ok=True)
    tb = run_dir / "tb"
    if tb.is_dir():
        for f in tb.iterdir():
            if f.is_file() and f.name.startswith("events.out.tfevents"):
                f.unlink()
        if not any(tb.iterdir()):
            tb.rmdir()
