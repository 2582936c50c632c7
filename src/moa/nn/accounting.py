"""Parameter and FLOP accounting for FFN configs, so MoA's overhead is visible up front.

FLOPs are forward FLOPs per token. Matmuls count 2 per multiply-add (exact). Elementwise
work is nominal: each activation evaluation costs ``Activation.flops`` per element, and a
mixing term costs 2 per element (multiply-add); it is reported separately because on
real hardware it is memory-bound and its cost is time, not FLOPs. A training step costs
about 3x the forward.
"""

from __future__ import annotations

from dataclasses import dataclass

from moa.nn.activations import ACTIVATIONS
from moa.nn.config import FFNConfig


@dataclass(frozen=True)
class FFNCost:
    params: int  # all parameters
    mixing_params: int  # of which LA coefficients / gate (the overhead over the baseline)
    matmul_flops: int  # forward, per token
    elementwise_flops: int  # forward, per token, nominal

    @property
    def flops(self) -> int:
        return self.matmul_flops + self.elementwise_flops


def ffn_cost(config: FFNConfig, d_model: int) -> FFNCost:
    """Exact parameter count and forward FLOPs per token of ``build_ffn(config, d_model)``."""
    m = config.resolve_hidden_dim(d_model)
    k = config.num_activations
    n_proj = 3 if config.kind == "glu" else 2
    linear = n_proj * d_model * m
    matmul = 2 * linear
    act_cost = sum(ACTIVATIONS[a].flops for a in config.activations) * m
    glu_mul = m if config.kind == "glu" else 0
    if config.mixing == "fixed":
        mixing, elementwise = 0, act_cost + glu_mul
    elif config.mixing == "la":
        mixing = k if config.la_granularity == "layer" else m * k
        elementwise = act_cost + 2 * k * m + glu_mul
    else:
        gk = config.gate_groups * k
        mixing = gk * (d_model + 1)
        matmul += 2 * d_model * gk
        # bias, temperature and a nominal 4 FLOPs of normalisation per gate logit
        elementwise = act_cost + 2 * k * m + glu_mul + 6 * gk
    return FFNCost(params=linear + mixing, mixing_params=mixing, matmul_flops=matmul,
                   elementwise_flops=elementwise)


def ffn_param_count(config: FFNConfig, d_model: int) -> int:
    return ffn_cost(config, d_model).params


def ffn_flops_per_token(config: FFNConfig, d_model: int) -> int:
    return ffn_cost(config, d_model).flops
