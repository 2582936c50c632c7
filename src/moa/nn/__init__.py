"""MoA layers: the activation dictionary, FFN configs, fixed/LA/MoA modules, accounting."""

from moa.nn.accounting import FFNCost, ffn_cost, ffn_flops_per_token, ffn_param_count
from moa.nn.activations import ACTIVATIONS, DEFAULT_DICTIONARY, Activation, get_activation
from moa.nn.config import FFN_PRESETS, FFNConfig, ffn_config
from moa.nn.ffn import FeedForward, FixedFFN, LAFFN, MoAFFN, build_ffn, convert_ffn, gate_logits_for, gate_z_loss
from moa.nn.functional import (
    MixActivations, MixProject, mix_activations, mix_activations_reference, mix_project, mix_project_reference,
)
from moa.nn.params import mixing_parameter_names, split_mixing_parameters
from moa.nn.triton_mix import mix_project_triton

__all__ = [
    "ACTIVATIONS", "DEFAULT_DICTIONARY", "Activation", "get_activation",
    "FFNConfig", "FFN_PRESETS", "ffn_config",
    "FeedForward", "FixedFFN", "LAFFN", "MoAFFN", "build_ffn", "convert_ffn", "gate_logits_for", "gate_z_loss",
    "MixActivations", "MixProject", "mix_activations", "mix_activations_reference",
    "mix_project", "mix_project_reference", "mix_project_triton",
    "FFNCost", "ffn_cost", "ffn_param_count", "ffn_flops_per_token",
    "mixing_parameter_names", "split_mixing_parameters",
]

from moa.nn.moe_config import MoEConfig, MoECost, moe_cost  # noqa: E402
from moa.nn.moe import (  # noqa: E402
    MoE, moe_aux_loss, moe_check_dispatch, moe_layers, moe_metrics, moe_reference_forward, moe_update_bias,
    router_parameter_names,
)

__all__ += [
    "MoEConfig", "MoECost", "moe_cost",
    "MoE", "moe_aux_loss", "moe_check_dispatch", "moe_layers", "moe_metrics", "moe_reference_forward", "moe_update_bias",
    "router_parameter_names",
]
