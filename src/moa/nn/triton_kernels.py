"""Triton kernels of the activation mix; imported on first use by :mod:`moa.nn.triton_mix`.

Shapes as in :mod:`moa.nn.triton_mix`: ``z_NM, v_NM, p_NM`` contiguous (N, M) with
M = G·H; coefficients ``c_NcGK`` with Nc ∈ {1, N} (stride 0 over tokens when shared).

* ``_mix_fwd_kernel``: one (BLOCK_N, BLOCK_M) tile per program; ``p = (Σ_k c_k σ_k(z)) ⊙ v``.
* ``_mix_bwd_rows_kernel`` (per-token coefficients, MoA): one program per (row block,
  group) walks the group's H units, so ``dL/dc[n, g, k] = Σ_units dL/dh ⊙ σ_k(z)`` is a
  per-row sum kept in registers: no atomics, deterministic.
* ``_mix_bwd_shared_kernel`` (coefficients shared by all tokens, LA): one program per
  (column block, row split) sums over its rows per unit; torch adds the few splits and
  the units of each group.

Math is fp32 for bf16/fp16/fp32 inputs and fp64 for fp64 inputs (F64), with fp32/fp64
accumulation of the coefficient gradients. The activation formulas are those of
:mod:`moa.nn.activations`, including torch's conventions at kinks (relu'(0) = 0) and
softplus' threshold; tanh is written as ``2·sigmoid(2z) - 1``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from moa.nn.activations import LEAKY_RELU_SLOPE, SOFTPLUS_THRESHOLD
from moa.nn.triton_mix import MAX_ACTIVATIONS

Tensor = torch.Tensor

_LEAKY_SLOPE = tl.constexpr(LEAKY_RELU_SLOPE)
_SOFTPLUS_THRESHOLD = tl.constexpr(SOFTPLUS_THRESHOLD)
_SQRT1_2 = tl.constexpr(0.7071067811865476)  # 1/√2
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)  # 1/√(2π)
_SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)  # √(2/π)
_GELU_TANH_C = tl.constexpr(0.044715)
# constants multiply from the right (tensor * constant): the interpreter cannot multiply a
# constexpr by a tensor

# Elements per program and step: 8 (forward) and 4 (backward) per thread at 4 warps keep
# the backward's live values (z, v, dL/dp, dL/dh, dL/dz, h, K partial sums) in registers
# without spills at K = 4 on sm_90 (ptxas -v on the bf16 kernels: 56 registers forward,
# 64 and 106 backward; 2048-element backward tiles spilled).
FWD_TILE_ELEMENTS = 1024
BWD_TILE_ELEMENTS = 512
NUM_WARPS = 4


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _tanh(z):
    return 2.0 * _sigmoid(2.0 * z) - 1.0


@triton.jit
def _value(z, CODE: tl.constexpr):
    """σ(z) for the activation ``KERNEL_ACTIVATIONS[CODE]``."""
    if CODE == 0:  # relu
        s = tl.maximum(z, 0.0)
    elif CODE == 1:  # gelu (erf)
        s = 0.5 * z * (1.0 + tl.erf(z * _SQRT1_2))
    elif CODE == 2:  # gelu_tanh
        s = 0.5 * z * (1.0 + _tanh((z + z * z * z * _GELU_TANH_C) * _SQRT_2_OVER_PI))
    elif CODE == 3:  # silu
        s = z * _sigmoid(z)
    elif CODE == 4:  # relu2
        r = tl.maximum(z, 0.0)
        s = r * r
    elif CODE == 5:  # tanh
        s = _tanh(z)
    elif CODE == 6:  # sigmoid
        s = _sigmoid(z)
    elif CODE == 7:  # softplus: z above the threshold, else log(1 + e^z) without overflow
        s = tl.where(z > _SOFTPLUS_THRESHOLD, z, tl.maximum(z, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(z))))
    elif CODE == 8:  # identity
        s = z
    else:  # leaky_relu
        s = tl.where(z > 0.0, z, z * _LEAKY_SLOPE)
    return s


@triton.jit
def _value_and_derivative(z, CODE: tl.constexpr):
    """(σ(z), σ'(z)) for the activation ``KERNEL_ACTIVATIONS[CODE]``."""
    one = tl.zeros_like(z) + 1.0
    if CODE == 0:  # relu; σ'(0) = 0 like torch's threshold_backward
        s = tl.maximum(z, 0.0)
        d = tl.where(z > 0.0, one, 0.0 * one)
    elif CODE == 1:  # gelu: Φ(z) + z φ(z)
        cdf = 0.5 * (1.0 + tl.erf(z * _SQRT1_2))
        s = z * cdf
        d = cdf + z * _INV_SQRT_2PI * tl.exp(-0.5 * z * z)
    elif CODE == 2:  # gelu_tanh
        t = _tanh((z + z * z * z * _GELU_TANH_C) * _SQRT_2_OVER_PI)
        s = 0.5 * z * (1.0 + t)
        d = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + z * z * _GELU_TANH_C * 3.0)
    elif CODE == 3:  # silu: σ(z)(1 + z(1 - σ(z)))
        sg = _sigmoid(z)
        s = z * sg
        d = sg * (1.0 + z * (1.0 - sg))
    elif CODE == 4:  # relu2
        r = tl.maximum(z, 0.0)
        s = r * r
        d = 2.0 * r
    elif CODE == 5:  # tanh
        s = _tanh(z)
        d = 1.0 - s * s
    elif CODE == 6:  # sigmoid
        s = _sigmoid(z)
        d = s * (1.0 - s)
    elif CODE == 7:  # softplus
        above = z > _SOFTPLUS_THRESHOLD
        s = tl.where(above, z, tl.maximum(z, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(z))))
        d = tl.where(above, one, _sigmoid(z))
    elif CODE == 8:  # identity
        s = z
        d = one
    else:  # leaky_relu
        s = tl.where(z > 0.0, z, z * _LEAKY_SLOPE)
        d = tl.where(z > 0.0, one, one * _LEAKY_SLOPE)
    return s, d


@triton.jit
def _up(x, F64: tl.constexpr):
    """The math dtype: fp64 for fp64 inputs, else fp32."""
    if F64:
        y = x.to(tl.float64)
    else:
        y = x.to(tl.float32)
    return y


@triton.jit
def _acc_zeros(SIZE: tl.constexpr, F64: tl.constexpr):
    return _up(tl.zeros([SIZE], dtype=tl.float32), F64)


@triton.jit
def _grad_term(z, gh, c, CODE: tl.constexpr):
    """One activation's share: (c σ'(z) gh, c σ(z), gh σ(z)) — dz, h and the dc summand."""
    s, d = _value_and_derivative(z, CODE)
    return c * d * gh, c * s, gh * s


@triton.jit
def _mix_fwd_kernel(z_ptr, v_ptr, c_ptr, p_ptr, N, M, H, stride_cn, stride_cg, stride_ck,
                    HAS_V: tl.constexpr, K: tl.constexpr,
                    A0: tl.constexpr, A1: tl.constexpr, A2: tl.constexpr, A3: tl.constexpr, A4: tl.constexpr,
                    A5: tl.constexpr, A6: tl.constexpr, A7: tl.constexpr, A8: tl.constexpr, A9: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, UNIFORM_GROUP: tl.constexpr, F64: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col0 = tl.program_id(1) * BLOCK_M
    cols = col0 + tl.arange(0, BLOCK_M)
    rows64 = rows.to(tl.int64)
    mask = (rows[:, None] < N) & (cols[None, :] < M)
    offs = rows64[:, None] * M + cols[None, :]
    z = _up(tl.load(z_ptr + offs, mask=mask, other=0.0), F64)
    if UNIFORM_GROUP:  # the tile's columns lie in one group: one coefficient per row
        c_ptrs = c_ptr + rows64[:, None] * stride_cn + (col0 // H) * stride_cg
        c_mask = rows[:, None] < N
    else:
        c_ptrs = c_ptr + rows64[:, None] * stride_cn + (cols[None, :] // H) * stride_cg
        c_mask = mask
    h = _up(tl.load(c_ptrs, mask=c_mask, other=0.0), F64) * _value(z, A0)
    if K > 1:
        h += _up(tl.load(c_ptrs + 1 * stride_ck, mask=c_mask, other=0.0), F64) * _value(z, A1)
    if K > 2:
        h += _up(tl.load(c_ptrs + 2 * stride_ck, mask=c_mask, other=0.0), F64) * _value(z, A2)
    if K > 3:
        h += _up(tl.load(c_ptrs + 3 * stride_ck, mask=c_mask, other=0.0), F64) * _value(z, A3)
    if K > 4:
        h += _up(tl.load(c_ptrs + 4 * stride_ck, mask=c_mask, other=0.0), F64) * _value(z, A4)
    if K > 5:
        h += _up(tl.load(c_ptrs + 5 * stride_ck, mask=c_mask, other=0.0), F64) * _value(z, A5)
    if K > 6:
        h += _up(tl.load(c_ptrs + 6 * stride_ck, mask=c_mask, other=0.0), F64) * _value(z, A6)
    if K > 7:
        h += _up(tl.load(c_ptrs + 7 * stride_ck, mask=c_mask, other=0.0), F64) * _value(z, A7)
    if K > 8:
        h += _up(tl.load(c_ptrs + 8 * stride_ck, mask=c_mask, other=0.0), F64) * _value(z, A8)
    if K > 9:
        h += _up(tl.load(c_ptrs + 9 * stride_ck, mask=c_mask, other=0.0), F64) * _value(z, A9)
    if HAS_V:
        h = h * _up(tl.load(v_ptr + offs, mask=mask, other=0.0), F64)
    tl.store(p_ptr + offs, h.to(p_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _load_tile(z_ptr, v_ptr, gp_ptr, offs, mask, HAS_V: tl.constexpr, F64: tl.constexpr):
    """(z, v or gp, gp, dL/dh) of one tile in the math dtype."""
    z = _up(tl.load(z_ptr + offs, mask=mask, other=0.0), F64)
    gp = _up(tl.load(gp_ptr + offs, mask=mask, other=0.0), F64)
    if HAS_V:
        v = _up(tl.load(v_ptr + offs, mask=mask, other=0.0), F64)
        gh = gp * v
    else:
        v = gp
        gh = gp
    return z, v, gp, gh


@triton.jit
def _store_tile(dz_ptr, dv_ptr, p_ptr, offs, mask, gz, h, v, gp, HAS_V: tl.constexpr):
    tl.store(dz_ptr + offs, gz.to(dz_ptr.dtype.element_ty), mask=mask)
    if HAS_V:
        tl.store(dv_ptr + offs, (gp * h).to(dv_ptr.dtype.element_ty), mask=mask)
        tl.store(p_ptr + offs, (h * v).to(p_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(p_ptr + offs, h.to(p_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _mix_bwd_rows_kernel(z_ptr, v_ptr, c_ptr, gp_ptr, dz_ptr, dv_ptr, p_ptr, dc_ptr,
                         N, M, H, G, stride_cn, stride_cg, stride_ck,
                         HAS_V: tl.constexpr, K: tl.constexpr,
                         A0: tl.constexpr, A1: tl.constexpr, A2: tl.constexpr, A3: tl.constexpr, A4: tl.constexpr,
                         A5: tl.constexpr, A6: tl.constexpr, A7: tl.constexpr, A8: tl.constexpr, A9: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, F64: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    g = tl.program_id(1)
    rows64 = rows.to(tl.int64)
    row_mask = rows < N
    c_ptrs = c_ptr + rows64 * stride_cn + g * stride_cg  # (BLOCK_N,): this group's gates
    dc0 = _acc_zeros(BLOCK_N, F64)
    dc1 = _acc_zeros(BLOCK_N, F64)
    dc2 = _acc_zeros(BLOCK_N, F64)
    dc3 = _acc_zeros(BLOCK_N, F64)
    dc4 = _acc_zeros(BLOCK_N, F64)
    dc5 = _acc_zeros(BLOCK_N, F64)
    dc6 = _acc_zeros(BLOCK_N, F64)
    dc7 = _acc_zeros(BLOCK_N, F64)
    dc8 = _acc_zeros(BLOCK_N, F64)
    dc9 = _acc_zeros(BLOCK_N, F64)
    for start in range(0, H, BLOCK_M):
        units = start + tl.arange(0, BLOCK_M)
        mask = row_mask[:, None] & (units[None, :] < H)
        offs = rows64[:, None] * M + (g * H + units)[None, :]
        z, v, gp, gh = _load_tile(z_ptr, v_ptr, gp_ptr, offs, mask, HAS_V, F64)
        c = _up(tl.load(c_ptrs, mask=row_mask, other=0.0), F64)[:, None]
        gz, h, t = _grad_term(z, gh, c, A0)
        dc0 += tl.sum(t, axis=1)
        if K > 1:
            c = _up(tl.load(c_ptrs + 1 * stride_ck, mask=row_mask, other=0.0), F64)[:, None]
            a, b, t = _grad_term(z, gh, c, A1)
            gz += a
            h += b
            dc1 += tl.sum(t, axis=1)
        if K > 2:
            c = _up(tl.load(c_ptrs + 2 * stride_ck, mask=row_mask, other=0.0), F64)[:, None]
            a, b, t = _grad_term(z, gh, c, A2)
            gz += a
            h += b
            dc2 += tl.sum(t, axis=1)
        if K > 3:
            c = _up(tl.load(c_ptrs + 3 * stride_ck, mask=row_mask, other=0.0), F64)[:, None]
            a, b, t = _grad_term(z, gh, c, A3)
            gz += a
            h += b
            dc3 += tl.sum(t, axis=1)
        if K > 4:
            c = _up(tl.load(c_ptrs + 4 * stride_ck, mask=row_mask, other=0.0), F64)[:, None]
            a, b, t = _grad_term(z, gh, c, A4)
            gz += a
            h += b
            dc4 += tl.sum(t, axis=1)
        if K > 5:
            c = _up(tl.load(c_ptrs + 5 * stride_ck, mask=row_mask, other=0.0), F64)[:, None]
            a, b, t = _grad_term(z, gh, c, A5)
            gz += a
            h += b
            dc5 += tl.sum(t, axis=1)
        if K > 6:
            c = _up(tl.load(c_ptrs + 6 * stride_ck, mask=row_mask, other=0.0), F64)[:, None]
            a, b, t = _grad_term(z, gh, c, A6)
            gz += a
            h += b
            dc6 += tl.sum(t, axis=1)
        if K > 7:
            c = _up(tl.load(c_ptrs + 7 * stride_ck, mask=row_mask, other=0.0), F64)[:, None]
            a, b, t = _grad_term(z, gh, c, A7)
            gz += a
            h += b
            dc7 += tl.sum(t, axis=1)
        if K > 8:
            c = _up(tl.load(c_ptrs + 8 * stride_ck, mask=row_mask, other=0.0), F64)[:, None]
            a, b, t = _grad_term(z, gh, c, A8)
            gz += a
            h += b
            dc8 += tl.sum(t, axis=1)
        if K > 9:
            c = _up(tl.load(c_ptrs + 9 * stride_ck, mask=row_mask, other=0.0), F64)[:, None]
            a, b, t = _grad_term(z, gh, c, A9)
            gz += a
            h += b
            dc9 += tl.sum(t, axis=1)
        _store_tile(dz_ptr, dv_ptr, p_ptr, offs, mask, gz, h, v, gp, HAS_V)
    dc_ptrs = dc_ptr + rows64 * (G * K) + g * K  # dc: contiguous (N, G, K)
    out_ty = dc_ptr.dtype.element_ty
    tl.store(dc_ptrs, dc0.to(out_ty), mask=row_mask)
    if K > 1:
        tl.store(dc_ptrs + 1, dc1.to(out_ty), mask=row_mask)
    if K > 2:
        tl.store(dc_ptrs + 2, dc2.to(out_ty), mask=row_mask)
    if K > 3:
        tl.store(dc_ptrs + 3, dc3.to(out_ty), mask=row_mask)
    if K > 4:
        tl.store(dc_ptrs + 4, dc4.to(out_ty), mask=row_mask)
    if K > 5:
        tl.store(dc_ptrs + 5, dc5.to(out_ty), mask=row_mask)
    if K > 6:
        tl.store(dc_ptrs + 6, dc6.to(out_ty), mask=row_mask)
    if K > 7:
        tl.store(dc_ptrs + 7, dc7.to(out_ty), mask=row_mask)
    if K > 8:
        tl.store(dc_ptrs + 8, dc8.to(out_ty), mask=row_mask)
    if K > 9:
        tl.store(dc_ptrs + 9, dc9.to(out_ty), mask=row_mask)


@triton.jit
def _mix_bwd_shared_kernel(z_ptr, v_ptr, c_ptr, gp_ptr, dz_ptr, dv_ptr, p_ptr, part_ptr,
                           N, M, H, rows_per_split, stride_cg, stride_ck,
                           HAS_V: tl.constexpr, K: tl.constexpr,
                           A0: tl.constexpr, A1: tl.constexpr, A2: tl.constexpr, A3: tl.constexpr, A4: tl.constexpr,
                           A5: tl.constexpr, A6: tl.constexpr, A7: tl.constexpr, A8: tl.constexpr, A9: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, F64: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    split = tl.program_id(1)
    col_mask = cols < M
    c_ptrs = c_ptr + (cols // H)[None, :] * stride_cg  # (1, BLOCK_M): each unit's group
    row0 = split.to(tl.int64) * rows_per_split
    dc0 = _acc_zeros(BLOCK_M, F64)
    dc1 = _acc_zeros(BLOCK_M, F64)
    dc2 = _acc_zeros(BLOCK_M, F64)
    dc3 = _acc_zeros(BLOCK_M, F64)
    dc4 = _acc_zeros(BLOCK_M, F64)
    dc5 = _acc_zeros(BLOCK_M, F64)
    dc6 = _acc_zeros(BLOCK_M, F64)
    dc7 = _acc_zeros(BLOCK_M, F64)
    dc8 = _acc_zeros(BLOCK_M, F64)
    dc9 = _acc_zeros(BLOCK_M, F64)
    for start in range(0, rows_per_split, BLOCK_N):
        rows64 = row0 + start + tl.arange(0, BLOCK_N)
        mask = (rows64[:, None] < N) & col_mask[None, :]
        offs = rows64[:, None] * M + cols[None, :]
        z, v, gp, gh = _load_tile(z_ptr, v_ptr, gp_ptr, offs, mask, HAS_V, F64)
        c = _up(tl.load(c_ptrs, mask=col_mask[None, :], other=0.0), F64)
        gz, h, t = _grad_term(z, gh, c, A0)
        dc0 += tl.sum(t, axis=0)
        if K > 1:
            c = _up(tl.load(c_ptrs + 1 * stride_ck, mask=col_mask[None, :], other=0.0), F64)
            a, b, t = _grad_term(z, gh, c, A1)
            gz += a
            h += b
            dc1 += tl.sum(t, axis=0)
        if K > 2:
            c = _up(tl.load(c_ptrs + 2 * stride_ck, mask=col_mask[None, :], other=0.0), F64)
            a, b, t = _grad_term(z, gh, c, A2)
            gz += a
            h += b
            dc2 += tl.sum(t, axis=0)
        if K > 3:
            c = _up(tl.load(c_ptrs + 3 * stride_ck, mask=col_mask[None, :], other=0.0), F64)
            a, b, t = _grad_term(z, gh, c, A3)
            gz += a
            h += b
            dc3 += tl.sum(t, axis=0)
        if K > 4:
            c = _up(tl.load(c_ptrs + 4 * stride_ck, mask=col_mask[None, :], other=0.0), F64)
            a, b, t = _grad_term(z, gh, c, A4)
            gz += a
            h += b
            dc4 += tl.sum(t, axis=0)
        if K > 5:
            c = _up(tl.load(c_ptrs + 5 * stride_ck, mask=col_mask[None, :], other=0.0), F64)
            a, b, t = _grad_term(z, gh, c, A5)
            gz += a
            h += b
            dc5 += tl.sum(t, axis=0)
        if K > 6:
            c = _up(tl.load(c_ptrs + 6 * stride_ck, mask=col_mask[None, :], other=0.0), F64)
            a, b, t = _grad_term(z, gh, c, A6)
            gz += a
            h += b
            dc6 += tl.sum(t, axis=0)
        if K > 7:
            c = _up(tl.load(c_ptrs + 7 * stride_ck, mask=col_mask[None, :], other=0.0), F64)
            a, b, t = _grad_term(z, gh, c, A7)
            gz += a
            h += b
            dc7 += tl.sum(t, axis=0)
        if K > 8:
            c = _up(tl.load(c_ptrs + 8 * stride_ck, mask=col_mask[None, :], other=0.0), F64)
            a, b, t = _grad_term(z, gh, c, A8)
            gz += a
            h += b
            dc8 += tl.sum(t, axis=0)
        if K > 9:
            c = _up(tl.load(c_ptrs + 9 * stride_ck, mask=col_mask[None, :], other=0.0), F64)
            a, b, t = _grad_term(z, gh, c, A9)
            gz += a
            h += b
            dc9 += tl.sum(t, axis=0)
        _store_tile(dz_ptr, dv_ptr, p_ptr, offs, mask, gz, h, v, gp, HAS_V)
    part_ptrs = part_ptr + (split.to(tl.int64) * M + cols) * K  # part: contiguous (splits, M, K)
    tl.store(part_ptrs, dc0, mask=col_mask)
    if K > 1:
        tl.store(part_ptrs + 1, dc1, mask=col_mask)
    if K > 2:
        tl.store(part_ptrs + 2, dc2, mask=col_mask)
    if K > 3:
        tl.store(part_ptrs + 3, dc3, mask=col_mask)
    if K > 4:
        tl.store(part_ptrs + 4, dc4, mask=col_mask)
    if K > 5:
        tl.store(part_ptrs + 5, dc5, mask=col_mask)
    if K > 6:
        tl.store(part_ptrs + 6, dc6, mask=col_mask)
    if K > 7:
        tl.store(part_ptrs + 7, dc7, mask=col_mask)
    if K > 8:
        tl.store(part_ptrs + 8, dc8, mask=col_mask)
    if K > 9:
        tl.store(part_ptrs + 9, dc9, mask=col_mask)


# ------------------------------------------------------------------ launchers

def _check_device(*tensors) -> None:
    for t in tensors:
        if t is not None and not t.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(f"impl='triton' runs on CUDA tensors, got a {t.device.type} tensor; use impl='fused' "
                             f"or 'auto' there (TRITON_INTERPRET=1 runs the kernels on CPU, slowly, for tests)")


def _pow2(n: int, cap: int) -> int:
    return min(cap, triton.next_power_of_2(max(1, n)))


def _activation_args(codes: tuple[int, ...]) -> dict:
    padded = tuple(codes) + (0,) * (MAX_ACTIVATIONS - len(codes))
    return {"K": len(codes), **{f"A{i}": a for i, a in enumerate(padded)}}


def _coef_strides(c_NcGK: Tensor, n: int) -> tuple[int, int, int]:
    """Strides of the coefficients in elements; 0 over tokens when shared (Nc = 1)."""
    stride_cn = c_NcGK.stride(0) if c_NcGK.shape[0] == n and n != 1 else 0
    return stride_cn, c_NcGK.stride(1), c_NcGK.stride(2)


def mix_forward(z_NM: Tensor, c_NcGK: Tensor, v_NM, codes: tuple[int, ...]) -> Tensor:
    """``p_NM = (Σ_k c_k σ_k(z)) ⊙ v`` in ``z``'s dtype (``v=None``: no product)."""
    _check_device(z_NM, c_NcGK, v_NM)
    n, m = z_NM.shape
    g = c_NcGK.shape[1]
    z_NM = z_NM.contiguous()
    v_NM = None if v_NM is None else v_NM.contiguous()
    p_NM = torch.empty_like(z_NM)
    if n == 0 or m == 0:
        return p_NM
    h = m // g
    block_m = _pow2(m, 256)
    block_n = _pow2(n, max(1, FWD_TILE_ELEMENTS // block_m))
    grid = (triton.cdiv(n, block_n), triton.cdiv(m, block_m))
    _mix_fwd_kernel[grid](
        z_NM, z_NM if v_NM is None else v_NM, c_NcGK, p_NM, n, m, h, *_coef_strides(c_NcGK, n),
        HAS_V=v_NM is not None, **_activation_args(codes), BLOCK_N=block_n, BLOCK_M=block_m,
        UNIFORM_GROUP=g == 1 or h % block_m == 0, F64=z_NM.dtype == torch.float64, num_warps=NUM_WARPS)
    return p_NM


def _num_programs_target(device: torch.device) -> int:
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def mix_backward(z_NM: Tensor, c_NcGK: Tensor, v_NM, grad_p_NM: Tensor, codes: tuple[int, ...]):
    """``(dL/dz, dL/dv or None, dL/dc, p)`` from ``dL/dp``; dL/dz reuses dL/dp's buffer."""
    _check_device(z_NM, c_NcGK, v_NM, grad_p_NM)
    n, m = z_NM.shape
    nc, g, k = c_NcGK.shape
    z_NM = z_NM.contiguous()
    v_NM = None if v_NM is None else v_NM.contiguous()
    grad_p_NM = grad_p_NM.contiguous()
    # dL/dp is ours (the backward op's own matmul output): each element is read before
    # the same program overwrites it with dL/dz, so no second hidden-size buffer is needed
    grad_z = grad_p_NM if grad_p_NM.dtype == z_NM.dtype else torch.empty_like(z_NM)
    grad_v = None if v_NM is None else torch.empty_like(v_NM)
    p_NM = torch.empty_like(z_NM)
    f64 = z_NM.dtype == torch.float64
    acc = torch.float64 if f64 else torch.float32
    h = m // g
    args = dict(HAS_V=v_NM is not None, **_activation_args(codes), F64=f64, num_warps=NUM_WARPS)
    v_arg = z_NM if v_NM is None else v_NM
    if nc == n and n != 1:  # per-token gates (MoA): per-row sums over each group's units
        grad_c = torch.empty((n, g, k), dtype=c_NcGK.dtype, device=z_NM.device)
        if n == 0 or m == 0:
            return grad_z, grad_v, grad_c.zero_(), p_NM
        block_m = _pow2(h, 128)
        block_n = _pow2(n, max(1, BWD_TILE_ELEMENTS // block_m))
        _mix_bwd_rows_kernel[(triton.cdiv(n, block_n), g)](
            z_NM, v_arg, c_NcGK, grad_p_NM, grad_z, grad_v if grad_v is not None else grad_z, p_NM, grad_c,
            n, m, h, g, *_coef_strides(c_NcGK, n), BLOCK_N=block_n, BLOCK_M=block_m, **args)
        return grad_z, grad_v, grad_c, p_NM
    # shared coefficients (LA; or a single token): per-unit sums over rows, then over groups
    block_m = _pow2(m, 128)
    block_n = _pow2(n, max(1, BWD_TILE_ELEMENTS // block_m))
    col_blocks = triton.cdiv(m, block_m)
    row_blocks = triton.cdiv(n, block_n)
    splits = max(1, min(row_blocks, _num_programs_target(z_NM.device) // col_blocks))
    rows_per_split = triton.cdiv(row_blocks, splits) * block_n
    splits = triton.cdiv(n, rows_per_split) if n else 0
    part_SMK = torch.zeros((splits, m, k), dtype=acc, device=z_NM.device)
    if splits and m:
        _mix_bwd_shared_kernel[(col_blocks, splits)](
            z_NM, v_arg, c_NcGK, grad_p_NM, grad_z, grad_v if grad_v is not None else grad_z, p_NM, part_SMK,
            n, m, h, rows_per_split, c_NcGK.stride(1), c_NcGK.stride(2), BLOCK_N=block_n, BLOCK_M=block_m, **args)
    grad_c = part_SMK.sum(0).view(g, h, k).sum(1, keepdim=False).unsqueeze(0).to(c_NcGK.dtype)
    return grad_z, grad_v, grad_c, p_NM
