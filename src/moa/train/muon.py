"""Muon whose Newton–Schulz step always sees whole matrices: one process, DDP and FSDP2.

Muon (Jordan et al. 2024; "Muon is Scalable for LLM Training", arXiv 2502.16982)
orthogonalises each hidden matrix's momentum-smoothed gradient with a quintic
Newton–Schulz iteration. The iteration is not elementwise: run on a shard of a matrix it
orthogonalises the shard, a different optimizer. :class:`Muon` here is the update of
``torch.optim.Muon`` (same coefficients, steps, eps, bf16 iteration, lr adjustment,
decoupled weight decay, Nesterov momentum; one process matches it bit for bit, tested)
that also accepts FSDP2's sharded parameters (``DTensor``, ``Shard(d)`` on a 1-D mesh).

Per step, for each hidden matrix ``P`` with gradient ``G`` and momentum ``M`` (all (A, C)
as full matrices; under FSDP2 each rank holds a row (or column) block of each):

1. Momentum, on the local block (elementwise, so sharding does not change it)::

       M ← μ M + (1 − μ) G          (lerp; torch.optim.Muon's convention)
       U ← (1 − μ) G + μ M  if nesterov else  M

2. Orthogonalise the whole ``U``: ``O = NS₅(U)`` in bf16 (as torch.optim.Muon).
3. ``P ← (1 − lr·λ) P − lr·adjust(A, C) · O`` on the local block.

Step 2 under FSDP2: the matrices of the group are assigned to the W ranks of the mesh
by longest-processing-time-first on their Newton–Schulz FLOPs (:func:`balanced_owners`,
deterministic, the same on every rank). Each rank casts its blocks of ``U`` to bf16 (the iteration's first operation, so
the values are exactly what one process would feed it) and one ``all_to_all_single``
sends every block to its matrix's owner; the owner concatenates the blocks into the full
matrix, runs Newton–Schulz once (no rank repeats another's work), and a second
``all_to_all_single`` returns each rank its block of ``O``. Communication per step and
mesh: **two all-to-alls**, in each of which a rank sends about ``(W−1)/W² · N`` bf16
values (N: elements of all the group's matrices), 1/W of what FSDP2's gradient
reduce-scatter of the same matrices already sends. Extra memory per rank: the bf16 full
matrices it owns (about N/W values) and the send/receive buffers (N/W each); the largest
Newton–Schulz load is within one matrix of the best possible, whatever the mix of
shapes (round-robin in parameter order is not, e.g. with 7 matrices per block on 64
ranks). Parameters that are plain tensors are whole on every rank. In one process they are
orthogonalised in place, as torch.optim.Muon does. Under DDP (``replicated_group``: the
ranks that hold the same all-reduced gradient) the work is split instead of repeated:
matrix j goes to an owner chosen by longest-processing-time-first on its Newton–Schulz
FLOPs (deterministic, the same on every rank), each owner orthogonalises only its
matrices, and one all-gather (``all_gather_single``) of the bf16 results (the iteration's own
output dtype, so exact) gives every rank every ``O``: each rank receives about N values
and computes about 1/W of the iterations.

The momentum buffer has the parameter's type (a ``DTensor`` under FSDP2), so
``torch.distributed.checkpoint`` saves and loads it sharded like any optimizer state;
the state dict has torch.optim.Muon's layout (``momentum_buffer`` per parameter).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.distributed as dist

Tensor = torch.Tensor

# torch.optim.Muon's defaults (Keller Jordan's quintic coefficients; eps of the norm).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7
NS_DTYPE = torch.bfloat16  # the iteration's dtype in torch.optim.Muon; also the wire dtype
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def zeropower_via_newtonschulz(update: Tensor, ns_coefficients=NS_COEFFICIENTS, ns_steps: int = NS_STEPS,
                               eps: float = EPS) -> Tensor:
    """The quintic Newton–Schulz orthogonalisation of one full (A, B) matrix, in bf16.

    Same operations in the same order as ``torch.optim.Muon`` (so equal bit for bit): the
    matrix is transposed to wide, scaled to Frobenius norm ≤ 1, then iterated
    ``X ← a X + (b XXᵀ + c (XXᵀ)²) X``.
    """
    if update.ndim != 2:
        raise ValueError(f"Newton–Schulz needs a 2-D matrix, got shape {tuple(update.shape)}")
    a, b, c = ns_coefficients
    x = update.to(NS_DTYPE)
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    x = x.div(x.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if tall else x


def adjusted_lr(lr: float, adjust_lr_fn: Optional[str], shape) -> float:
    """torch.optim.Muon's per-matrix lr scale: ``√max(1, A/B)`` (original) or ``0.2·√max(A, B)``."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * (0.2 * math.sqrt(max(rows, cols)))  # torch's order of operations: equal to the last bit
    return lr


class Muon(torch.optim.Optimizer):
    """``torch.optim.Muon``'s update; FSDP2-sharded matrices are orthogonalised whole.

    Arguments and defaults are torch.optim.Muon's. See the module docstring for the
    distributed scheme and its communication.
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients=NS_COEFFICIENTS, eps: float = EPS,
                 ns_steps: int = NS_STEPS, adjust_lr_fn: Optional[str] = None, replicated_group=None):
        if not lr >= 0:
            raise ValueError(f"Muon lr must be >= 0, got {lr}")
        if not momentum >= 0:
            raise ValueError(f"Muon momentum must be >= 0, got {momentum}")
        if not weight_decay >= 0:
            raise ValueError(f"Muon weight_decay must be >= 0, got {weight_decay}")
        if adjust_lr_fn not in ADJUST_LR_FNS:
            raise ValueError(f"Muon adjust_lr_fn={adjust_lr_fn!r} is unknown; valid: original, match_rms_adamw, None")
        if not 0 < ns_steps < 100:
            raise ValueError(f"Muon ns_steps={ns_steps} must be in 1..99")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=tuple(ns_coefficients), eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
        super().__init__(params, defaults)
        # ranks whose plain-tensor parameters and gradients are identical (DDP): split the
        # Newton–Schulz work across them; None (one process) orthogonalises everything here
        self.replicated_group = replicated_group
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D matrices only, got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        params, updates = [], []
        for p in group["params"]:
            if p.grad is None:  # the same on every rank under FSDP2 (grads come from a collective reduce-scatter)
                continue
            if p.grad.is_sparse or torch.is_complex(p):
                raise RuntimeError("Muon supports dense real parameters only")
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
            grad, buf = _local(p.grad), _local(state["momentum_buffer"])
            buf.lerp_(grad, 1 - mu)
            params.append(p)
            updates.append(grad.lerp(buf, mu) if group["nesterov"] else buf)

        ortho = _orthogonalise(params, updates, group["ns_coefficients"], group["ns_steps"], group["eps"],
                               self.replicated_group)
        for p, o in zip(params, ortho):
            local = _local(p)
            local.mul_(1 - lr * wd)
            local.add_(o, alpha=-adjusted_lr(lr, group["adjust_lr_fn"], p.shape))


# ---------------------------------------------------------------- sharded matrices


def _local(t: Tensor) -> Tensor:
    """This rank's block of a DTensor (a view sharing storage), or the tensor itself."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _orthogonalise(params: list[Tensor], updates: list[Tensor], coeffs, steps: int, eps: float,
                   replicated_group=None) -> list[Tensor]:
    """Newton–Schulz of each full matrix; returns each rank's local block of the result."""
    from torch.distributed.tensor import DTensor

    out: list[Optional[Tensor]] = [None] * len(params)
    by_mesh: dict = {}  # mesh -> [(index, shard dim)]
    whole: list[int] = []  # plain tensors and replicated DTensors: the full matrix is here
    for i, (p, u) in enumerate(zip(params, updates)):
        dim = _shard_dim(p) if isinstance(p, DTensor) else None
        if dim is None:
            whole.append(i)
        else:
            by_mesh.setdefault(p.device_mesh, []).append((i, dim))
    split = (replicated_group is not None and dist.is_initialized()
             and dist.get_world_size(replicated_group) > 1 and len(whole) > 1)
    if split:
        for i, o in zip(whole, _orthogonalise_replicated([updates[i] for i in whole], coeffs, steps, eps,
                                                         replicated_group)):
            out[i] = o
    else:
        for i in whole:
            out[i] = zeropower_via_newtonschulz(updates[i], coeffs, steps, eps)
    for mesh, items in by_mesh.items():
        for i, o in _orthogonalise_sharded(mesh, [(params[i], updates[i], d) for i, d in items], coeffs, steps, eps):
            out[items[i][0]] = o
    return out


def _shard_dim(p) -> Optional[int]:
    """The dim a DTensor is sharded on (None if replicated); other layouts are refused."""
    from torch.distributed.tensor import Replicate, Shard

    if p.device_mesh.ndim != 1:
        raise ValueError(f"Muon supports DTensors on a 1-D mesh (FSDP2), got a {p.device_mesh.ndim}-D mesh")
    (placement,) = p.placements
    if isinstance(placement, Replicate):
        return None
    if isinstance(placement, Shard):
        return placement.dim
    raise ValueError(f"Muon cannot orthogonalise a parameter with placement {placement}; valid: Shard, Replicate")


def _block_sizes(n: int, world: int) -> list[int]:
    """Rows (or columns) of each rank's block: ``torch.chunk``'s split, which FSDP2 and DTensor use."""
    chunk = -(-n // world)
    return [max(0, min(n, (r + 1) * chunk) - r * chunk) for r in range(world)]


def _orthogonalise_sharded(mesh, items, coeffs, steps, eps) -> list[tuple[int, Tensor]]:
    """``items``: [(param, local update, shard dim)] on ``mesh``; returns [(position, local block of O)].

    Matrix j goes to rank ``balanced_owners(shapes, W)[j]``. All-to-all #1 sends every local block (bf16) to its
    owner; the owner rebuilds the full matrix and runs Newton–Schulz; all-to-all #2 sends
    each rank its block of the result.
    """
    group, world, rank = mesh.get_group(), mesh.size(), mesh.get_local_rank()
    owner = balanced_owners([tuple(p.shape) for p, _, _ in items], world)
    blocks = [_block_sizes(p.shape[d], world) for p, _, d in items]  # blocks[j][r]: rank r's extent of matrix j
    numel = [[b * (p.numel() // p.shape[d]) for b in blocks[j]] for j, (p, _, d) in enumerate(items)]
    for j, (p, u, d) in enumerate(items):
        if u.shape[d] != blocks[j][rank]:
            raise RuntimeError(f"Muon: local block of a {tuple(p.shape)} matrix has {u.shape[d]} rows on dim {d}, "
                               f"expected {blocks[j][rank]} (torch.chunk split over {world} ranks)")
    device = items[0][1].device
    mine = [j for j in range(len(items)) if owner[j] == rank]

    # all-to-all #1: local blocks of U → owners (sent to rank r: my blocks of r's matrices, in order)
    send = [items[j][1].to(NS_DTYPE).reshape(-1) for r in range(world) for j in range(len(items)) if owner[j] == r]
    send_sizes = [sum(numel[j][rank] for j in range(len(items)) if owner[j] == r) for r in range(world)]
    recv_sizes = [sum(numel[j][s] for j in mine) for s in range(world)]
    received = _all_to_all(send, send_sizes, recv_sizes, device, group)

    # rebuild each owned matrix from its W blocks (received from rank s in order of `mine`)
    pieces: dict[int, list[Tensor]] = {j: [] for j in mine}
    offset = 0
    for s in range(world):
        for j in mine:
            p, _, d = items[j]
            shape = list(p.shape)
            shape[d] = blocks[j][s]
            pieces[j].append(received[offset:offset + numel[j][s]].view(shape))
            offset += numel[j][s]
    ortho = {j: zeropower_via_newtonschulz(torch.cat(pieces[j], dim=items[j][2]), coeffs, steps, eps) for j in mine}

    # all-to-all #2: each owner returns rank r its block of O (in the order rank r expects)
    send = [ortho[j].split(blocks[j], dim=items[j][2])[r].reshape(-1) for r in range(world) for j in mine]
    received = _all_to_all(send, recv_sizes, send_sizes, device, group)
    out, offset = [], 0
    for r in range(world):
        for j in range(len(items)):
            if owner[j] == r:
                out.append((j, received[offset:offset + numel[j][rank]].view(items[j][1].shape)))
                offset += numel[j][rank]
    return out


def _all_to_all(send: list[Tensor], send_sizes: list[int], recv_sizes: list[int], device, group) -> Tensor:
    flat = torch.cat(send) if send else torch.empty(0, dtype=NS_DTYPE, device=device)
    recv = torch.empty(sum(recv_sizes), dtype=NS_DTYPE, device=device)
    dist.all_to_all_single(recv, flat, output_split_sizes=recv_sizes, input_split_sizes=send_sizes, group=group)
    return recv


# ---------------------------------------------------------------- replicated matrices (DDP)


def ns_flops(shape) -> int:
    """Multiply-adds ×2 of one Newton–Schulz step on an (A, B) matrix (wide side B): XXᵀ, the
    polynomial's square and the product with X."""
    a, b = sorted(shape[:2])
    return 2 * (2 * a * a * b + a ** 3)


def balanced_owners(shapes: list, world: int) -> list[int]:
    """Owner rank of each matrix: longest-processing-time-first on :func:`ns_flops`, ties by
    position, so every rank computes the same assignment and the largest load is within
    one matrix of the best possible."""
    load = [0] * world
    owner = [0] * len(shapes)
    for j in sorted(range(len(shapes)), key=lambda j: (-ns_flops(shapes[j]), j)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[j] = r
        load[r] += ns_flops(shapes[j])
    return owner


def _orthogonalise_replicated(updates: list[Tensor], coeffs, steps: int, eps: float, group) -> list[Tensor]:
    """Newton–Schulz of matrices every rank of ``group`` holds whole and equal: each rank
    orthogonalises the matrices it owns; one all-gather of the bf16 results (each rank's
    share padded to the largest) hands every rank all of them."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    owner = balanced_owners([u.shape for u in updates], world)
    mine = [j for j in range(len(updates)) if owner[j] == rank]
    sizes = [sum(updates[j].numel() for j in range(len(updates)) if owner[j] == r) for r in range(world)]
    width = max(sizes)
    device = updates[0].device
    send = torch.zeros(width, dtype=NS_DTYPE, device=device)
    offset = 0
    for j in mine:
        o = zeropower_via_newtonschulz(updates[j], coeffs, steps, eps)
        send[offset:offset + o.numel()] = o.reshape(-1)
        offset += o.numel()
    recv = torch.empty(world * width, dtype=NS_DTYPE, device=device)
    # all_gather_single (torch ≥ 2.13) is all_gather_into_tensor renamed; the old name warns there
    getattr(dist, "all_gather_single", dist.all_gather_into_tensor)(recv, send, group=group)
    out: list[Optional[Tensor]] = [None] * len(updates)
    for r in range(world):
        offset = r * width
        for j in range(len(updates)):
            if owner[j] == r:
                n = updates[j].numel()
                out[j] = recv[offset:offset + n].view(updates[j].shape)
                offset += n
    return out

