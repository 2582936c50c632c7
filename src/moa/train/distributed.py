"""Scale-out with torch.distributed, applied from outside the model (docs/DESIGN.md §8).

The trainer runs unchanged under ``torchrun``: :func:`init_distributed` reads torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), :func:`parallelize` wraps a
built model in DDP or applies FSDP2 (``fully_shard`` per block, then the root), and the
loop shards each step's global batch across ranks (:func:`rank_rows`). Backend: NCCL on
CUDA, gloo on CPU. Nothing here runs at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str) -> DistEnv:
    """Join the process group torchrun set up (no-op for a single process)."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return env


def replicated_group(parallel: str, env: DistEnv):
    """The group whose ranks hold identical weights and gradients (DDP's world), or None."""
    return dist.group.WORLD if parallel == "ddp" and env.distributed else None


def shutdown(env: DistEnv) -> None:
    """Barrier, then destroy the group, so no rank exits while others still talk to it
    (after a success only: see :func:`moa.train.loop.train`)."""
    if env.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def resolve_parallel(mode: str, env: DistEnv) -> str:
    """``auto`` → ``ddp`` under a multi-process launch, else ``none``; checks consistency."""
    if mode == "auto":
        return "ddp" if env.distributed else "none"
    if mode == "none" and env.distributed:
        raise ValueError(f"train.parallel=none but {env.world_size} processes were launched; valid: ddp, fsdp, auto")
    return mode


def rank_rows(batch_size: int, micro: Optional[int], env: DistEnv) -> tuple[int, int, int]:
    """(first row, rows per micro-batch, micro-batches) of this rank in each global batch.

    The global batch is the same for any world size: each rank takes a contiguous,
    disjoint 1/W of the rows and gradient accumulation fills in.
    """
    w = env.world_size
    if batch_size % w:
        raise ValueError(f"train.batch_size={batch_size} is not divisible by the world size {w}")
    per_rank = batch_size // w
    micro = micro or per_rank
    if micro > per_rank or per_rank % micro:
        raise ValueError(f"train.micro_batch_size={micro} must divide the per-rank batch {per_rank} "
                         f"(batch_size {batch_size} / world size {w})")
    return env.rank * per_rank, micro, per_rank // micro


def rank_share(rows: int, env: DistEnv) -> tuple[int, int]:
    """[lo, hi): this rank's contiguous share of ``rows`` rows (shares differ by at most one row).

    For evaluation batches, which need not divide by the world size; a share may be empty
    when ``rows < world_size``.
    """
    return env.rank * rows // env.world_size, (env.rank + 1) * rows // env.world_size


def parallelize(model: nn.Module, mode: str, env: DistEnv, device: torch.device,
                param_dtype: Optional[torch.dtype] = None) -> nn.Module:
    """Return the module to train: the model itself, a DDP wrapper, or the FSDP2-sharded model.

    FSDP2 shards each transformer block, then the root (embedding, final norm, head);
    with bf16 training on GPU, parameters are gathered in bf16 and gradients reduced in fp32.
    """
    if mode == "none":
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[env.local_rank] if device.type == "cuda" else None)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_initialized():  # one process without torchrun (moa train --nproc 1): a 1-rank group
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0,
                                world_size=1)
    kwargs = {}
    if param_dtype is not None and device.type == "cuda":
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in model.blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def all_reduce_mean(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= env.world_size
    return value


def all_reduce_sum(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value
