"""Checkpoints written atomically: a kill at any moment leaves the last good one loadable.

The state goes to a temporary file in the same directory, is flushed and fsync'ed, then
``os.replace``d over ``checkpoint.pt`` (atomic on POSIX), and the directory is fsync'ed
so the rename itself survives a crash.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temp file, then atomically move it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only: a resume may see fewer GPUs
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # written by an older moa: one state per visible GPU
            cuda = cuda[torch.cuda.current_device()] if torch.cuda.current_device() < len(cuda) else cuda[0]
        torch.cuda.set_rng_state(cuda)


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    path = Path(run_dir) / CHECKPOINT
    atomic_write(path, lambda f: torch.save(state, f))
    return path


def load_checkpoint(run_dir: Path, mmap: bool = False) -> dict:
    """The whole state; ``mmap``: tensors stay on disk until touched (reading metadata only)."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; was the run started with this --out?")
    return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)


# ---------------------------------------------------------------- FSDP2 (sharded) checkpoints
#
# Each rank writes its shards with torch.distributed.checkpoint into a fresh folder
# ``checkpoint.dcp/step-NNNNNNN``; rank 0 then atomically rewrites the pointer file
# ``checkpoint.json`` naming it and removes older folders. A crash mid-save leaves the
# pointer on the previous complete checkpoint.

POINTER = "checkpoint.json"


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / CHECKPOINT).exists() or (Path(run_dir) / POINTER).exists()


def save_sharded(run_dir: Path, model, optimizers, meta: dict, rank: int) -> None:
    import json
    import shutil

    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    run_dir = Path(run_dir)
    folder = run_dir / "checkpoint.dcp" / f"step-{meta['step']:09d}"
    model_sd, optim_sd = get_state_dict(model, optimizers)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(folder))
    atomic_write(folder / f"rng-{rank}.pt", lambda f: torch.save(rng_state(), f))
    if rank == 0:
        atomic_write(folder / "meta.pt", lambda f: torch.save(meta, f))
    dist.barrier()
    if rank == 0:
        pointer = {"format": "dcp", "step": meta["step"], "path": str(folder.relative_to(run_dir))}
        atomic_write(run_dir / POINTER, lambda f: f.write(json.dumps(pointer).encode()))
        for old in (run_dir / "checkpoint.dcp").iterdir():
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def load_sharded(run_dir: Path, model, optimizers, rank: int) -> dict:
    """Load model and optimizer shards in place; returns the meta dict (step, …)."""
    import json

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    run_dir = Path(run_dir)
    pointer = json.loads((run_dir / POINTER).read_text())
    folder = run_dir / pointer["path"]
    model_sd, optim_sd = get_state_dict(model, optimizers)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optimizers, model_state_dict=state["model"], optim_state_dict=state["optim"])
    set_rng_state(torch.load(folder / f"rng-{rank}.pt", weights_only=False))
    return torch.load(folder / "meta.pt", weights_only=False)


def read_meta(run_dir: Path) -> dict:
    """The checkpoint's bookkeeping (step, tokenizer, …) without loading weights."""
    import json

    run_dir = Path(run_dir)
    if (run_dir / POINTER).exists():
        pointer = json.loads((run_dir / POINTER).read_text())
        return {**torch.load(run_dir / pointer["path"] / "meta.pt", weights_only=False), "format": "dcp"}
    # memory-mapped: no rank reads a 2B model's weights and optimizer state just for the step
    state = load_checkpoint(run_dir, mmap=True)
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizers", "rng")}
    meta["format"] = "file"
    return meta
