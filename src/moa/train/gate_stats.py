"""Per-layer mixing statistics of LA/MoA FFNs, logged at every evaluation (a ``gates`` event).

Cheap by construction: one extra forward of the eval model on a fixed slice of the first
validation batch (at most :data:`SLICE_TOKENS` tokens, the same slice at every
evaluation), with forward hooks on the FFNs capturing each FFN's input x. Everything is recomputed
from x in float32 with the FFN's own weights.

MoE layers whose experts are LA/MoA FFNs: the routing is recomputed from the layer input
with the layer's own :meth:`moa.nn.MoE.route` (the forward's top-k), each routed expert's
statistics are taken on the tokens routed to it, and the layer's ``L{i}.*`` keys below
are pooled over all (token, expert) assignments (exactly: means weighted by each
expert's token count, RMS in quadrature, max of maxima), so a dense and an MoE layer read
the same. Per expert ``e`` also: ``L{i}.E{e}.share`` (its share of the assignments) and,
for MoA, ``L{i}.E{e}.gate_entropy``; a shared expert ``j`` gets the full set of keys
under ``L{i}.S{j}.``.

Keys of the event (``L{i}`` is block i; ``{a}`` an activation of the dictionary):

* ``L{i}.gate_mean.{a}``: mean mixing weight of activation a — MoA: the gate ``g_a(x)``
  over tokens and gate groups; LA: the coefficient ``a_a`` (over channels).
* MoA only: ``L{i}.gate_top1.{a}``, the share of (token, group) gates whose largest weight
  is a; ``L{i}.gate_entropy``, the mean gate entropy divided by log K (0: one-hot,
  1: uniform; sigmoid/none gates normalised as in :mod:`moa.experiments.gates`);
  ``L{i}.gate_max_logit``, the largest |gate logit / τ| (the quantity a z-loss bounds).
* ``L{i}.rms.{a}``: RMS of σ_a(z) with z = w1·x (how loud each activation is at the
  layer's actual pre-activations; ReLU² grows as z², the others at most as |z|);
  ``L{i}.mix_rms.{a}``: RMS of its weighted term ``g_a(x)·σ_a(z)`` in the mixture
  (divided by σ_a's Gaussian RMS under ``dictionary_scale="rms"``, as in the forward);
  ``L{i}.z_rms``: RMS of z itself.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Optional

import torch

from moa.nn import ACTIVATIONS, LAFFN, MoAFFN, MoE
from moa.nn.activations import gaussian_rms
from moa.nn.ffn import normalize_gates

Tensor = torch.Tensor

#: target tokens of the first validation batch the statistics are computed on
SLICE_TOKENS = 1024


def _mixing(ffn) -> bool:
    """An LA/MoA FFN, or an MoE layer whose experts are."""
    if isinstance(ffn, MoE):
        return any(isinstance(e, (LAFFN, MoAFFN)) for e in [*ffn.experts, *ffn.shared_experts])
    return isinstance(ffn, (LAFFN, MoAFFN))


def has_mixing(model) -> bool:
    """Whether any block of ``model`` has an LA or MoA FFN, dense or as experts (else nothing is logged)."""
    return any(_mixing(b.ffn) for b in model.blocks)


def gate_slice(x_BT: Tensor, max_tokens: int = SLICE_TOKENS) -> Tensor:
    """The fixed rows of an eval batch the statistics use (at least one row)."""
    rows = max(1, min(x_BT.shape[0], max_tokens // x_BT.shape[1]))
    return x_BT[:rows]


@torch.no_grad()
def gate_statistics(model, x_BT: Tensor, autocast: Optional[torch.autocast] = None) -> dict[str, float]:
    """The flat statistics dict of the module docstring for ``model`` on input ids ``x_BT``.

    Every rank must call this under FSDP (the forward all-gathers parameters).
    """
    stats: dict[str, float] = {}
    handles = []
    for i, block in enumerate(model.blocks):
        if _mixing(block.ffn):
            hook = _moe_hook if isinstance(block.ffn, MoE) else _hook
            handles.append(block.ffn.register_forward_hook(hook(i, stats)))
    if not handles:
        return stats
    was_training = model.training
    model.eval()
    try:
        with autocast or nullcontext():
            model(x_BT)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return stats


def _hook(layer: int, stats: dict):
    def hook(ffn, args, output):
        with torch.autocast(args[0].device.type, enabled=False):
            stats.update(ffn_statistics(ffn, args[0].detach().flatten(0, -2).float(), prefix=f"L{layer}."))
    return hook


def _moe_hook(layer: int, stats: dict):
    def hook(moe, args, output):
        with torch.autocast(args[0].device.type, enabled=False):
            stats.update(moe_statistics(moe, args[0].detach().flatten(0, -2).float(), prefix=f"L{layer}."))
    return hook


#: keys pooled as means weighted by token count, and those pooled as root-mean-squares
_MEAN_KEYS = ("gate_entropy", "gate_top1.", "gate_mean.")
_RMS_KEYS = ("rms.", "mix_rms.", "z_rms")


@torch.no_grad()
def moe_statistics(moe: MoE, x_ND: Tensor, prefix: str = "") -> dict[str, float]:
    """Statistics of an MoE layer of LA/MoA experts on inputs ``x_ND`` (float32): see the module docstring."""
    out: dict[str, float] = {}
    _, _, experts_Nk, _ = moe.route(x_ND)
    per_expert = []
    for e, expert in enumerate(moe.experts):
        rows = (experts_Nk == e).any(-1)
        count = int(rows.sum())
        out[f"{prefix}E{e}.share"] = count / experts_Nk.numel()
        if count and isinstance(expert, (LAFFN, MoAFFN)):
            s = ffn_statistics(expert, x_ND[rows])
            per_expert.append((count, s))
            if "gate_entropy" in s:
                out[f"{prefix}E{e}.gate_entropy"] = s["gate_entropy"]
    if per_expert:
        total = sum(c for c, _ in per_expert)
        for key in per_expert[0][1]:
            values = [(c, s[key]) for c, s in per_expert]
            if key == "gate_max_logit":
                out[prefix + key] = max(v for _, v in values)
            elif key.startswith(_RMS_KEYS):
                out[prefix + key] = math.sqrt(sum(c * v * v for c, v in values) / total)
            else:
                assert key.startswith(_MEAN_KEYS), key
                out[prefix + key] = sum(c * v for c, v in values) / total
    for j, shared in enumerate(moe.shared_experts):
        if isinstance(shared, (LAFFN, MoAFFN)):
            out.update(ffn_statistics(shared, x_ND, prefix=f"{prefix}S{j}."))
    return out


@torch.no_grad()
def ffn_statistics(ffn, x_ND: Tensor, prefix: str = "") -> dict[str, float]:
    """Statistics of one LA/MoA FFN on inputs ``x_ND`` (float32)."""
    cfg = ffn.config
    names, k = cfg.activations, cfg.num_activations
    z_NM = torch.nn.functional.linear(x_ND, ffn.w1.weight.float())
    n, m = z_NM.shape
    out: dict[str, float] = {}
    if isinstance(ffn, MoAFFN):
        logits = torch.nn.functional.linear(x_ND, ffn.gate.weight.float(), ffn.gate.bias.float())
        g_NGK = normalize_gates(logits, cfg).float()
        groups = g_NGK.shape[1]
        p_NGK = _distribution(g_NGK, cfg.gate_norm)
        entropy = -torch.special.xlogy(p_NGK, p_NGK).sum(-1).mean()
        out[f"{prefix}gate_entropy"] = float(entropy / math.log(k)) if k > 1 else 0.0
        out[f"{prefix}gate_max_logit"] = float((logits / cfg.temperature).abs().max())
        top = torch.bincount(p_NGK.argmax(-1).flatten(), minlength=k).float() / (n * groups)
        mean = g_NGK.mean((0, 1))
        # per hidden unit weight of each activation: group j covers units [j·m/G, (j+1)·m/G)
        w_NMK = g_NGK.repeat_interleave(m // groups, dim=1)
        for a, name in enumerate(names):
            out[f"{prefix}gate_top1.{name}"] = float(top[a])
    else:
        coef = ffn.la_coef.float()  # (K,) or (m, K)
        mean = coef if coef.dim() == 1 else coef.mean(0)
        w_NMK = coef.expand(m, k).unsqueeze(0)
    for a, name in enumerate(names):
        out[f"{prefix}gate_mean.{name}"] = float(mean[a])
    for a, name in enumerate(names):
        s_NM = ACTIVATIONS[name](z_NM)
        scale = gaussian_rms(name) if cfg.dictionary_scale == "rms" else 1.0
        out[f"{prefix}rms.{name}"] = _rms(s_NM)
        out[f"{prefix}mix_rms.{name}"] = _rms(s_NM * w_NMK[..., a]) / scale
    out[f"{prefix}z_rms"] = _rms(z_NM)
    return out


def _distribution(g_NGK: Tensor, gate_norm: str) -> Tensor:
    if gate_norm == "softmax":
        return g_NGK
    w = g_NGK if gate_norm == "sigmoid" else g_NGK.abs()
    total = w.sum(-1, keepdim=True)
    return torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), torch.full_like(w, 1.0 / w.shape[-1]))


def _rms(t: Tensor) -> float:
    return float(t.double().square().mean().sqrt())
