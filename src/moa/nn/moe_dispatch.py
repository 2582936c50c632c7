"""Dropless expert computation on tokens sorted by expert (docs/DESIGN.md §5.2).

Shapes (legend): R routed rows = N tokens · k slots, sorted so that expert e's rows are
the contiguous block ``[offs[e-1], offs[e])``; D model width; M expert hidden width;
E experts; G gate groups; K activations.

Two implementations of ``y_rows = expert_{e(r)}(x_rows[r])`` for every row r:

* :func:`experts_loop` — portable: one call of each expert's own :class:`FeedForward`
  on its contiguous slice, so every projection is one matmul per expert and LA/MoA
  experts use the memory-efficient fused op (:func:`moa.nn.mix_project`, which keeps
  only ``z`` (and ``v``) for backward). Needs the per-expert counts on the host (one
  device sync per layer).
* :func:`experts_grouped` — one ``torch._grouped_mm`` per projection over all experts
  (the experts' weights are stacked for it each call) and the mixing applied to all rows
  at once with per-row coefficients (:func:`moa.nn.mix_activations` accepts (R, G, K)):
  LA's coefficients are gathered by each row's expert, MoA's gate logits come from one
  more grouped GEMM. No host sync. Plain autograd keeps the mixed ``h`` and ``h ⊙ v``
  for the output GEMM's backward, i.e. the memory of an eager SwiGLU, more than the loop
  path's fused op.

``torch._grouped_mm`` in torch 2.13: CUDA (bf16; the fast kernels need sm90+) and a CPU
implementation for fp32/bf16 (no fp64), with every row stride a multiple of 16 bytes;
its meta kernel (torch.compile) accepts bf16 only, so fp32 grouped GEMMs run eager only.
On CPU it is no faster than the loop (it is a loop of GEMMs), so "auto" uses it on
CUDA only; :func:`grouped_mm_unsupported` says why it cannot run somewhere.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from moa.nn.activations import ACTIVATIONS
from moa.nn.config import FFNConfig
from moa.nn.ffn import FeedForward, dictionary_scaled, gate_z_squares, normalize_gates
from moa.nn.functional import mix_activations

Tensor = torch.Tensor

GROUPED_MM_DTYPES = (torch.float32, torch.bfloat16)


@torch.compiler.disable(recursive=False)
def experts_loop(experts: Sequence[FeedForward], x_RD: Tensor, counts_E: "Tensor | list[int]",
                 dynamic_rows: bool = False) -> Tensor:
    """``(R, D)`` outputs of each expert on its contiguous block of ``x_RD``.

    ``counts_E``: rows per expert (a tensor, read on the host here, or a list of ints).
    An expert without rows is not run; under autograd its parameters are tied into the
    output with weight zero, so they get zero gradients as in the grouped path (and DDP
    sees every parameter used).

    torch.compile: this function's own frame runs eagerly (``recursive=False``), so the
    data-dependent split sizes never become guards of a graph, while each expert's
    forward is still compiled. ``dynamic_rows`` (set by a compiled caller) marks each
    block's row count dynamic, so one graph serves every expert and every routing
    (plus one for a block of exactly one row, which torch always specialises); without
    it every new split would recompile the experts until dynamo's recompile limit.
    """
    counts = counts_E.tolist() if isinstance(counts_E, Tensor) else counts_E
    outs, idle = [], []
    rows = sum(counts)
    for expert, x_e in zip(experts, x_RD.split(counts)):
        if x_e.shape[0]:
            if dynamic_rows:
                torch._dynamo.maybe_mark_dynamic(x_e, 0)
            outs.append(expert(x_e))
            if expert.training and expert.config.gate_z_loss > 0 and "z_loss" in expert.__dict__:  # this forward's:
                expert.z_loss = expert.z_loss * (x_e.shape[0] / rows)  # its rows' mean → its share of the layer's
        else:
            idle.append(expert)
    y_RD = torch.cat(outs) if outs else x_RD.new_zeros(x_RD.shape)
    if idle and torch.is_grad_enabled():
        zero = sum(p.sum() for e in idle for p in e.parameters()) * 0.0
        y_RD = y_RD + zero.to(y_RD.dtype)
    return y_RD


def compute_dtype(weight: Tensor, device: torch.device) -> torch.dtype:
    """The dtype a ``nn.Linear`` with ``weight`` would compute in here (autocast aware)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


def grouped_mm_unsupported(ffn: FFNConfig, d_model: int, hidden: int, device: torch.device,
                           dtype: torch.dtype, compiled: Optional[bool] = None) -> Optional[str]:
    """Why :func:`experts_grouped` cannot run for these experts here (None: it can).

    ``compiled``: whether it runs under torch.compile (None: whether it is tracing now)."""
    compiled = torch.compiler.is_compiling() if compiled is None else compiled
    if not hasattr(torch, "_grouped_mm"):
        return f"torch {torch.__version__} has no torch._grouped_mm"
    if dtype not in GROUPED_MM_DTYPES:
        return f"torch._grouped_mm takes float32/bfloat16, not {dtype}"
    if dtype != torch.bfloat16 and compiled:
        return f"torch.compile traces torch._grouped_mm in bfloat16 only, not {dtype}"
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (9, 0):
        return "torch._grouped_mm's kernels need a CUDA device of compute capability >= 9.0"
    if device.type not in ("cuda", "cpu"):
        return f"torch._grouped_mm is not implemented on {device.type}"
    align = 16 // torch.empty((), dtype=dtype).element_size()
    if d_model % align or hidden % align:
        return f"d_model={d_model} and hidden={hidden} must be multiples of {align} (16-byte rows)"
    if ffn.mixing == "la" and ffn.la_granularity == "channel":
        return "channel-granularity LA would need (rows, hidden, K) per-row coefficients"
    return None


def experts_grouped(experts: Sequence[FeedForward], x_RD: Tensor, expert_R: Tensor,
                    counts_E: Tensor, dtype: torch.dtype) -> Tensor:
    """Same as :func:`experts_loop`, with one grouped GEMM per projection.

    ``expert_R``: the (sorted) expert of each row; ``counts_E``: rows per expert, on the
    device. The weights of all experts are stacked per call (differentiable), so the
    experts stay ordinary FFN modules.
    """
    cfg = experts[0].config
    offs_E = torch.cumsum(counts_E, 0, dtype=torch.int32)
    align = 16 // torch.empty((), dtype=dtype).element_size()

    def gmm(a_RI: Tensor, weights: list[Tensor]) -> Tensor:  # weights: E × (O, I)
        w_EOI = torch.stack(weights).to(dtype)
        pad = (-w_EOI.shape[1]) % align  # the output rows must be 16-byte aligned too
        out = torch._grouped_mm(a_RI, F.pad(w_EOI, (0, 0, 0, pad)).transpose(1, 2), offs=offs_E)
        return out[:, : w_EOI.shape[1]] if pad else out

    x_RD = x_RD.to(dtype)
    z_RM = gmm(x_RD, [e.w1.weight for e in experts])
    names = cfg.activations
    if cfg.mixing == "fixed":
        h_RM = ACTIVATIONS[names[0]](z_RM)
    else:
        if cfg.mixing == "la":  # layer granularity: (K,) per expert → (R, 1, K)
            c_RGK = torch.stack([e.la_coef for e in experts])[expert_R].unsqueeze(1)
        else:
            bias_EL = torch.stack([e.gate.bias for e in experts]).to(dtype)  # L = G·K logits
            logits_RL = gmm(x_RD, [e.gate.weight for e in experts]) + bias_EL[expert_R]
            c_RGK = normalize_gates(logits_RL, cfg)
            if experts[0].training and cfg.gate_z_loss > 0:  # the layer's, as the loop's experts' shares add up
                experts[0].z_loss = cfg.gate_z_loss * gate_z_squares(logits_RL, cfg).mean()
        h_RM = mix_activations(z_RM, dictionary_scaled(c_RGK, cfg), names)
    if cfg.kind == "glu":
        h_RM = h_RM * gmm(x_RD, [e.w2.weight for e in experts])
    return gmm(h_RM, [e.output_proj.weight for e in experts])
