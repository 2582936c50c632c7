"""``moa train --nproc 1 train.parallel=fsdp``: FSDP2 in one process, without torchrun.

FSDP2 needs a process group even for one rank; the trainer makes a 1-rank group itself.
"""

import torch.distributed as dist

from moa.config import apply_overrides
from moa.presets import get_preset
from moa.train import train


def test_fsdp_single_process_run(tmp_path):
    assert not dist.is_initialized()
    cfg = apply_overrides(get_preset("debug"), ["train.parallel=fsdp", "train.tokens=10240", "train.eval_tokens=2048"])
    try:
        summary = train(cfg, tmp_path / "run", progress=False)
    finally:
        if dist.is_initialized():  # the 1-rank group the trainer made; later tests start without one
            dist.destroy_process_group()
    assert summary["parallel"] == "fsdp" and summary["world_size"] == 1 and summary["steps"] == 10
    assert (tmp_path / "run" / "model.pt").exists()
