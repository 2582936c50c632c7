"""Run a function on N gloo ranks on this machine, the way torchrun would.

Each rank is a fresh process (``spawn``) with torchrun's environment variables (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT on a free port, never a fixed one), so
code under test takes its real torchrun path. After a success the group is left with a
barrier before ``destroy_process_group`` so no rank exits while another still talks to it;
after an error the rank just exits (as under torchrun). Results come back per rank; an
exception on any rank fails the call with that rank's traceback.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, result_dir: str, fn: Callable, args: tuple) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    out = Path(result_dir) / f"rank{rank}.pkl"
    try:
        result = ("ok", fn(rank, *args))
    except BaseException:  # report, then re-raise so the process exits non-zero (no barrier: see
        out.write_bytes(pickle.dumps(("error", traceback.format_exc())))  # moa.train.loop.train)
        raise
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    out.write_bytes(pickle.dumps(result))


def run_distributed(fn: Callable[..., Any], world_size: int = 2, args: tuple = ()) -> list[Any]:
    """``[fn(rank, *args) for each rank]``, run concurrently on ``world_size`` CPU processes.

    ``fn`` must be importable (module level). It may call ``torch.distributed.init_process_group``
    itself (e.g. through ``moa.train.train``) or use :func:`init_gloo`.
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as result_dir:
        try:
            mp.start_processes(_worker, args=(world_size, port, result_dir, fn, args), nprocs=world_size,
                               start_method="spawn", join=True)
        except mp.ProcessRaisedException as exc:
            raise RuntimeError(_first_error(result_dir, world_size) or str(exc)) from None
        except mp.ProcessExitedException as exc:
            raise RuntimeError(_first_error(result_dir, world_size) or str(exc)) from None
        results = []
        for rank in range(world_size):
            status, value = pickle.loads((Path(result_dir) / f"rank{rank}.pkl").read_bytes())
            results.append(value)
        return results


def _first_error(result_dir: str, world_size: int) -> str | None:
    for rank in range(world_size):
        path = Path(result_dir) / f"rank{rank}.pkl"
        if path.exists():
            status, value = pickle.loads(path.read_bytes())
            if status == "error":
                return f"rank {rank} failed:\n{value}"
    return None


def init_gloo() -> None:
    """Join the gloo group described by the environment (for plain test functions)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
