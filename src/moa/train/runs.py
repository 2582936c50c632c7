"""Run configs and run directories: a config's sizes before training, a trained run loaded back.

:func:`describe` counts the parameters and FLOPs per token (:func:`flops_per_token`) of
the model a :class:`RunConfig` describes (built on the meta device, nothing allocated);
:func:`load_run` rebuilds a trained run's model and tokenizer from its directory
(``config.json`` plus the last checkpoint, or ``model.pt`` for FSDP runs). Both sit below the CLI so that experiments
(``moa.experiments``) and commands (``moa.cli``) share them; see docs/DESIGN.md §1.
"""

from __future__ import annotations

from pathlib import Path

import torch


def describe(cfg) -> dict:
    """Parameter counts of the model ``cfg`` describes, built on the meta device."""
    from moa.model import Transformer, param_counts
    from moa.nn import ffn_cost, moe_cost
    from moa.presets import vocab_size_of

    mcfg = cfg.model if cfg.model.vocab_size else cfg.model.replace(vocab_size=vocab_size_of(cfg.data.tokenizer))
    with torch.device("meta"):
        model = Transformer(mcfg)
    cost = ffn_cost(mcfg.ffn_config(), mcfg.d_model)
    layer = {"ffn_params_per_layer": cost.params, "ffn_mixing_params_per_layer": cost.mixing_params,
             "ffn_flops_per_token_per_layer": cost.flops}
    if mcfg.moe.enabled:
        mc = moe_cost(mcfg.moe, mcfg.ffn_config(), mcfg.d_model)
        layer = {"moe_params_per_layer": mc.params_total, "moe_active_params_per_layer": mc.params_active,
                 "moe_active_flops_per_token_per_layer": mc.flops,
                 "expert_mixing_params": mc.expert.mixing_params}
    return {**param_counts(model), "vocab_size": mcfg.vocab_size, **layer,
            "flops_per_token": flops_per_token(cfg),
            "steps": cfg.train.steps, "tokens_per_step": cfg.train.tokens_per_step}


def flops_per_token(cfg) -> int:
    """Forward FLOPs per token of the whole model at ``train.seq_len`` (a training step ≈ 3×).

    Counted as in Kaplan et al. (arXiv 2001.08361, Table 1), with the FFN term exact for
    every variant: per layer the attention projections (2 per weight), the scores and the
    weighted sum (2·2·d per attended position, at the causal mean of (T+1)/2 positions),
    and the FFN's own forward FLOPs from :func:`moa.nn.ffn_cost` (MoE: the active experts,
    router and shared experts from :func:`moa.nn.moe_cost`); then the LM head (2·d·V).
    Norms, RoPE and the embedding lookup are left out (elementwise, negligible here).
    """
    from moa.nn import ffn_cost, moe_cost
    from moa.presets import vocab_size_of

    m = cfg.model
    vocab = m.vocab_size or vocab_size_of(cfg.data.tokenizer)
    e = m.head_dim
    attn_proj = 2 * m.d_model * e * (2 * m.n_heads + 2 * m.kv_heads)
    attn_mix = 2 * 2 * m.n_heads * e * (cfg.train.seq_len + 1) // 2
    ffn = moe_cost(m.moe, m.ffn_config(), m.d_model).flops if m.moe.enabled else ffn_cost(m.ffn_config(), m.d_model).flops
    return m.n_layers * (attn_proj + attn_mix + ffn) + 2 * m.d_model * vocab


def load_run(run_dir: Path):
    """(model in eval mode, tokenizer, config) of a run directory."""
    from moa.config import config_from_dict
    from moa.data import ByteTokenizer, HFTokenizer
    from moa.model import Transformer
    from moa.train.checkpoint import load_checkpoint, read_meta
    from moa.train.records import CONFIG, read_json

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise FileNotFoundError(f"{run_dir} is not a moa run directory (no {CONFIG})")
    cfg = config_from_dict(read_json(run_dir / CONFIG))
    if (run_dir / "model.pt").exists():  # FSDP runs leave consolidated weights here
        weights = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=False)
        state = read_meta(run_dir)
    else:
        state = load_checkpoint(run_dir)
        weights = state["model"]
    cfg = cfg.replace(model=cfg.model.replace(vocab_size=state["vocab_size"]))
    model = Transformer(cfg.model)
    model.load_state_dict(weights)
    model.eval()
    if state["tokenizer"] == "bytes":
        tok = ByteTokenizer()
    else:
        from tokenizers import Tokenizer

        path = run_dir / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; the run's tokenizer {state['tokenizer']} cannot be rebuilt")
        tok = HFTokenizer(Tokenizer.from_file(str(path)), state["tokenizer"], vocab_size=state["vocab_size"])
    return model, tok, cfg
