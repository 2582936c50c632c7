"""Muon on FSDP2-style sharded matrices (DTensor, 2 gloo ranks) equals torch.optim.Muon on one process.

The gradients are the same on both sides, so the only thing that can differ is the
optimizer itself: orthogonalising the local shards instead of the whole matrix, or
putting a block back in the wrong place, moves the weights by ~lr (1e-2). Weights and
momentum buffers are compared bit for bit. (A 1e-17 difference once seen here came from
the per-matrix lr scale computed as (lr·0.2)·√n instead of torch's lr·(0.2·√n).)
"""

import torch

from moa.testing.distributed import init_gloo, run_distributed
from moa.train.muon import Muon

# (shape, shard dim): uneven splits (5 rows → 3 + 2), a rank with an empty block (1 row),
# tall and wide, sharded on rows and on columns, more matrices than ranks (several per owner).
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


def torch_muon_reference():
    """The parameters and optimizer of torch.optim.Muon after STEPS steps on one process."""
    weights, grads = tensors()
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = torch.optim.Muon(params, **KW)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g
        opt.step()
    return params, opt


def test_sharded_muon_equals_torch_muon_on_one_process():
    params, opt = torch_muon_reference()
    (w0, b0, shapes0), (w1, b1, shapes1) = run_distributed(_sharded_rank, 2)
    assert shapes0[0] == (3, 3) and shapes1[0] == (2, 3) and shapes1[1] == (0, 4)  # the splits meant above
    for i, p in enumerate(params):
        for w in (w0[i], w1[i]):
            assert torch.equal(w, p.detach()), MATRICES[i]
        assert torch.equal(b0[i], opt.state[p]["momentum_buffer"]), MATRICES[i]


# ---------------------------------------------------------------- DDP: replicated matrices


def _replicated_rank(rank, world):
    import torch.distributed as dist

    import moa.train.muon as muon_module

    init_gloo()
    calls = []
    ns = muon_module.zeropower_via_newtonschulz

    def counted(u, *args):
        calls.append(tuple(u.shape))
        return ns(u, *args)

    muon_module.zeropower_via_newtonschulz = counted
    weights, grads = tensors()
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = Muon(params, **KW, replicated_group=dist.group.WORLD)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params], [opt.state[p]["momentum_buffer"] for p in params], calls


def test_replicated_muon_splits_the_work_and_equals_torch_muon():
    """Under DDP every rank ends with torch.optim.Muon's weights bit for bit, while each
    rank runs Newton–Schulz only on the matrices it owns (LPT on their FLOPs)."""
    from moa.train.muon import balanced_owners

    params, opt = torch_muon_reference()
    shapes = [shape for shape, _ in MATRICES]
    for world in (2, 3):
        results = run_distributed(_replicated_rank, world, (world,))
        owners = balanced_owners(shapes, world)
        for rank, (w, b, calls) in enumerate(results):
            for i, p in enumerate(params):
                assert torch.equal(w[i], p.detach()), (world, rank, MATRICES[i])
                assert torch.equal(b[i], opt.state[p]["momentum_buffer"]), (world, rank, MATRICES[i])
            owned = [shapes[j] for j in range(len(shapes)) if owners[j] == rank]
            assert sorted(calls) == sorted(owned * STEPS), (world, rank, calls)
        assert sum(len(c) for _, _, c in results) == len(shapes) * STEPS  # no matrix done twice


def test_balanced_owners_lpt():
    from moa.train.muon import balanced_owners, ns_flops

    shapes = [(2048, 5632)] * 3 + [(2048, 2048)] * 4 + [(512, 2048)] * 2  # MLP, attention, GQA k/v
    owners = balanced_owners(shapes, 4)
    assert owners == balanced_owners(list(shapes), 4)  # deterministic
    load = [sum(ns_flops(s) for s, o in zip(shapes, owners) if o == r) for r in range(4)]
    assert max(load) - min(load) <= ns_flops((2048, 5632))  # within one (largest) matrix
    assert sorted(owners[:3]) == [0, 1, 2]  # the three largest go to three different ranks
    assert balanced_owners(shapes, 1) == [0] * len(shapes)
