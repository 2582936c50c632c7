"""Upcycling: turn the SwiGLU MLPs of a pretrained Llama-family model into LA or MoA MLPs
that compute exactly the same function and train from the first step.

A SwiGLU MLP is ``down(silu(gate x) ⊙ up x)``. With a dictionary that contains silu, the
new MLP keeps the three projections and sets its mixing to the one-hot on silu:

* LA: ``la_coef = e_silu`` (layer granularity (K,) or channel (m, K)): exact, and every
  coefficient gets the gradient ``Σ dL/dh ⊙ σ_k(z)`` from the first step.
* MoA: ``gate_norm="none"`` with zero gate weights and biases ``e_silu · τ``, so
  ``g(x) = e_silu`` exactly for every token, and ``dL/dW_g = Σ_tokens (dL/dg) xᵀ`` is a
  real gradient. A softmax (or sigmoid) gate cannot be exactly one-hot: its
  function-preserving init (moa.nn ``init=<activation>``) puts the logits ``gap`` apart,
  the softmax saturates and the gate's gradient at init is ~``exp(-gap)`` (≈1e-13 measured
  at the default gap 30), i.e. the gates would never move. Hence ``gate_norm="none"``.

``0 · σ_k(z)`` adds exact zeros, so the logits are bit-identical (``torch.equal``) in fp32
and bf16. The model's class becomes the matching ``Moa*ForCausalLM`` and its config the
matching ``Moa*Config`` (``moa_ffn`` set), so ``save_pretrained`` writes a loadable model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn as nn

from moa.nn.config import ffn_config

#: base model_type → (moa model_type, config file class, model file class)
SUPPORTED = {
    "llama": ("moa_llama", "MoaConfig", "MoaForCausalLM"),
    "mistral": ("moa_mistral", "MoaMistralConfig", "MoaMistralForCausalLM"),
    "qwen2": ("moa_qwen2", "MoaQwen2Config", "MoaQwen2ForCausalLM"),
}
#: FFNConfig fields that ``upcycle`` accepts as overrides
OVERRIDES = ("activations", "gate_groups", "gate_norm", "temperature", "la_granularity")


def _classes(model_type: str):
    from moa.hf import configuration_moa, modeling_moa

    _, config_name, model_name = SUPPORTED[model_type]
    return getattr(configuration_moa, config_name), getattr(modeling_moa, model_name)


def target_ffn(ffn: str, **overrides) -> dict:
    """The ``moa_ffn`` dict of the upcycled MLPs (validated; see module docstring)."""
    unknown = [k for k in overrides if k not in OVERRIDES]
    if unknown:
        raise ValueError(f"unknown upcycle override(s) {unknown}; valid: {', '.join(OVERRIDES)}")
    overrides.setdefault("gate_norm", "none")
    cfg = ffn_config(ffn, **overrides)
    if cfg.kind != "glu" or cfg.mixing == "fixed":
        raise ValueError(f"ffn={ffn!r} cannot hold a SwiGLU MLP exactly; valid: la-glu, moa-glu")
    if "silu" not in cfg.activations:
        raise ValueError(f"activations={list(cfg.activations)} lacks silu, so the SwiGLU function cannot be kept")
    if cfg.mixing == "moa" and cfg.gate_norm != "none":
        raise ValueError(f"gate_norm={cfg.gate_norm!r} cannot be exactly one-hot (its exact init saturates the "
                         "gates); valid for upcycling: none")
    return {"kind": "glu", "mixing": cfg.mixing, "activations": list(cfg.activations),
            "gate_groups": cfg.gate_groups, "gate_norm": cfg.gate_norm, "temperature": float(cfg.temperature),
            "la_granularity": cfg.la_granularity}


def _check_mlp(i: int, mlp: nn.Module, act: str) -> None:
    names = ("gate_proj", "up_proj", "down_proj")
    if not all(isinstance(getattr(mlp, n, None), nn.Linear) for n in names):
        raise ValueError(f"layer {i}: MLP {type(mlp).__name__} has no gate_proj/up_proj/down_proj linears")
    if any(getattr(mlp, n).bias is not None for n in names):
        raise ValueError(f"layer {i}: MLP biases are not supported (mlp_bias=True)")
    if act not in ("silu", "swish"):
        raise ValueError(f"hidden_act={act!r} is not supported; upcycling keeps a SwiGLU (hidden_act='silu') MLP")


@torch.no_grad()
def upcycle(model, ffn: str = "moa-glu", **overrides):
    """Replace, in place, every SwiGLU MLP of a Llama/Mistral/Qwen2 causal LM by an LA/MoA MLP
    computing the same function (see the module docstring); returns ``model``.

    ``overrides``: ``activations`` (must include silu), ``gate_groups``, ``temperature``,
    ``la_granularity``, ``gate_norm`` (only "none" is exact).
    """
    from moa.hf.modeling_moa import MoaMLP

    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED:
        raise ValueError(f"model_type={model_type!r} is not supported; valid: {', '.join(SUPPORTED)}")
    spec = target_ffn(ffn, **overrides)
    hidden = model.config.intermediate_size
    if spec["mixing"] == "moa" and hidden % spec["gate_groups"]:
        raise ValueError(f"gate_groups={spec['gate_groups']} does not divide the MLP width intermediate_size={hidden}")
    layers = model.model.layers
    for i, layer in enumerate(layers):
        _check_mlp(i, layer.mlp, model.config.hidden_act)
    config_cls, model_cls = _classes(model_type)
    # the config object itself becomes the moa config (modules keep references to it, and it
    # carries runtime settings such as the attention implementation)
    config = model.config
    config.moa_ffn, config.moa_moe = spec, None
    config.__class__ = config_cls
    config.__dict__.pop("model_type", None)  # a loaded config may carry the base name as an attribute
    silu = spec["activations"].index("silu")
    for layer in layers:
        old = layer.mlp
        w = old.gate_proj.weight
        new = MoaMLP(config).to(device=w.device, dtype=w.dtype)
        for name in ("gate_proj", "up_proj", "down_proj"):
            getattr(new, name).weight.copy_(getattr(old, name).weight)
        if spec["mixing"] == "la":
            new.la_coef.zero_()
            new.la_coef[..., silu] = 1.0
        else:
            new.act_gate.weight.zero_()
            bias = new.act_gate.bias.view(spec["gate_groups"], -1)
            bias.zero_()
            bias[:, silu] = spec["temperature"]  # logits / τ = 1 exactly
        new.train(old.training)
        layer.mlp = new
    model.__class__ = model_cls
    return model


def save_upcycled(model, out, tokenizer_dir=None) -> Path:
    """``save_pretrained`` plus the trust_remote_code files, ``auto_map``, both RoPE θ spellings
    and the source's tokenizer files (copied from ``tokenizer_dir``)."""
    from moa.hf.export import REMOTE_FILES

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty; choose a new directory")
    model.save_pretrained(str(out), safe_serialization=True)
    here = Path(__file__).parent
    for name in REMOTE_FILES:
        shutil.copyfile(here / name, out / name)
    base = next(k for k, v in SUPPORTED.items() if v[0] == type(model.config).model_type)
    _, config_name, model_name = SUPPORTED[base]
    config = json.loads((out / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": f"configuration_moa.{config_name}",
                          "AutoModelForCausalLM": f"modeling_moa.{model_name}"}
    theta = rope_theta(model.config)
    if theta is not None:
        config["rope_theta"] = theta
    # transformers 5 keeps RoPE scaling (Llama 3's, YaRN, …) only in rope_parameters; 4.x reads
    # rope_scaling, and would silently run unscaled RoPE without it
    params = getattr(model.config, "rope_parameters", None)
    if isinstance(params, dict) and params.get("rope_type", "default") != "default" and not config.get("rope_scaling"):
        config["rope_scaling"] = {k: v for k, v in params.items() if k != "rope_theta"}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer_dir is not None:
        for path in Path(tokenizer_dir).iterdir():
            if path.is_file() and (path.name.startswith("tokenizer") or path.name in (
                    "special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json",
                    "chat_template.jinja", "chat_template.json")):
                shutil.copyfile(path, out / path.name)
    return out


def rope_theta(config):
    """RoPE θ of a config under transformers 4.x (``rope_theta``) or 5.x (``rope_parameters``)."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    theta = getattr(config, "rope_theta", None)
    return None if theta is None else float(theta)


def upcycle_dir(hf_dir, out, ffn: str = "moa-glu", dtype: str | None = None, **overrides) -> Path:
    """``moa upcycle``: load a local model directory, upcycle it, save it to ``out``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"{hf_dir} is not a transformers model directory (no config.json)")
    model_type = AutoConfig.from_pretrained(str(hf_dir), local_files_only=True).model_type
    if model_type not in SUPPORTED:
        raise ValueError(f"model_type={model_type!r} is not supported; valid: {', '.join(SUPPORTED)}")
    target_ffn(ffn, **overrides)  # fail before loading weights
    kwargs = {} if dtype is None else {"dtype": getattr(torch, dtype)}
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), local_files_only=True, **kwargs)
    upcycle(model, ffn, **overrides)
    return save_upcycled(model, out, tokenizer_dir=hf_dir)
