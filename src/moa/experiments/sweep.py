"""Resumable sweeps: many training runs, each in its own directory, none run twice.

A run whose ``summary.json`` exists is reused as it is; one with a checkpoint but no
summary (an interrupted sweep) is resumed from it; one killed before its first checkpoint
(its config and early log lines, nothing to resume from) has those records cleared and
starts again; anything else starts fresh. A run directory that holds a different config
is an error, never silently overwritten. With ``allow_divergence`` (LR searches), a run
whose loss goes non-finite is recorded in ``diverged.json`` and reported with an infinite
final loss, now and on every rerun, instead of stopping the sweep.
"""

from __future__ import annotations

import dataclasses
import json
import math

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from moa.config import RunConfig, config_from_dict, diff_configs
from moa.train import TrainingDiverged, train
from moa.train.checkpoint import has_checkpoint
from moa.train.records import CONFIG, SUMMARY, clear_unstarted, read_json, read_metrics


@dataclass
class RunResult:
    name: str
    run_dir: Path
    config: RunConfig
    summary: dict
    reused: bool

    def curve(self, key: str = "val_loss") -> list[tuple[int, float]]:
        """(tokens, value) of every event carrying ``key`` (eval events for val_loss)."""
        return [(e["tokens"], e[key]) for e in read_metrics(self.run_dir) if key in e]


DIVERGED = "diverged.json"


def run_or_reuse(name: str, cfg: RunConfig, run_dir: Path, progress: bool = False,
                 log: Optional[Callable[[str], None]] = print, allow_divergence: bool = False) -> RunResult:
    run_dir = Path(run_dir)

    def run(resume: bool) -> RunResult:
        try:
            summary = train(None if resume else cfg, run_dir, resume=resume, progress=progress)
        except TrainingDiverged as exc:
            if not allow_divergence:
                raise
            (run_dir / DIVERGED).write_text(json.dumps({"error": str(exc)}, indent=2) + "\n")
            if log:
                log(f"  diverged {name}: {exc}")
            return _diverged(name, run_dir, cfg, str(exc), reused=False)
        return RunResult(name, run_dir, cfg, summary, reused=False)

    if (run_dir / CONFIG).exists():
        saved = config_from_dict(read_json(run_dir / CONFIG))
        saved = saved.replace(model=saved.model.replace(vocab_size=cfg.model.vocab_size))
        if math.isclose(saved.optim.lr, cfg.optim.lr, rel_tol=1e-9, abs_tol=0.0):
            # the same grid point: folder names keep 3 digits of the LR, and the grid arithmetic
            # that reaches it (base × factor, an extension's g²/g') can differ in the last ulp
            saved = saved.replace(optim=dataclasses.replace(saved.optim, lr=cfg.optim.lr))
        if saved != cfg:
            raise ValueError(f"{run_dir} holds a run with another config ({'; '.join(diff_configs(saved, cfg)[:3])}); "
                             f"use another --out")
        if (run_dir / SUMMARY).exists():
            if log:
                log(f"  reuse   {name}")
            return RunResult(name, run_dir, cfg, read_json(run_dir / SUMMARY), reused=True)
        if (run_dir / DIVERGED).exists():
            error = read_json(run_dir / DIVERGED)["error"]
            if not allow_divergence:
                raise TrainingDiverged(f"{run_dir} diverged before: {error}")
            if log:
                log(f"  reuse   {name} (diverged)")
            return _diverged(name, run_dir, cfg, error, reused=True)
        if has_checkpoint(run_dir):
            if log:
                log(f"  resume  {name}")
            return run(resume=True)
        if log:
            log(f"  restart {name} (stopped before its first checkpoint)")
        clear_unstarted(run_dir)
        return run(resume=False)
    if log:
        log(f"  train   {name}")
    return run(resume=False)


class Runner:
    """Trains (or reuses) runs through :func:`run_or_reuse`: one after another in this
    process (``jobs=1``), or on ``jobs`` worker processes, each training one run at a time.

    ``run`` may be called from several threads at once and blocks until its run is done;
    ``map`` evaluates independent calls concurrently (threads feeding the workers). Every
    run is the same config in the same folder whatever ``jobs`` is, and its numbers are the
    same bit for bit as long as each process computes with the same number of threads (CPU
    reductions depend on it): set OMP_NUM_THREADS (e.g. 1) for sweeps that must match. Workers on
    a machine with GPUs get one visible GPU each (``jobs`` must not exceed them); on CPU
    each gets ``torch.get_num_threads() // jobs`` threads unless OMP_NUM_THREADS is set
    (said in the log, since those runs then differ in the last bits from a ``jobs=1`` sweep).
    """

    def __init__(self, jobs: int = 1, progress: bool = False, log: Optional[Callable[[str], None]] = print):
        if not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs={jobs!r} must be a positive integer")
        self.jobs, self.log = jobs, log
        self.progress = progress and jobs == 1  # progress bars of concurrent runs would interleave
        self._pool = None
        if jobs > 1:
            import multiprocessing
            import os
            from concurrent.futures import ProcessPoolExecutor

            import torch

            ctx = multiprocessing.get_context("spawn")
            devices, threads = None, None
            if torch.cuda.is_available():
                visible = os.environ.get("CUDA_VISIBLE_DEVICES")
                ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
                if jobs > len(ids):
                    raise ValueError(f"jobs={jobs} exceeds the {len(ids)} visible GPU(s); one run per GPU")
                devices = ctx.Queue()
                for i in ids[:jobs]:
                    devices.put(i)
            elif "OMP_NUM_THREADS" not in os.environ:
                threads = max(1, torch.get_num_threads() // jobs)
                if log and threads != torch.get_num_threads():
                    log(f"note: {jobs} workers with {threads} thread(s) each (OMP_NUM_THREADS is unset); CPU results "
                        f"depend on the thread count in the last bits, so set OMP_NUM_THREADS to match another sweep")
            self._pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                             initargs=(devices, threads))

    def run(self, name: str, cfg: RunConfig, run_dir: Path, allow_divergence: bool = False) -> RunResult:
        if self._pool is None:
            return run_or_reuse(name, cfg, run_dir, self.progress, self.log, allow_divergence)
        return self._pool.submit(_run_in_worker, name, cfg, Path(run_dir), self.log is not None,
                                 allow_divergence).result()

    def map(self, fn: Callable, items: list[tuple]) -> list:
        """``[fn(*item) for item in items]``, concurrently when there are workers."""
        if self._pool is None or len(items) < 2:
            return [fn(*item) for item in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(items)) as threads:
            return list(threads.map(lambda item: fn(*item), items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _init_worker(devices, threads) -> None:
    import os

    import torch

    if devices is not None:  # before CUDA is initialised in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = devices.get()
    if threads:
        torch.set_num_threads(threads)


def _run_in_worker(name: str, cfg: RunConfig, run_dir: Path, verbose: bool, allow_divergence: bool) -> RunResult:
    def log(line: str) -> None:
        print(line, flush=True)

    return run_or_reuse(name, cfg, run_dir, False, log if verbose else None, allow_divergence)


def _diverged(name: str, run_dir: Path, cfg: RunConfig, error: str, reused: bool) -> RunResult:
    return RunResult(name, run_dir, cfg, {"final_val_loss": math.inf, "final_val_bpb": math.inf, "diverged": error},
                     reused=reused)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
