"""Which parameters are LA coefficients or MoA gates, for the optimizer.

docs/DESIGN.md §3.5: gate and LA parameters get no weight decay and are optimised by AdamW even
when the matrices use Muon. Names are resolved on the unwrapped model (before DDP/FSDP),
by module type, so a user's own module named "gate" is never mistaken for one.
"""

from __future__ import annotations

import torch.nn as nn

from moa.nn.ffn import LAFFN, MoAFFN


def mixing_parameter_names(model: nn.Module) -> set[str]:
    """Fully-qualified names of every LA coefficient and MoA gate parameter in ``model``."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, LAFFN):
            names.add(f"{dot}la_coef")
        elif isinstance(module, MoAFFN):
            names.update({f"{dot}gate.weight", f"{dot}gate.bias"})
    return names


def split_mixing_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(mixing, rest)``: LA/gate parameters (AdamW, no decay) and everything else."""
    mixing_names = mixing_parameter_names(model)
    mixing, rest = [], []
    for name, p in model.named_parameters():
        (mixing if name in mixing_names else rest).append(p)
    return mixing, rest
