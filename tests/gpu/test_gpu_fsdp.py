"""FSDP2 mixed precision on one GPU: bf16 parameters gathered, fp32 gradients reduced.

The sharded model (one rank, the trainer's ``parallelize``) trains like the unsharded
model under bf16 autocast: same losses to bf16 accuracy over a few AdamW steps.
"""

import pytest
import torch
import torch.distributed as dist

from moa.model import ModelConfig, Transformer, lm_loss
from moa.train.distributed import DistEnv, parallelize

pytestmark = pytest.mark.gpu


def _losses(model, step_model, batch, steps, autocast):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = batch
    out = []
    for _ in range(steps):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = lm_loss(step_model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append(loss.item())
    return out


def test_fsdp2_bf16_matches_autocast(device):
    cfg = ModelConfig(vocab_size=256, d_model=128, n_layers=2, n_heads=4, ffn="moa-glu", max_seq_len=128)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (8, 65), generator=gen).to(device)
    batch = tokens[:, :-1], tokens[:, 1:]
    torch.manual_seed(0)
    plain = Transformer(cfg).to(device)
    torch.manual_seed(0)
    sharded = Transformer(cfg).to(device)
    assert not dist.is_initialized()
    try:
        # the trainer's own path: a 1-rank group made by parallelize, bf16 mixed precision on CUDA
        step_model = parallelize(sharded, "fsdp", DistEnv(), device, torch.bfloat16)
        fsdp = _losses(sharded, step_model, batch, 5, autocast=device.type == "cpu")
        for p in sharded.parameters():
            assert p.dtype == torch.float32  # sharded fp32 master weights
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    ref = _losses(plain, plain, batch, 5, autocast=True)
    for a, b in zip(fsdp, ref):
        assert abs(a - b) <= 3e-2 * abs(b), (fsdp, ref)
