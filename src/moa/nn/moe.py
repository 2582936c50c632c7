"""Mixture-of-Experts FFN layer whose experts are fixed, LA or MoA FFNs (docs/DESIGN.md §5).

Shapes (legend): N tokens, D model width, E routed experts, k = top_k slots per token,
R = N·k routed rows.

Routing (token choice, top-k). Router logits ``l = W_r x`` (``router``, no bias) and
scores ``s = softmax(l)`` or ``sigmoid(l)`` are computed in fp32 (autocast off). Each
token takes the k experts with the highest ``s + b``, where ``b`` (``expert_bias``) is
nonzero only with ``balance="bias"`` and is used for the selection only (DeepSeek-V3's
aux-loss-free balancing, arXiv 2412.19437); the combine weights are the selected ``s``,
renormalised to sum 1 if ``renormalize``. (With softmax, top_k=1 and renormalize the
weight is always 1 and the LM loss gives the router no gradient: use renormalize=False,
as in Switch.) Shared experts process every token and are added.

Dispatch is dropless: the R (token, slot) rows are sorted by expert (a stable argsort of
the expert ids), so each expert's rows are one contiguous block, every expert runs one
matmul per projection on its block (:mod:`moa.nn.moe_dispatch`: a loop over experts, or
one ``torch._grouped_mm`` per projection), and the outputs are un-permuted and combined
per token by one batched matmul with the k weights. No token is ever dropped.

Design: the experts are ordinary :class:`moa.nn.FeedForward` modules (``build_ffn``),
not stacked (E, M, D) parameters. So an LA/MoA expert runs the same fused
``mix_project`` as a dense FFN (only ``z``, ``v`` kept for backward); the optimizer's
groups (:func:`moa.nn.mixing_parameter_names` finds expert gates and LA coefficients by
module type), Muon's 2-D matrices, the model's init and :func:`moa.nn.convert_ffn`
(upcycling a dense FFN into experts) all work unchanged. The cost falls on the grouped
GEMM path, which stacks the expert weights on every call (one extra read and write of
the weights per forward and backward; small next to the GEMMs once each expert has a few
hundred rows). ``dispatch="auto"`` takes the grouped GEMM on CUDA (bf16, sm90+) and the
loop elsewhere: on CPU the grouped path works in fp32/bf16 but is a loop of GEMMs itself,
measured slower than the loop (benchmarks/moe_dispatch.py), and keeps more memory.
Under torch.compile the loop path breaks the graph at :func:`experts_loop`, which runs its
own frame eagerly (the per-expert counts are read on the host there) and compiles each
expert with a dynamic row count: router and combine are one graph each, all experts share
one, and a new routing compiles nothing (before, every new split recompiled the experts
until dynamo's limit). The grouped path traces whole (bf16 only).

Balancing (after every forward, ``last_losses``):
* ``aux_loss`` = aux_coef · E · Σ_e f_e P_e (Switch Transformer, arXiv 2101.03961), with
  ``f_e`` the fraction of the R routed rows that went to e (``last_load``, not
  differentiable) and ``P_e`` the mean over tokens of the router probability of e (the
  scores normalised to sum 1 per token; for softmax they already do). Equals aux_coef
  when perfectly balanced. Zero unless ``balance="aux"``.
* ``z_loss`` = z_coef · mean_n logsumexp(l_n)² (ST-MoE, arXiv 2202.08906), any mode.
* ``balance="bias"``: training-mode forwards accumulate per-expert row counts; the
  trainer calls :meth:`MoE.update_bias` (or :func:`moe_update_bias`) once per optimizer
  step: ``b += bias_rate · sign(mean count − count)``, counts reset. (Activation
  checkpointing re-runs the forward and counts a micro-batch twice; the sign is unchanged
  when every micro-batch is recomputed.)
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from moa.nn.config import FFNConfig
from moa.nn.ffn import build_ffn
from moa.nn.moe_config import MoEConfig
from moa.nn.moe_dispatch import compute_dtype, experts_grouped, experts_loop, grouped_mm_unsupported

Tensor = torch.Tensor


class MoE(nn.Module):
    """Token-choice top-k MoE of FFN experts; ``forward(x (..., D)) -> (..., D)``."""

    def __init__(self, moe: MoEConfig, ffn: FFNConfig, d_model: int):
        super().__init__()
        if not isinstance(moe, MoEConfig):
            raise TypeError(f"moe must be a MoEConfig, got {type(moe).__name__}")
        moe.require_experts()
        self.config = moe
        self.d_model = d_model
        self.expert_config = expert_cfg = moe.expert_ffn(ffn, d_model)
        self.hidden_dim = expert_cfg.resolve_hidden_dim(d_model)
        if moe.dispatch == "grouped" and expert_cfg.mixing == "la" and expert_cfg.la_granularity == "channel":
            raise ValueError("moe.dispatch='grouped' does not support la_granularity='channel' experts; "
                             "valid: dispatch='loop' or 'auto'")
        self.router = nn.Linear(d_model, moe.num_experts, bias=False)
        self.experts = nn.ModuleList(build_ffn(expert_cfg, d_model) for _ in range(moe.num_experts))
        self.shared_experts = nn.ModuleList(build_ffn(expert_cfg, d_model) for _ in range(moe.shared_experts))
        self.register_buffer("expert_bias", torch.zeros(moe.num_experts, dtype=torch.float32))
        # row counts since the last update_bias(); a plain attribute, not a buffer, so DDP's
        # buffer broadcast never overwrites a rank's own counts
        self.load_counts: Optional[Tensor] = None
        self.last_losses: dict[str, Tensor] = {}
        self.last_load: Optional[Tensor] = None

    def __getstate__(self) -> dict:
        """Copies (``copy.deepcopy``, pickling) keep the last balance losses as values:
        the tensors of ``last_losses`` belong to the autograd graph of the last forward,
        which a copy cannot share (and torch refuses to deep-copy non-leaf tensors)."""
        state = super().__getstate__()
        state["last_losses"] = {k: v.detach() for k, v in self.last_losses.items()}
        return state

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02, out_std: Optional[float] = None) -> None:
        """Normal(0, std) router and input projections, ``out_std`` output projections,
        mixing parameters from the FFN config's init, zero expert bias and counts."""
        out_std = std if out_std is None else out_std
        nn.init.normal_(self.router.weight, std=std)
        for expert in [*self.experts, *self.shared_experts]:
            nn.init.normal_(expert.w1.weight, std=std)
            if expert.config.kind == "glu":
                nn.init.normal_(expert.w2.weight, std=std)
            nn.init.normal_(expert.output_proj.weight, std=out_std)
            expert.reset_mixing_parameters()
        self.expert_bias.zero_()
        self.load_counts = None

    def route(self, x_ND: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(logits_NE, scores_NE, experts_Nk, weights_Nk)``, all but experts in fp32+."""
        dt = torch.promote_types(x_ND.dtype, torch.float32)
        with torch.autocast(x_ND.device.type, enabled=False):
            logits_NE = F.linear(x_ND.to(dt), self.router.weight.to(dt))
        scores_NE = torch.softmax(logits_NE, -1) if self.config.router == "softmax" else torch.sigmoid(logits_NE)
        select_NE = scores_NE.detach()
        if self.config.balance == "bias":
            select_NE = select_NE + self.expert_bias.to(dt)
        experts_Nk = select_NE.topk(self.config.top_k, dim=-1).indices
        weights_Nk = scores_NE.gather(-1, experts_Nk)
        if self.config.renormalize:
            weights_Nk = weights_Nk / weights_Nk.sum(-1, keepdim=True)
        return logits_NE, scores_NE, experts_Nk, weights_Nk

    def forward(self, x: Tensor) -> Tensor:
        x_ND = x.reshape(-1, self.d_model)
        n, k = x_ND.shape[0], self.config.top_k
        logits_NE, scores_NE, experts_Nk, weights_Nk = self.route(x_ND)
        expert_R = experts_Nk.flatten()  # row r = (token r // k, slot r % k)
        # a scatter-add, not bincount: its output shape is static, so torch.compile traces it
        counts_E = expert_R.new_zeros(self.config.num_experts).scatter_add_(0, expert_R, torch.ones_like(expert_R))
        self._record(logits_NE, scores_NE, counts_E)

        order_R = torch.argsort(expert_R, stable=True)  # rows grouped by expert
        x_RD = x_ND.index_select(0, order_R // k)
        if self._use_grouped(x_ND):
            dtype = compute_dtype(self.experts[0].w1.weight, x.device)
            y_RD = experts_grouped(self.experts, x_RD, expert_R[order_R], counts_E, dtype)
        else:
            y_RD = experts_loop(self.experts, x_RD, counts_E, dynamic_rows=torch.compiler.is_compiling())
        # back to (token, slot) order: a permutation, so index_copy (backward: index_select)
        y_NkD = y_RD.new_empty(y_RD.shape).index_copy(0, order_R, y_RD).view(n, k, self.d_model)
        y_ND = (y_NkD * weights_Nk.to(y_NkD.dtype).unsqueeze(-1)).sum(1)
        for shared in self.shared_experts:
            y_ND = y_ND + shared(x_ND)
        return y_ND.view(x.shape)

    def check_dispatch(self, device: torch.device, dtype: torch.dtype, *, compiled: bool = False) -> None:
        """ValueError if ``dispatch="grouped"`` cannot run on ``device`` in ``dtype`` (the
        autocast dtype if any; ``compiled``: under torch.compile). The trainer calls this
        before it creates a run directory; a forward that finds the same raises RuntimeError."""
        if self.config.dispatch != "grouped":
            return
        why = grouped_mm_unsupported(self.expert_config, self.d_model, self.hidden_dim, device, dtype, compiled)
        if why is not None:
            raise ValueError(f"moe.dispatch='grouped' cannot run here: {why}; use dispatch='loop' or 'auto'")

    def _use_grouped(self, x: Tensor) -> bool:
        mode = self.config.dispatch
        if mode == "loop":
            return False
        dtype = compute_dtype(self.experts[0].w1.weight, x.device)
        why = grouped_mm_unsupported(self.expert_config, self.d_model, self.hidden_dim, x.device, dtype)
        if mode == "grouped" and why is not None:
            raise RuntimeError(f"moe.dispatch='grouped' cannot run here: {why}; use dispatch='loop' or 'auto'")
        return why is None and (mode == "grouped" or x.device.type == "cuda")

    def _record(self, logits_NE: Tensor, scores_NE: Tensor, counts_E: Tensor) -> None:
        """Set ``last_load`` and ``last_losses``; accumulate counts for the bias update."""
        cfg = self.config
        load_E = counts_E.to(scores_NE.dtype) / max(1, scores_NE.shape[0] * cfg.top_k)  # f_e, sums to 1
        self.last_load = load_E.detach()
        zero = logits_NE.new_zeros(())
        aux = zero
        if cfg.balance == "aux" and cfg.aux_coef > 0 and scores_NE.shape[0]:
            prob_NE = scores_NE if cfg.router == "softmax" else scores_NE / scores_NE.sum(-1, keepdim=True)
            aux = cfg.aux_coef * cfg.num_experts * (load_E * prob_NE.mean(0)).sum()
        z = zero
        if cfg.z_coef > 0 and logits_NE.shape[0]:
            z = cfg.z_coef * torch.logsumexp(logits_NE, -1).square().mean()
        self.last_losses = {"aux_loss": aux, "z_loss": z}
        if cfg.balance == "bias" and self.training:
            counts = counts_E.detach().float()
            self.load_counts = counts if self.load_counts is None else self.load_counts + counts

    @torch.no_grad()
    def update_bias(self, counts_E: Optional[Tensor] = None) -> None:
        """One aux-loss-free bias step from the counts accumulated since the last call.

        ``counts_E``: use these counts instead (e.g. summed over data-parallel ranks,
        see :func:`moe_update_bias`). No-op unless ``balance="bias"``; resets the counts.
        """
        counts = self.load_counts if counts_E is None else counts_E
        self.load_counts = None
        # no `counts.sum() == 0` test: that is a host sync per layer and step, and all-zero counts
        # give a zero step anyway (sign(0) = 0)
        if self.config.balance != "bias" or counts is None:
            return
        counts = counts.to(device=self.expert_bias.device, dtype=torch.float32)
        step = self.config.bias_rate * torch.sign(counts.mean() - counts)
        self.expert_bias.copy_(self.expert_bias.float() + step)

    def extra_repr(self) -> str:
        c = self.config
        return (f"num_experts={c.num_experts}, top_k={c.top_k}, shared={c.shared_experts}, "
                f"router={c.router}, balance={c.balance}, dispatch={c.dispatch}")


def moe_reference_forward(moe: MoE, x: Tensor) -> Tensor:
    """The slow reference: an explicit loop over tokens and over each token's top-k
    experts, routing every token on its own, with the same parameters as ``moe``."""
    cfg = moe.config
    x_ND = x.reshape(-1, moe.d_model)
    dt = torch.promote_types(x.dtype, torch.float32)
    outputs = []
    for x_D in x_ND:
        logits_E = moe.router.weight.to(dt) @ x_D.to(dt)
        scores_E = logits_E.softmax(-1) if cfg.router == "softmax" else logits_E.sigmoid()
        select_E = scores_E + moe.expert_bias.to(dt) if cfg.balance == "bias" else scores_E
        top = select_E.detach().topk(cfg.top_k).indices
        weights = scores_E[top]
        if cfg.renormalize:
            weights = weights / weights.sum()
        y_D = sum(w * moe.experts[int(e)](x_D[None])[0] for w, e in zip(weights, top))
        for shared in moe.shared_experts:
            y_D = y_D + shared(x_D[None])[0]
        outputs.append(y_D.to(x.dtype))
    return torch.stack(outputs).view(x.shape)


def moe_layers(model: nn.Module) -> list[MoE]:
    """Every :class:`MoE` layer of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, MoE)]


def moe_aux_loss(model: nn.Module) -> Tensor:
    """Sum of every MoE layer's ``last_losses`` (aux + z) from its last forward; 0 if none."""
    losses = [v for layer in moe_layers(model) for v in layer.last_losses.values()]
    if not losses:
        p = next(model.parameters(), None)
        return torch.zeros((), device=None if p is None else p.device)
    dtype = torch.promote_types(losses[0].dtype, torch.float32)  # float64 models stay float64
    return torch.stack([v.to(dtype) for v in losses]).sum()


def moe_check_dispatch(model: nn.Module, device: torch.device, dtype: torch.dtype, *, compiled: bool = False) -> None:
    """:meth:`MoE.check_dispatch` for every layer of ``model``."""
    for layer in moe_layers(model):
        layer.check_dispatch(device, dtype, compiled=compiled)


@torch.no_grad()
def moe_update_bias(model: nn.Module) -> None:
    """:meth:`MoE.update_bias` for every layer; under torch.distributed the counts are
    first summed over ranks (one all-reduce for all layers), so every rank's biases agree."""
    layers = [m for m in moe_layers(model) if m.config.balance == "bias"]
    if not layers:
        return
    counts = [m.load_counts if m.load_counts is not None else m.expert_bias.new_zeros(m.expert_bias.shape)
              for m in layers]
    flat = torch.cat([c.to(layers[0].expert_bias.device, torch.float32) for c in counts])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(flat)
    for layer, c in zip(layers, flat.split([m.config.num_experts for m in layers])):
        layer.update_bias(c)


def moe_metrics(model: nn.Module) -> dict[str, object]:
    """Host-side numbers to log (one device sync): the summed ``aux_loss`` and ``z_loss``,
    ``max_load`` = the largest ``E · load_e`` over layers (1 = perfectly balanced) and
    ``load``, each layer's per-expert load fractions."""
    layers = [m for m in moe_layers(model) if m.last_load is not None]
    if not layers:
        return {}
    out: dict[str, object] = {}
    for key in ("aux_loss", "z_loss"):
        out[f"moe_{key}"] = float(sum(m.last_losses[key].detach().float() for m in layers))
    loads = [m.last_load.float().cpu() for m in layers]
    out["moe_max_load"] = max(float(l.max() * l.numel()) for l in loads)
    out["moe_load"] = [[round(v, 4) for v in l.tolist()] for l in loads]
    return out


def router_parameter_names(model: nn.Module) -> set[str]:
    """Fully-qualified names of every MoE router weight (for an AdamW, no-decay group:
    the router is a small classifier, not a hidden matrix for Muon)."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, MoE):
            names.add(f"{prefix}.router.weight" if prefix else "router.weight")
    return names
