"""Export a moa model or run directory as a ``transformers`` model directory.

A dense fixed-σ GLU model (swiglu, geglu, reglu) is exactly a ``LlamaForCausalLM``
(``w1, w2, w3`` = ``gate_proj, up_proj, down_proj``; ``hidden_act`` = σ). Every other
model (Type-I, LA, MoA, MoE) becomes ``MoaForCausalLM`` (:mod:`moa.hf.modeling_moa`),
whose two source files are copied into the directory and named in ``auto_map``.

Pitfalls pinned by tests (measured with transformers 4.57 and 5.x):

* 5.x serialises RoPE θ only inside ``rope_parameters``; 4.57 reads the top-level
  ``rope_theta`` and silently falls back to 10,000 without it, so both are written.
* ``max_position_embeddings`` (model) and ``model_max_length`` (tokenizer) are the run's
  ``train.seq_len``: the context the model was trained on (lm-eval's window length).
* Tied embeddings are saved once (``tie_word_embeddings``).
* ``moa_config.json`` keeps the run's config, so ``moa eval`` can find its validation split.

Weight names (moa → transformers), ``i`` a layer and ``e`` an expert:
``embed`` → ``model.embed_tokens``; ``blocks.i.attn.w{q,k,v,o}`` →
``model.layers.i.self_attn.{q,k,v,o}_proj``; ``attn_norm``/``ffn_norm`` →
``input_layernorm``/``post_attention_layernorm``; FFN ``w1, w2, w3`` (Type-II) →
``mlp.gate_proj, up_proj, down_proj``, ``w1, w2`` (Type-I) → ``mlp.up_proj, down_proj``,
``gate`` → ``mlp.act_gate``, ``la_coef`` → ``mlp.la_coef``; MoE ``router``,
``experts.e``, ``shared_experts.e``, ``expert_bias`` keep their names under ``mlp``;
``norm`` → ``model.norm``; ``head`` → ``lm_head``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch

from moa.model import ModelConfig, Transformer
from moa.nn.config import FFNConfig

#: fixed-σ GLU activations that transformers' Llama implements exactly (ACT2FN names)
LLAMA_ACTS = {"silu": "silu", "gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_pytorch_tanh"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
REMOTE_FILES = ("configuration_moa.py", "modeling_moa.py")
RUN_CONFIG = "moa_config.json"


def is_plain_llama(cfg: ModelConfig) -> bool:
    """Whether the model is exactly a ``LlamaForCausalLM`` (dense fixed-σ GLU)."""
    f = cfg.ffn_config()
    return not cfg.moe.enabled and f.kind == "glu" and f.mixing == "fixed" and f.activations[0] in LLAMA_ACTS


def _ffn_dict(f: FFNConfig) -> dict:
    from moa.nn.activations import gaussian_rms

    rms = [gaussian_rms(a) for a in f.activations] if f.dictionary_scale == "rms" else None
    return {"kind": f.kind, "mixing": f.mixing, "activations": list(f.activations), "gate_groups": f.gate_groups,
            "gate_norm": f.gate_norm, "temperature": f.temperature, "la_granularity": f.la_granularity,
            "dictionary_rms": rms}


def hf_config(cfg: ModelConfig, seq_len: int, eos_id: Optional[int], dtype: str = "float32"):
    """The ``LlamaConfig`` or ``MoaConfig`` describing ``cfg`` with context ``seq_len``."""
    from transformers import LlamaConfig

    from moa.hf.configuration_moa import MoaConfig

    if cfg.vocab_size is None:
        raise ValueError("model.vocab_size is None: resolve it from the tokenizer before exporting")
    f = cfg.ffn_config()
    common = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_dim,
        max_position_embeddings=seq_len, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False, initializer_range=cfg.init_std,
        bos_token_id=None, eos_token_id=eos_id, pad_token_id=None, torch_dtype=dtype, use_cache=True,
    )
    if is_plain_llama(cfg):
        return LlamaConfig(intermediate_size=f.resolve_hidden_dim(cfg.d_model), hidden_act=LLAMA_ACTS[f.activations[0]],
                           **common)
    moe = None
    hidden = f.resolve_hidden_dim(cfg.d_model)
    if cfg.moe.enabled:
        m = cfg.moe
        ef = m.expert_ffn(f, cfg.d_model)
        hidden = ef.resolve_hidden_dim(cfg.d_model)
        moe = {"num_experts": m.num_experts, "top_k": m.top_k, "shared_experts": m.shared_experts, "router": m.router,
               "renormalize": m.renormalize, "balance": m.balance}
    return MoaConfig(intermediate_size=hidden, hidden_act="silu", moa_ffn=_ffn_dict(f), moa_moe=moe, **common)


def _ffn_names(ffn, prefix: str, out: str) -> dict[str, str]:
    glu = ffn.config.kind == "glu"
    names = {"w1": "gate_proj" if glu else "up_proj", "w2": "up_proj" if glu else "down_proj", "w3": "down_proj",
             "gate": "act_gate", "la_coef": "la_coef"}
    return {f"{prefix}{k}": f"{out}{names[k.split('.')[0]]}{k[len(k.split('.')[0]):]}" for k in ffn.state_dict()}


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """moa weights under transformers names (``lm_head.weight`` included even when tied)."""
    from moa.nn import MoE

    sd = model.state_dict()
    names = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
             "head.weight": "lm_head.weight"}
    for i, block in enumerate(model.blocks):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        for w, p in zip("qkvo", ("q_proj", "k_proj", "v_proj", "o_proj")):
            names[f"{b}attn.w{w}.weight"] = f"{h}self_attn.{p}.weight"
        names[f"{b}attn_norm.weight"] = f"{h}input_layernorm.weight"
        names[f"{b}ffn_norm.weight"] = f"{h}post_attention_layernorm.weight"
        ffn = block.ffn
        if isinstance(ffn, MoE):
            names[f"{b}ffn.router.weight"] = f"{h}mlp.router.weight"
            names[f"{b}ffn.expert_bias"] = f"{h}mlp.expert_bias"
            for group in ("experts", "shared_experts"):
                for e, expert in enumerate(getattr(ffn, group)):
                    names.update(_ffn_names(expert, f"{b}ffn.{group}.{e}.", f"{h}mlp.{group}.{e}."))
        else:
            names.update(_ffn_names(ffn, f"{b}ffn.", f"{h}mlp."))
    missing = set(sd) - set(names)
    if missing:
        raise ValueError(f"no transformers name for moa weights {sorted(missing)[:4]}")
    return {names[k]: v for k, v in sd.items()}


def build_hf_model(model: Transformer, seq_len: int, eos_id: Optional[int], dtype: str = "float32"):
    """A ``transformers`` causal LM computing the same function as ``model`` (eval mode)."""
    from transformers import LlamaForCausalLM

    from moa.hf.modeling_moa import MoaForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"--dtype={dtype!r} is invalid; valid: {', '.join(DTYPES)}")
    config = hf_config(model.config, seq_len, eos_id, dtype)
    cls = LlamaForCausalLM if is_plain_llama(model.config) else MoaForCausalLM
    hf = cls(config)
    state = {k: v.detach().to("cpu", torch.float32) for k, v in hf_state_dict(model).items()}
    hf.load_state_dict(state, strict=True)
    return hf.to(DTYPES[dtype]).eval()


def _generation_config(eos_id: Optional[int]):
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=eos_id, pad_token_id=eos_id, bos_token_id=None, do_sample=False)


def export_model(model: Transformer, tokenizer, seq_len: int, out, dtype: str = "float32",
                 run_config: Optional[dict] = None) -> Path:
    """Write ``model`` (and its moa ``tokenizer``) as a transformers directory ``out``."""
    from moa.hf.tokenizer import save_hf_tokenizer

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    eos = tokenizer.eos_id
    hf = build_hf_model(model, seq_len, eos, dtype)
    hf.generation_config = _generation_config(eos)
    hf.save_pretrained(str(out), safe_serialization=True)
    save_hf_tokenizer(tokenizer, out, seq_len)
    config = json.loads((out / "config.json").read_text())
    # both RoPE spellings: 4.57 reads rope_theta, 5.x rope_parameters (module docstring)
    config["rope_theta"] = model.config.rope_theta
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": model.config.rope_theta}
    config.pop("rope_scaling", None)
    config["max_position_embeddings"] = seq_len
    if not is_plain_llama(model.config):
        here = Path(__file__).parent
        for name in REMOTE_FILES:
            shutil.copyfile(here / name, out / name)
        config["auto_map"] = {"AutoConfig": "configuration_moa.MoaConfig",
                              "AutoModelForCausalLM": "modeling_moa.MoaForCausalLM"}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if run_config is not None:
        (out / RUN_CONFIG).write_text(json.dumps(run_config, indent=2) + "\n")
    return out


def export_run(run_dir, out, dtype: str = "float32") -> Path:
    """``moa export``: the run's final weights, tokenizer and config as a transformers directory."""
    from moa.train.runs import load_run

    model, tok, cfg = load_run(Path(run_dir))
    return export_model(model, tok, cfg.train.seq_len, out, dtype, run_config=cfg.to_dict())
