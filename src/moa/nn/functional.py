"""Activation mixing ``h = Σ_k c_k ⊙ σ_k(z)``: memory-efficient ops and their reference.

Shapes (legend): N tokens, G coefficient groups, H hidden units per group (m = G·H),
K activations in the dictionary, D model width.

* MoA: ``c`` is per token, ``(N, G, K)``; group g's gates scale units ``[g·H, (g+1)·H)``.
* LA, layer granularity: ``c`` is ``(1, 1, K)`` (shared by every token and unit).
* LA, channel granularity: ``c`` is ``(1, m, K)``, i.e. G = m groups of one unit.

A plain autograd graph of the sum keeps each ``σ_k(z)`` (and often its input) for
backward: K extra hidden-size tensors per layer (docs/DESIGN.md §3.4). Two custom
autograd functions avoid that by recomputing ``σ_k(z)`` and ``σ_k'(z)`` in backward:

* :class:`MixActivations` returns ``h`` and saves only ``z`` and ``c``.
* :class:`MixProject` also applies the FFN's output projection (and the GLU product),
  ``y = W_out (h ⊙ v)``, saving ``z, c, v``: the mixed ``h`` is never stored, so a
  Type-I MoA keeps one hidden-size tensor (``z``), like a ReLU baseline, and a Type-II
  MoA keeps two (``z, v``), fewer than eager SwiGLU's four.

Both are plain torch code, so ``torch.compile`` traces them and fuses the loop over k.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from moa.nn.activations import ACTIVATIONS

Tensor = torch.Tensor


def _mix_forward(z_NGH: Tensor, c_NGK: Tensor, names: tuple[str, ...]) -> Tensor:
    h_NGH = ACTIVATIONS[names[0]](z_NGH) * c_NGK[..., 0:1]
    for k in range(1, len(names)):
        # in place on our own temporary: no autograd graph is recorded inside the op
        h_NGH.addcmul_(ACTIVATIONS[names[k]](z_NGH), c_NGK[..., k : k + 1])
    return h_NGH


def _mix_backward(z_NGH, c_NGK, names, grad_h_NGH, need_z: bool, need_c: bool, need_h: bool):
    """One recompute pass: ``(h or None, dL/dz or None, dL/dc or None)``.

    dL/dz = Σ_k σ_k'(z) ⊙ (c_k ⊙ dL/dh), each term by torch's fused backward kernel;
    dL/dc_k = Σ_H dL/dh ⊙ σ_k(z); h (if asked, for the output projection's gradient)
    is re-accumulated from the same σ_k(z).
    """
    h_NGH = grad_z = None
    grads_c = []
    for k, name in enumerate(names):
        act = ACTIVATIONS[name]
        c_k = c_NGK[..., k : k + 1]
        if need_z:
            term = act.vjp(grad_h_NGH * c_k, z_NGH)
            grad_z = term if grad_z is None else grad_z.add_(term)
        if need_c or need_h:
            value = act(z_NGH)
            if value is z_NGH:  # identity: never modify the saved input in place
                value = value.clone()
            if need_h:
                h_NGH = value * c_k if h_NGH is None else h_NGH.addcmul_(value, c_k)
            if need_c:
                grads_c.append(value.mul_(grad_h_NGH).sum(dim=-1))
    grad_c = None
    if need_c:
        grad_c = torch.stack(grads_c, dim=-1)
        if c_NGK.shape[0] != grad_c.shape[0]:  # shared (LA) coefficients: sum over tokens
            grad_c = grad_c.sum(dim=0, keepdim=True)
    return h_NGH, grad_z, grad_c


class MixActivations(torch.autograd.Function):
    """``h_NGH = Σ_k c_NGK[..., k, None] * σ_k(z_NGH)``; saves only z and c."""

    @staticmethod
    def forward(ctx, z_NGH: Tensor, c_NGK: Tensor, names: tuple[str, ...]) -> Tensor:
        ctx.save_for_backward(z_NGH, c_NGK)
        ctx.names = names
        return _mix_forward(z_NGH, c_NGK, names)

    @staticmethod
    @torch.autograd.function.once_differentiable  # a double backward errors clearly
    def backward(ctx, grad_h_NGH: Tensor):
        z_NGH, c_NGK = ctx.saved_tensors
        _, grad_z, grad_c = _mix_backward(z_NGH, c_NGK, ctx.names, grad_h_NGH,
                                          ctx.needs_input_grad[0], ctx.needs_input_grad[1], False)
        return grad_z, grad_c, None


def _chunk_rows(z_NGH: Tensor) -> int:
    """Tokens per chunk in :class:`MixProject`: all at once under torch.compile (inductor
    fuses the pointwise work itself), else chunks of a fixed number of elements (2 MB fp32
    on CPU, 16 MB on GPU), so recomputing K activations costs no hidden-size buffers once
    the hidden tensor is several chunks long; smaller layers trade memory for speed."""
    n = z_NGH.shape[0]
    if torch.compiler.is_compiling():
        return n
    budget = CHUNK_ELEMENTS_CUDA if z_NGH.is_cuda else CHUNK_ELEMENTS_CPU
    return max(1, min(n, budget // max(1, z_NGH.shape[1] * z_NGH.shape[2])))


#: elements of one (chunk, m) temporary in :class:`MixProject`'s eager chunked loop
CHUNK_ELEMENTS_CPU = 1 << 19  # 2 MB fp32: the best time/memory trade-off measured on 2 cores
CHUNK_ELEMENTS_CUDA = 1 << 22


def _chunks(n, rows: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each chunk of ``rows`` tokens; always at least one (``n = 0``:
    one empty chunk). One chunk whenever ``rows >= n``, without a Python ``range`` over
    ``n``: under torch.compile ``rows = n`` is a symbolic size, and iterating a range
    over it would specialise the graph to each token count (a recompile per MoE routing)."""
    if rows >= n:
        return [(0, n)]
    return [(s, min(n, s + rows)) for s in range(0, n, rows)]


class MixProject(torch.autograd.Function):
    """``y_ND = (h ⊙ v) W_outᵀ`` with ``h = Σ_k c_k σ_k(z)`` (``v=None``: no GLU product).

    Saves ``z, c, v, W_out``. Forward and backward run over chunks of tokens, so the
    K activations, ``h`` and their gradients only ever exist chunk by chunk; backward
    writes dL/dz into the buffer of dL/dp. Memory: Type-I keeps ``z`` (as ReLU keeps its
    output), Type-II keeps ``z, v``.
    """

    @staticmethod
    def forward(ctx, z_NGH: Tensor, c_NGK: Tensor, v_NGH: Optional[Tensor], w_out_DM: Tensor,
                names: tuple[str, ...]) -> Tensor:
        ctx.save_for_backward(z_NGH, c_NGK, v_NGH, w_out_DM)
        ctx.names = names
        n, rows = z_NGH.shape[0], _chunk_rows(z_NGH)
        w_DM = w_out_DM.to(z_NGH.dtype)
        y_ND = z_NGH.new_empty(n, w_DM.shape[0]) if rows < n else None
        for s, e in _chunks(n, rows):
            p = _mix_forward(z_NGH[s:e], c_NGK if c_NGK.shape[0] == 1 else c_NGK[s:e], names)
            if v_NGH is not None:
                p = p.mul_(v_NGH[s:e]) if rows < n else p * v_NGH
            if y_ND is None:
                return F.linear(p.flatten(1), w_DM)
            torch.mm(p.flatten(1), w_DM.t(), out=y_ND[s:e])
        return y_ND

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y_ND: Tensor):
        z_NGH, c_NGK, v_NGH, w_out_DM = ctx.saved_tensors
        need_z, need_c, need_v, need_w = ctx.needs_input_grad[:4]
        need_h = need_v or need_w
        n, rows = z_NGH.shape[0], _chunk_rows(z_NGH)
        shared_c = c_NGK.shape[0] == 1
        grad_p_NGH = (grad_y_ND @ w_out_DM.to(grad_y_ND.dtype)).view_as(z_NGH)
        grad_v = torch.empty_like(v_NGH) if need_v else None
        acc_dtype = torch.promote_types(grad_y_ND.dtype, torch.float32)  # bf16 sums over chunks drift
        grad_w = torch.zeros(w_out_DM.shape, dtype=acc_dtype, device=grad_y_ND.device) if need_w else None
        grads_c = []
        for s, e in _chunks(n, rows):
            z, gp = z_NGH[s:e], grad_p_NGH[s:e]
            v = None if v_NGH is None else v_NGH[s:e]
            gh = gp if v is None else gp * v
            h, gz, gc = _mix_backward(z, c_NGK if shared_c else c_NGK[s:e], ctx.names, gh, need_z, need_c, need_h)
            if need_c:
                grads_c.append(gc)
            if need_v:
                torch.mul(gp, h, out=grad_v[s:e])
            if need_w:
                p = h if v is None else h.mul_(v)
                gw = grad_y_ND[s:e].t() @ p.flatten(1)
                grad_w = gw if rows >= n else grad_w.add_(gw.to(grad_w.dtype))
            if need_z:
                gp.copy_(gz)  # dL/dp of these rows is used up: its buffer takes dL/dz
        grad_c = None
        if need_c:
            grad_c = torch.stack(grads_c).sum(0) if shared_c else torch.cat(grads_c)
        grad_w = grad_w.to(w_out_DM.dtype) if need_w else None
        return (grad_p_NGH if need_z else None), grad_c, grad_v, grad_w, None


def _grouped(z: Tensor, coef: Tensor, names) -> tuple[Tensor, Tensor]:
    """View ``z (..., m)`` as (N, G, H) and ``coef`` as (N or 1, G, K)."""
    m = z.shape[-1]
    if coef.dim() == 1:  # (K,) shared by all units
        coef = coef.view(1, 1, -1)
    elif coef.dim() == 2:  # (G, K) shared by all tokens
        coef = coef.unsqueeze(0)
    else:  # (..., G, K) per token
        if coef.shape[:-2] != z.shape[:-1]:
            raise ValueError(f"coef batch shape {tuple(coef.shape[:-2])} != z batch shape {tuple(z.shape[:-1])}")
        coef = coef.reshape(-1, coef.shape[-2], coef.shape[-1])
    groups = coef.shape[1]
    if m % groups:
        raise ValueError(f"hidden width {m} is not divisible by {groups} coefficient groups")
    if coef.shape[-1] != len(names):
        raise ValueError(f"coef has {coef.shape[-1]} coefficients but {len(names)} activations")
    return z.reshape(-1, groups, m // groups), coef.to(z.dtype)


def mix_activations(z: Tensor, coef: Tensor, names: tuple[str, ...]) -> Tensor:
    """Memory-efficient ``Σ_k c_k σ_k(z)``; see the module docstring for shapes.

    ``z``: (..., m). ``coef``: (K,), (G, K) shared by all tokens, or (..., G, K) per token.
    Returns a tensor shaped like ``z``.
    """
    z_NGH, c_NGK = _grouped(z, coef, names)
    return MixActivations.apply(z_NGH, c_NGK, tuple(names)).reshape(z.shape)


def mix_activations_reference(z: Tensor, coef: Tensor, names: tuple[str, ...]) -> Tensor:
    """The slow reference: an explicit per-activation sum under plain autograd."""
    z_NGH, c_NGK = _grouped(z, coef, names)
    h_NGH = sum(ACTIVATIONS[n](z_NGH) * c_NGK[..., k : k + 1] for k, n in enumerate(names))
    return h_NGH.reshape(z.shape)


def mix_project(z: Tensor, coef: Tensor, names: tuple[str, ...], w_out: Tensor,
                v: Optional[Tensor] = None) -> Tensor:
    """Memory-efficient ``(Σ_k c_k σ_k(z) ⊙ v) @ w_outᵀ`` (``v=None`` for Type-I).

    ``z, v``: (..., m); ``w_out``: (D, m) (an ``nn.Linear(m, D)`` weight). Returns (..., D).
    """
    z_NGH, c_NGK = _grouped(z, coef, names)
    v_NGH = None if v is None else v.reshape(z_NGH.shape)
    y_ND = MixProject.apply(z_NGH, c_NGK, v_NGH, w_out, tuple(names))
    return y_ND.view(*z.shape[:-1], w_out.shape[0])


def mix_project_reference(z: Tensor, coef: Tensor, names: tuple[str, ...], w_out: Tensor,
                          v: Optional[Tensor] = None) -> Tensor:
    """Reference for :func:`mix_project`, under plain autograd."""
    h = mix_activations_reference(z, coef, names)
    return F.linear(h if v is None else h * v, w_out)
