"""``y = (Σ_k c_k σ_k(z) ⊙ v) W_outᵀ`` with a fused Triton kernel for the mix; its reference.

Shapes (legend): N tokens, M hidden units (M = G·H), G coefficient groups of H units,
K activations in the dictionary, D model width, Nc ∈ {1, N} rows of coefficients.

* ``z_NM``, ``v_NM``: the FFN's pre-activation ``w1 x`` and, for Type-II, ``w2 x``.
* ``c_NcGK``: MoA gates per token (Nc = N); LA coefficients shared by every token
  (Nc = 1), layer granularity G = 1, channel granularity G = M (H = 1).
* ``p_NM = (Σ_k c_k σ_k(z)) ⊙ v`` (no ``⊙ v`` for Type-I), the input of ``W_out``.

The mix is memory-bound: the forward kernel reads ``z``, ``v`` and the coefficients once
and writes ``p`` once, the bytes a fused SwiGLU moves; its extra work is K activations
per element in fp32 registers. The backward kernel
recomputes ``σ_k(z)`` and ``σ_k'(z)`` from the saved ``z`` and writes ``dL/dz`` (into the
buffer of ``dL/dp``), ``dL/dv``, ``p`` (for ``W_out``'s weight gradient) and ``dL/dc``
reduced over each group's units with fp32 (float64 inputs: float64) accumulation. Only
``z, c, v`` (and ``W_out``) are saved for backward, as in :class:`moa.nn.MixProject`;
the two matmuls stay cuBLAS.

:func:`mix_project_triton` is a ``torch.library`` custom op with a fake (meta) kernel and
autograd, so ``torch.compile`` treats it as one opaque call. The kernels themselves live
in :mod:`moa.nn.triton_kernels`, imported on first use (``moa.nn`` imports only torch).
Every activation of :data:`KERNEL_ACTIVATIONS` has its value and derivative written out
in the kernel; any other name is a one-line error. The references right below the ops,
:func:`mix_forward_reference` / :func:`mix_backward_reference`, are the explicit sum
under plain autograd; the tests compare the kernels with them.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

import torch

from moa.nn.activations import ACTIVATIONS
from moa.nn.functional import _grouped

Tensor = torch.Tensor

#: Activations with a value and derivative formula in the Triton kernel; the position is
#: the code the kernel switches on (:func:`moa.nn.triton_kernels._value_and_derivative`).
KERNEL_ACTIVATIONS: tuple[str, ...] = (
    "relu", "gelu", "gelu_tanh", "silu", "relu2", "tanh", "sigmoid", "softplus", "identity", "leaky_relu",
)
#: The kernel unrolls its loop over the dictionary; one slot per registry entry.
MAX_ACTIVATIONS = len(KERNEL_ACTIVATIONS)

#: Triton is installed (checked without importing it).
HAS_TRITON = importlib.util.find_spec("triton") is not None


def kernel_codes(names) -> tuple[int, ...]:
    """Kernel codes of ``names``; a name without a kernel formula is a one-line error."""
    missing = [n for n in names if n not in KERNEL_ACTIVATIONS]
    if missing:
        raise ValueError(f"activation {missing[0]!r} has no Triton kernel formula; impl='triton' supports: "
                         f"{', '.join(KERNEL_ACTIVATIONS)} (use impl='fused' for the others)")
    if not 1 <= len(names) <= MAX_ACTIVATIONS:
        raise ValueError(f"impl='triton' mixes 1 to {MAX_ACTIVATIONS} activations, got {len(names)}")
    return tuple(KERNEL_ACTIVATIONS.index(n) for n in names)


def triton_supports(names) -> bool:
    """Whether :func:`mix_project_triton` can run this dictionary (for ``impl="auto"``)."""
    return HAS_TRITON and 1 <= len(names) <= MAX_ACTIVATIONS and all(n in KERNEL_ACTIVATIONS for n in names)


def _kernels():
    try:
        from moa.nn import triton_kernels
    except ModuleNotFoundError as e:
        if e.name != "triton":
            raise
        raise ModuleNotFoundError("impl='triton' needs the triton package: pip install -e \".[test]\" "
                                  "(CUDA builds of torch ship it); or use impl='fused'") from None
    return triton_kernels


def _split(names: str) -> tuple[str, ...]:
    return tuple(names.split(","))


# ------------------------------------------------------------------ the custom ops

@torch.library.custom_op("moa::mix_project_triton", mutates_args=())
def _mix_project_op(z_NM: Tensor, c_NcGK: Tensor, v_NM: Optional[Tensor], w_out_DM: Tensor, names: str) -> Tensor:
    codes = kernel_codes(_split(names))
    with torch.autocast(z_NM.device.type, enabled=False):  # the op fixes its own dtypes
        p_NM = _kernels().mix_forward(z_NM, c_NcGK, v_NM, codes)
        return torch.mm(p_NM, w_out_DM.to(p_NM.dtype).t())


@_mix_project_op.register_fake
def _(z_NM, c_NcGK, v_NM, w_out_DM, names):
    return z_NM.new_empty(z_NM.shape[0], w_out_DM.shape[0])


@torch.library.custom_op("moa::mix_project_triton_backward", mutates_args=())
def _mix_project_backward_op(grad_y_ND: Tensor, z_NM: Tensor, c_NcGK: Tensor, v_NM: Optional[Tensor],
                             w_out_DM: Tensor, names: str) -> list[Tensor]:
    """``[dz, dc, dw]`` (Type-I) or ``[dz, dc, dv, dw]`` (Type-II)."""
    codes = kernel_codes(_split(names))
    with torch.autocast(z_NM.device.type, enabled=False):
        grad_p_NM = torch.mm(grad_y_ND, w_out_DM.to(grad_y_ND.dtype))
        grad_z, grad_v, grad_c, p_NM = _kernels().mix_backward(z_NM, c_NcGK, v_NM, grad_p_NM, codes)
        grad_w = torch.mm(grad_y_ND.t(), p_NM.to(grad_y_ND.dtype)).to(w_out_DM.dtype)
    return [grad_z, grad_c, grad_w] if v_NM is None else [grad_z, grad_c, grad_v, grad_w]


@_mix_project_backward_op.register_fake
def _(grad_y_ND, z_NM, c_NcGK, v_NM, w_out_DM, names):
    # contiguous, as the real kernel returns them (empty_like would copy an input's strides)
    grads = [z_NM.new_empty(z_NM.shape), c_NcGK.new_empty(c_NcGK.shape), w_out_DM.new_empty(w_out_DM.shape)]
    return grads if v_NM is None else grads[:2] + [v_NM.new_empty(v_NM.shape)] + grads[2:]


def _setup_context(ctx, inputs, output):
    z_NM, c_NcGK, v_NM, w_out_DM, names = inputs
    ctx.save_for_backward(z_NM, c_NcGK, v_NM, w_out_DM)
    ctx.names = names


def _backward(ctx, grad_y_ND):
    z_NM, c_NcGK, v_NM, w_out_DM = ctx.saved_tensors
    grads = torch.ops.moa.mix_project_triton_backward(grad_y_ND, z_NM, c_NcGK, v_NM, w_out_DM, ctx.names)
    if v_NM is None:
        grad_z, grad_c, grad_w = grads
        grad_v = None
    else:
        grad_z, grad_c, grad_v, grad_w = grads
    return grad_z, grad_c, grad_v, grad_w, None


_mix_project_op.register_autograd(_backward, setup_context=_setup_context)


def mix_project_triton(z: Tensor, coef: Tensor, names: tuple[str, ...], w_out: Tensor,
                       v: Optional[Tensor] = None) -> Tensor:
    """:func:`moa.nn.mix_project` through the Triton kernels (same arguments, same result).

    ``z, v``: (..., m); ``coef``: (K,), (G, K) shared by all tokens, or (..., G, K) per
    token; ``w_out``: (D, m). Returns (..., D). CUDA tensors (CPU only under Triton's
    interpreter, ``TRITON_INTERPRET=1``).
    """
    kernel_codes(names)
    z_NGH, c_NcGK = _grouped(z, coef, names)
    n, m = z_NGH.shape[0], z.shape[-1]
    v_NM = None if v is None else v.reshape(n, m)
    y_ND = torch.ops.moa.mix_project_triton(z_NGH.reshape(n, m), c_NcGK, v_NM, w_out, ",".join(names))
    return y_ND.view(*z.shape[:-1], w_out.shape[0])


# ------------------------------------------------------------------ kernel-level references

def mix_forward_reference(z_NM: Tensor, c_NcGK: Tensor, v_NM: Optional[Tensor], names) -> Tensor:
    """The forward kernel's ``p_NM``, written out: ``(Σ_k c_k σ_k(z)) ⊙ v``."""
    n, m = z_NM.shape
    z_NGH = z_NM.view(n, c_NcGK.shape[1], -1)
    h_NGH = sum(ACTIVATIONS[name](z_NGH) * c_NcGK[..., k : k + 1] for k, name in enumerate(names))
    h_NM = h_NGH.reshape(n, m)
    return h_NM if v_NM is None else h_NM * v_NM


def mix_backward_reference(z_NM: Tensor, c_NcGK: Tensor, v_NM: Optional[Tensor], grad_p_NM: Tensor, names):
    """The backward kernel's ``(dz, dv or None, dc, p)`` by plain autograd of the reference."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in (z_NM, c_NcGK) + (() if v_NM is None else (v_NM,))]
        p_NM = mix_forward_reference(leaves[0], leaves[1], leaves[2] if v_NM is not None else None, names)
        grads = torch.autograd.grad(p_NM, leaves, grad_p_NM)
    grad_v = grads[2] if v_NM is not None else None
    return grads[0], grad_v, grads[1], p_NM.detach()
