"""Optimizers and their parameter groups (docs/DESIGN.md §6.1).

Groups, decided by name on the unwrapped model:

* ``hidden``: 2-D matrices inside the blocks (attention and FFN projections). AdamW with
  weight decay, or Muon (``optim.name="muon"``): :class:`moa.train.muon.Muon`, the update
  of ``torch.optim.Muon`` that also orthogonalises FSDP2-sharded matrices whole.
* ``embedding``: token embedding and untied LM head. AdamW with weight decay (Muon's
  orthogonalised update is meant for hidden matrices, not lookup tables).
* ``no_decay``: norms, biases and every other 1-D or scalar parameter. AdamW, no decay.
* ``mixing``: LA coefficients and MoA gates (:func:`moa.nn.mixing_parameter_names`).
  AdamW, no decay, even under Muon (docs/DESIGN.md §3.5).
* ``router``: MoE router weights: AdamW, no decay (a small classifier whose logits set the
  load balance; Muon's orthogonalised update and decay toward zero would both distort it).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from moa.config import OptimConfig
from moa.nn import mixing_parameter_names, router_parameter_names
from moa.train.muon import Muon


def param_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """``{"hidden", "embedding", "no_decay", "mixing", "router"} -> [(name, param)]``; each param once."""
    mixing = mixing_parameter_names(model)
    routers = router_parameter_names(model)
    groups: dict[str, list] = {"hidden": [], "embedding": [], "no_decay": [], "mixing": [], "router": []}
    for name, p in model.named_parameters():  # tied weights appear once
        if not p.requires_grad:
            continue
        if name in mixing:
            groups["mixing"].append((name, p))
        elif name in routers:
            groups["router"].append((name, p))
        elif p.dim() < 2:
            groups["no_decay"].append((name, p))
        elif name.startswith(("embed.", "head.")):
            groups["embedding"].append((name, p))
        else:
            groups["hidden"].append((name, p))
    return groups


def build_optimizers(model: nn.Module, cfg: OptimConfig, replicated_group=None) -> list[torch.optim.Optimizer]:
    """AdamW over all groups, or Muon (hidden) + AdamW (the rest). Groups carry ``name``.

    ``replicated_group``: under DDP, the process group whose ranks hold identical weights
    and gradients; Muon then splits its Newton–Schulz work across them.
    """
    groups = param_groups(model)
    adamw_kw = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)

    def group(key, decay):
        return {"params": [p for _, p in groups[key]], "weight_decay": cfg.weight_decay if decay else 0.0,
                "name": key}

    adam_groups = [group("embedding", True), group("no_decay", False),
                   {**group("mixing", False), "lr": cfg.lr * cfg.mixing_lr_mult}, group("router", False)]
    optimizers = []
    if cfg.name == "muon":
        if groups["hidden"]:
            optimizers.append(Muon([group("hidden", True)], lr=cfg.lr, momentum=cfg.muon_momentum,
                                   weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw",
                                   replicated_group=replicated_group))
    else:
        adam_groups.insert(0, group("hidden", True))
    adam_groups = [g for g in adam_groups if g["params"]]
    optimizers.insert(0, torch.optim.AdamW(adam_groups, **adamw_kw))
    for opt in optimizers:
        for g in opt.param_groups:
            g["base_lr"] = g["lr"]
    return optimizers
