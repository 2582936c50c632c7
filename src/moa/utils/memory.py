"""Peak memory of a callable, on CUDA (allocator stats) or CPU (profiler memory events).

CPU has no allocator statistics, so the CPU path replays the profiler's allocation and
free events in time order and returns the highest running total. It sees allocations
made through the dispatcher (eager ops and the buffers of torch.compile's generated
code); transient allocations freed inside a single op are netted out, so it is a slight
under-estimate of the true peak. Compare numbers measured the same way only.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def peak_memory_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated while ``fn()`` runs, above what was live before it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak
