"""Side-by-side timing for benchmarks: interleaved repeats, medians, device syncs."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_median(steps: Sequence[Callable[[], object]], reps: int, device: torch.device) -> list[float]:
    """Median seconds of each step, run round-robin ``reps`` times so drift hits all alike."""
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(reps):
        for i, step in enumerate(steps):
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]
