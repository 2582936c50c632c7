"""Import a local Llama/Mistral checkpoint into moa's ``Transformer`` (``moa train --init-from``).

The architecture comes from the checkpoint's ``config.json`` (:func:`hf_model_fields`),
the weights are mapped to moa's names (the inverse of :func:`moa.hf.export.hf_state_dict`),
and every SwiGLU FFN is converted function-preservingly into the requested FFN
(:func:`moa.nn.convert_ffn`: LA one-hot on silu; MoA with ``gate_norm="none"``, zero
gate weights and one-hot biases, exact and with a real gate gradient, see
:mod:`moa.hf.upcycle`). Features moa's model does not have fail with a one-line error
naming them: attention/MLP biases, RoPE scaling, head dims other than d/heads,
activations other than SiLU, a sliding window shorter than the training context.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from moa.model import ModelConfig, Transformer

SUPPORTED = ("llama", "mistral")
ARCH_KEYS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "tie_embeddings",
             "rope_theta", "norm_eps", "max_seq_len")


def read_hf_config(hf_dir) -> dict:
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--init-from {hf_dir}: no config.json (not a transformers model directory)")
    return json.loads(path.read_text())


def _rope(cfg: dict) -> tuple[float, str]:
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    return float(theta), kind


def hf_model_fields(hf_dir, seq_len: int | None = None) -> dict:
    """``ModelConfig`` fields (``ARCH_KEYS``) of a local Llama/Mistral model; one-line errors
    for what moa's Transformer cannot represent."""
    cfg = read_hf_config(hf_dir)
    where = f"--init-from {hf_dir}"
    kind = cfg.get("model_type")
    if kind not in SUPPORTED:
        raise ValueError(f"{where}: model_type={kind!r} is not supported; valid: {', '.join(SUPPORTED)}")
    d, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    problems = []
    if cfg.get("attention_bias"):
        problems.append("attention bias (attention_bias=True)")
    if cfg.get("mlp_bias"):
        problems.append("MLP bias (mlp_bias=True)")
    theta, rope_type = _rope(cfg)
    if rope_type != "default":
        problems.append(f"RoPE scaling type {rope_type!r}")
    head_dim = cfg.get("head_dim") or d // heads
    if head_dim * heads != d:
        problems.append(f"head_dim={head_dim} with hidden_size={d}, num_attention_heads={heads} (needs head_dim = d/heads)")
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        problems.append(f"hidden_act={cfg.get('hidden_act')!r} (needs silu)")
    window = cfg.get("sliding_window")
    if window is not None and seq_len is not None and window < seq_len:
        problems.append(f"sliding_window={window} shorter than train.seq_len={seq_len}")
    if problems:
        raise ValueError(f"{where}: unsupported: {'; '.join(problems)}")
    return {"vocab_size": cfg["vocab_size"], "d_model": d, "n_layers": cfg["num_hidden_layers"], "n_heads": heads,
            "n_kv_heads": cfg.get("num_key_value_heads") or heads, "ffn_hidden": cfg["intermediate_size"],
            "tie_embeddings": bool(cfg.get("tie_word_embeddings", False)), "rope_theta": theta,
            "norm_eps": float(cfg.get("rms_norm_eps", 1e-6)),
            # moa attends over the whole context: exact only up to a sliding window (Mistral)
            "max_seq_len": min(cfg.get("max_position_embeddings", 2048), window or 1 << 62)}


def load_hf_weights(hf_dir) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (all ``*.safetensors`` files, or ``pytorch_model.bin``), in fp32."""
    hf_dir = Path(hf_dir)
    files = sorted(hf_dir.glob("*.safetensors"))
    state = {}
    if files:
        from safetensors.torch import load_file

        for f in files:
            state.update(load_file(str(f)))
    elif (hf_dir / "pytorch_model.bin").is_file():
        state = torch.load(hf_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"--init-from {hf_dir}: no *.safetensors or pytorch_model.bin weights")
    return {k: v.float() for k, v in state.items()}


def _moa_names(n_layers: int) -> dict[str, str]:
    """transformers name → moa name for a SwiGLU Llama."""
    names = {"model.embed_tokens.weight": "embed.weight", "model.norm.weight": "norm.weight",
             "lm_head.weight": "head.weight"}
    for i in range(n_layers):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        for w, p in zip("qkvo", ("q_proj", "k_proj", "v_proj", "o_proj")):
            names[f"{h}self_attn.{p}.weight"] = f"{b}attn.w{w}.weight"
        names[f"{h}input_layernorm.weight"] = f"{b}attn_norm.weight"
        names[f"{h}post_attention_layernorm.weight"] = f"{b}ffn_norm.weight"
        for p, w in (("gate_proj", "w1"), ("up_proj", "w2"), ("down_proj", "w3")):
            names[f"{h}mlp.{p}.weight"] = f"{b}ffn.{w}.weight"
    return names


@torch.no_grad()
def moa_state_from_hf(hf_dir, model_config: ModelConfig) -> dict[str, torch.Tensor]:
    """A state dict for ``Transformer(model_config)`` holding the checkpoint's function.

    ``model_config`` must carry the checkpoint's architecture (:func:`hf_model_fields`);
    its ``ffn`` is any Type-II preset whose dictionary contains silu.
    """
    from moa.nn import convert_ffn

    fields = hf_model_fields(hf_dir)
    mismatch = [k for k in ARCH_KEYS if k != "max_seq_len" and getattr(model_config, k) != fields[k]]
    if mismatch:
        raise ValueError(f"model.{mismatch[0]}={getattr(model_config, mismatch[0])!r} differs from the "
                         f"--init-from checkpoint's {fields[mismatch[0]]!r}; drop that override")
    if model_config.moe.enabled:
        raise ValueError("--init-from does not build MoE layers; leave moe.num_experts=0")
    target = model_config.ffn_config()
    if target.kind != "glu" or "silu" not in target.activations:
        raise ValueError(f"model.ffn={model_config.ffn!r} cannot hold the checkpoint's SwiGLU function; "
                         "valid: a Type-II preset with silu in its dictionary (swiglu, la-glu, moa-glu)")
    source = Transformer(model_config.replace(ffn="swiglu", activations=None))  # the checkpoint's own MLP
    weights = load_hf_weights(hf_dir)
    names = _moa_names(model_config.n_layers)
    if model_config.tie_embeddings:
        weights.pop("lm_head.weight", None)
        names.pop("lm_head.weight")
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"--init-from {hf_dir}: unsupported weights {unknown[:3]}")
    state = {names[k]: v for k, v in weights.items()}
    if model_config.tie_embeddings:
        state["head.weight"] = state["embed.weight"]
    source.load_state_dict(state, strict=True)
    for block in source.blocks:
        block.ffn = convert_ffn(block.ffn, target)
    return source.state_dict()


def import_hf_model(hf_dir, ffn: str = "moa-glu", **model_overrides) -> Transformer:
    """moa's ``Transformer`` computing the same function as the local checkpoint ``hf_dir``.

    MoA targets default to ``gate_norm="none"`` (the exact, trainable init).
    """
    fields = hf_model_fields(hf_dir)
    model_overrides.setdefault("gate_norm", "none")
    cfg = ModelConfig(**{**fields, "ffn": ffn, **model_overrides})
    model = Transformer(cfg)
    model.load_state_dict(moa_state_from_hf(hf_dir, cfg))
    return model.eval()


def init_from_config(base, hf_dir, overrides: list[str]):
    """The ``RunConfig`` of ``moa train --init-from HF_DIR``: ``base`` (a preset) with the
    checkpoint's architecture, its own tokenizer (``data.tokenizer=hf:HF_DIR``) and, for MoA,
    ``model.gate_norm=none`` (the exact trainable init), then the user's ``overrides``
    (which may not change the architecture)."""
    from moa.config import apply_overrides, parse_overrides

    user = parse_overrides(overrides)
    seq_len = user.get("train.seq_len", base.train.seq_len)
    fields = hf_model_fields(hf_dir, seq_len)
    clash = [k for k in user if k.startswith("model.") and k[len("model."):] in ARCH_KEYS]
    if clash:
        raise ValueError(f"{clash[0]} comes from the --init-from checkpoint {hf_dir}; drop that override")
    defaults = {"model.gate_norm": "none", "data.tokenizer": f"hf:{hf_dir}", "model.moe.num_experts": 0}
    return apply_overrides(base, {**defaults, **{f"model.{k}": v for k, v in fields.items()}, **user})
