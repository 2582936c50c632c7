"""Activation mixing ``h = Σ_k c_k ⊙ σ_k(z)``: the memory-efficient op and its reference.

Shapes (legend): N tokens, G coefficient groups, H hidden units per group (m = G·H),
K activations in the dictionary.

* MoA: ``c`` is per token, ``(N, G, K)``; group g's gates scale units ``[g·H, (g+1)·H)``.
* LA, layer granularity: ``c`` is ``(1, 1, K)`` (shared by every token and unit).
* LA, channel granularity: ``c`` is ``(1, m, K)``, i.e. G = m groups of one unit.

A plain autograd graph of the sum keeps each ``σ_k(z)`` (and often its input) for
backward: K extra tensors of the hidden size per layer. :class:`MixActivations` keeps
only ``z`` and ``c`` (what a fixed-σ baseline keeps anyway, plus a tiny ``c``) and
recomputes ``σ_k(z)`` and ``σ_k'(z)`` in backward (MOA.md §1, "Efficiency"). It is plain
torch code, so ``torch.compile`` traces it and fuses the loop over k into one kernel.
"""

from __future__ import annotations

import torch

from moa.nn.activations import ACTIVATIONS

Tensor = torch.Tensor


class MixActivations(torch.autograd.Function):
    """``h_NGH = Σ_k c_NGK[..., k, None] * σ_k(z_NGH)``; saves only z and c."""

    @staticmethod
    def forward(ctx, z_NGH: Tensor, c_NGK: Tensor, names: tuple[str, ...]) -> Tensor:
        ctx.save_for_backward(z_NGH, c_NGK)
        ctx.names = names
        h_NGH = ACTIVATIONS[names[0]](z_NGH) * c_NGK[..., 0:1]
        for k in range(1, len(names)):
            h_NGH = h_NGH + ACTIVATIONS[names[k]](z_NGH) * c_NGK[..., k : k + 1]
        return h_NGH

    @staticmethod
    def backward(ctx, grad_NGH: Tensor):
        z_NGH, c_NGK = ctx.saved_tensors
        need_z, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        slope_NGH = None  # Σ_k c_k σ_k'(z)
        grads_c = []
        for k, name in enumerate(ctx.names):
            value, deriv = ACTIVATIONS[name].value_and_derivative(z_NGH)
            if need_z:
                term = deriv * c_NGK[..., k : k + 1]
                slope_NGH = term if slope_NGH is None else slope_NGH + term
            if need_c:
                grads_c.append((grad_NGH * value).sum(dim=-1))
        grad_z = grad_NGH * slope_NGH if need_z else None
        grad_c = None
        if need_c:
            grad_c = torch.stack(grads_c, dim=-1)
            if c_NGK.shape[0] != grad_c.shape[0]:  # shared (LA) coefficients: sum over tokens
                grad_c = grad_c.sum(dim=0, keepdim=True)
        return grad_z, grad_c, None


def _grouped(z: Tensor, coef: Tensor) -> tuple[Tensor, Tensor]:
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
    return z.reshape(-1, groups, m // groups), coef.to(z.dtype)


def mix_activations(z: Tensor, coef: Tensor, names: tuple[str, ...]) -> Tensor:
    """Memory-efficient ``Σ_k c_k σ_k(z)``; see the module docstring for shapes.

    ``z``: (..., m). ``coef``: (K,), (G, K) shared by all tokens, or (..., G, K) per token.
    Returns a tensor shaped like ``z``.
    """
    z_NGH, c_NGK = _grouped(z, coef)
    if c_NGK.shape[-1] != len(names):
        raise ValueError(f"coef has {c_NGK.shape[-1]} coefficients but {len(names)} activations")
    return MixActivations.apply(z_NGH, c_NGK, tuple(names)).reshape(z.shape)


def mix_activations_reference(z: Tensor, coef: Tensor, names: tuple[str, ...]) -> Tensor:
    """The slow reference: an explicit per-activation sum under plain autograd."""
    z_NGH, c_NGK = _grouped(z, coef)
    h_NGH = sum(ACTIVATIONS[n](z_NGH) * c_NGK[..., k : k + 1] for k, n in enumerate(names))
    return h_NGH.reshape(z.shape)
