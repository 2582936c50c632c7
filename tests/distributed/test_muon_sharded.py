"""Muon on FSDP2-style sharded matrices (DTensor, 2 gloo ranks) equals torch.optim.Muon on one process.

The gradients are the same on both sides, so the only thing that can differ is the
optimizer itself: orthogonalising the local shards instead of the whole matrix, or
putting a block back in the wrong place, moves the weights by ~lr (1e-2). Momentum
buffers and the bf16 Newton–Schulz inputs are equal bit for bit; the final
``W -= lr·O`` may round differently in the last bit (1e-17 seen) because torch's CPU
add kernel fuses the multiply-add in its vector body but not in its scalar tail, and a
block has a different tail than the whole matrix.
"""

import torch

from moa.testing.distributed import init_gloo, run_distributed
from moa.train.muon import Muon

# (shape, shard dim): uneven splits (5 rows → 3 + 2), a rank with an empty block (1 row),
# tall and wide, sharded on rows and on columns, more matrices than ranks (round-robin).
MATRICES = [((5, 3), 0), ((1, 4), 0), ((6, 8), 0), ((7, 2), 1), ((4, 9), 1)]
STEPS = 4


def tensors(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(shape, generator=gen, dtype=dtype) for shape, _ in MATRICES]
    grads = [[torch.randn(shape, generator=gen, dtype=dtype) for shape, _ in MATRICES] for _ in range(STEPS)]
    return weights, grads


KW = dict(lr=0.02, weight_decay=0.1, momentum=0.9, adjust_lr_fn="match_rms_adamw")


def _sharded_rank(rank):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    init_gloo()
    mesh = init_device_mesh("cpu", (2,))
    weights, grads = tensors()
    params = [torch.nn.Parameter(distribute_tensor(w, mesh, [Shard(d)])) for w, (_, d) in zip(weights, MATRICES)]
    opt = Muon(params, **KW)
    for step_grads in grads:
        for p, g, (_, d) in zip(params, step_grads, MATRICES):
            p.grad = distribute_tensor(g, mesh, [Shard(d)])
        opt.step()
    buffers = [opt.state[p]["momentum_buffer"].full_tensor() for p in params]
    return [p.full_tensor() for p in params], buffers, [p.to_local().shape for p in params]


def test_sharded_muon_equals_torch_muon_on_one_process():
    weights, grads = tensors()
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = torch.optim.Muon(params, **KW)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g
        opt.step()
    (w0, b0, shapes0), (w1, b1, shapes1) = run_distributed(_sharded_rank, 2)
    assert shapes0[0] == (3, 3) and shapes1[0] == (2, 3) and shapes1[1] == (0, 4)  # the splits meant above
    for i, p in enumerate(params):
        for w in (w0[i], w1[i]):
            torch.testing.assert_close(w, p.detach(), rtol=0, atol=1e-14, msg=str(MATRICES[i]))
        assert torch.equal(b0[i], opt.state[p]["momentum_buffer"]), MATRICES[i]
