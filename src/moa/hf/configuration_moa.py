"""Configurations of moa's Hugging Face architectures: Llama-family models whose MLPs are
fixed-σ, learnable-activation (LA) or mixture-of-activations (MoA) FFNs, optionally inside
a top-k Mixture of Experts (arXiv 2605.26647; moa's docs/DESIGN.md §11).

This file is shipped next to exported weights as ``trust_remote_code`` code, so it imports
only ``transformers``. Each config is its base config plus two plain-dict attributes:

* ``moa_ffn``: ``kind`` ("mlp" Type-I | "glu" Type-II), ``mixing`` ("fixed" | "la" | "moa"),
  ``activations`` (dictionary names), ``gate_groups``, ``gate_norm`` ("softmax" | "sigmoid"
  | "none"), ``temperature``, ``la_granularity`` ("layer" | "channel"), ``dictionary_rms``
  (None, or one constant per activation: the mixing weights are divided by it, moa's
  ``dictionary_scale="rms"``). The hidden width is ``intermediate_size`` (of every
  expert, under MoE).
* ``moa_moe``: ``None`` (dense) or ``num_experts``, ``top_k``, ``shared_experts``,
  ``router`` ("softmax" | "sigmoid"), ``renormalize``, ``balance`` (selection adds the
  ``expert_bias`` buffer when "bias").

Plain dicts (not typed fields) keep the class valid under both transformers 4.x
(``__init__(**kwargs)``) and 5.x (dataclass configs accepting extra keyword arguments).
"""

from transformers import LlamaConfig, MistralConfig, Qwen2Config

DEFAULT_FFN = {"kind": "glu", "mixing": "moa", "activations": ["relu", "gelu", "silu", "relu2"], "gate_groups": 1,
               "gate_norm": "softmax", "temperature": 1.0, "la_granularity": "layer", "dictionary_rms": None}


class MoaConfig(LlamaConfig):
    """A Llama architecture with moa FFNs (``model_type="moa_llama"``)."""

    model_type = "moa_llama"


class MoaMistralConfig(MistralConfig):
    """A Mistral architecture with moa FFNs (``model_type="moa_mistral"``, from upcycling)."""

    model_type = "moa_mistral"


class MoaQwen2Config(Qwen2Config):
    """A Qwen2 architecture with moa FFNs (``model_type="moa_qwen2"``, from upcycling)."""

    model_type = "moa_qwen2"


def moa_ffn(config) -> dict:
    """The config's ``moa_ffn`` dict with defaults filled in."""
    return {**DEFAULT_FFN, **(getattr(config, "moa_ffn", None) or {})}


def moa_moe(config):
    """The config's ``moa_moe`` dict, or None for dense FFNs."""
    return getattr(config, "moa_moe", None) or None
