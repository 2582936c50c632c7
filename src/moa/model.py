"""Decoder-only language model, Llama-style, with any FFN of :mod:`moa.nn` (docs/DESIGN.md §4).

Token embedding → L × [RMSNorm → causal self-attention (RoPE, SDPA, optional GQA) →
residual; RMSNorm → FFN → residual] → RMSNorm → LM head (tied to the embedding by
default). The model runs on one device; parallelism is applied from outside.

Init (documented choice): every matrix ~ N(0, 0.02²); the two residual output
projections (attention ``wo`` and the FFN's ``w2``/``w3``) are scaled by 1/√(2L)
(GPT-2); norms start at 1; LA/MoA mixing parameters use their own init
(:meth:`moa.nn.FeedForward.reset_mixing_parameters`, uniform mixing by default).

Parameter counts: ``total`` counts every parameter once (tied weights once);
``non_embedding`` excludes the token embedding and, when untied, the LM head.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from moa.nn import FFNConfig, MoE, MoEConfig, build_ffn, ffn_config, moe_cost
from moa.nn.config import FFN_PRESETS, GATE_NORMS, LA_GRANULARITIES

Tensor = torch.Tensor


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture. ``vocab_size=None`` takes the tokenizer's.

    ffn: FFN preset name (:data:`moa.nn.FFN_PRESETS`); ``ffn_hidden``, ``gate_groups``,
    ``gate_norm``, ``gate_temperature``, ``la_granularity``, ``dictionary_scale`` and
    ``gate_z_loss`` (stability options, :class:`moa.nn.FFNConfig`) override the preset's
    (the gate options only matter for MoA, ``la_granularity`` only for LA).
    ``activations``: the dictionary as comma-separated names (e.g. ``relu,gelu,silu``),
    replacing the preset's; None keeps it (a fixed-σ preset takes exactly one name).
    moe: ``moe.num_experts > 0`` turns every block's FFN into an MoE layer whose experts
    are ``ffn`` FFNs (docs/DESIGN.md §5; :class:`moa.nn.MoEConfig`).
    """

    vocab_size: Optional[int] = None
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: Optional[int] = None
    ffn: str = "moa-glu"
    ffn_hidden: Optional[int] = None
    gate_groups: int = 1
    gate_norm: str = "softmax"
    gate_temperature: float = 1.0
    la_granularity: str = "layer"
    dictionary_scale: str = "none"
    gate_z_loss: float = 0.0
    activations: Optional[str] = None
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    max_seq_len: int = 2048
    norm_eps: float = 1e-6
    init_std: float = 0.02
    moe: MoEConfig = field(default_factory=MoEConfig)

    def __post_init__(self) -> None:
        if isinstance(self.activations, str):  # one spelling per dictionary: "relu, gelu" is "relu,gelu"
            object.__setattr__(self, "activations", ",".join(a.strip() for a in self.activations.split(",")))
        for name in ("d_model", "n_layers", "n_heads", "max_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"model.{name}={v!r} must be a positive integer")
        for name in ("rope_theta", "norm_eps", "init_std"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"model.{name}={v!r} must be a finite number > 0")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"model.tie_embeddings={self.tie_embeddings!r} must be true or false")
        if self.vocab_size is not None and (not isinstance(self.vocab_size, int) or self.vocab_size <= 0):
            raise ValueError(f"model.vocab_size={self.vocab_size!r} must be a positive integer or None")
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"head dim {self.d_model // self.n_heads} must be even for rotary embeddings")
        kv = self.kv_heads
        if kv <= 0 or self.n_heads % kv:
            raise ValueError(f"model.n_kv_heads={self.n_kv_heads!r} must be a positive divisor of n_heads={self.n_heads}")
        if self.ffn not in FFN_PRESETS:
            raise ValueError(f"model.ffn={self.ffn!r} is unknown; valid: {', '.join(FFN_PRESETS)}")
        if self.gate_norm not in GATE_NORMS:
            raise ValueError(f"model.gate_norm={self.gate_norm!r} is invalid; valid: {', '.join(GATE_NORMS)}")
        if self.la_granularity not in LA_GRANULARITIES:
            raise ValueError(f"model.la_granularity={self.la_granularity!r} is invalid; valid: {', '.join(LA_GRANULARITIES)}")
        self.ffn_config().resolve_hidden_dim(self.d_model)  # validates widths and groups up front
        if self.moe.enabled:
            self.moe.expert_ffn(self.ffn_config(), self.d_model)

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def ffn_config(self) -> FFNConfig:
        extra = {}
        if self.activations is not None:
            names = tuple(a.strip() for a in self.activations.split(",") if a.strip())
            try:
                extra["activations"] = FFN_PRESETS[self.ffn].replace(activations=names).activations
            except ValueError as exc:
                raise ValueError(f"model.activations={self.activations!r}: {exc}") from None
        return ffn_config(self.ffn, hidden_dim=self.ffn_hidden, gate_groups=self.gate_groups,
                          gate_norm=self.gate_norm, temperature=self.gate_temperature,
                          la_granularity=self.la_granularity, dictionary_scale=self.dictionary_scale,
                          gate_z_loss=self.gate_z_loss, **extra)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def rotary_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (max_seq_len, head_dim/2) for RoPE (Su et al., 2021)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x_BHTE: Tensor, cos_TE: Tensor, sin_TE: Tensor) -> Tensor:
    """Rotate pairs (x[..., :E/2], x[..., E/2:]) by position-dependent angles."""
    x1, x2 = x_BHTE.chunk(2, dim=-1)
    cos, sin = cos_TE.to(x_BHTE.dtype), sin_TE.to(x_BHTE.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    """Causal multi-head self-attention with RoPE and optional grouped-query heads."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x_BTD: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, T, _ = x_BTD.shape
        q = self.wq(x_BTD).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, E)
        k = self.wk(x_BTD).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x_BTD).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv_heads != self.n_heads)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        if cfg.moe.enabled:
            self.ffn = MoE(cfg.moe, cfg.ffn_config(), cfg.d_model)
        else:
            self.ffn = build_ffn(cfg.ffn_config(), cfg.d_model)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    """The LM: ``forward(idx (B, T) int64) -> logits (B, T, vocab)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("model.vocab_size is None: resolve it from the tokenizer before building")
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std, out_std = self.config.init_std, self.config.init_std / math.sqrt(2 * self.config.n_layers)
        nn.init.normal_(self.embed.weight, std=std)
        if not self.config.tie_embeddings:
            nn.init.normal_(self.head.weight, std=std)
        for block in self.blocks:
            for lin in (block.attn.wq, block.attn.wk, block.attn.wv):
                nn.init.normal_(lin.weight, std=std)
            nn.init.normal_(block.attn.wo.weight, std=out_std)
            if isinstance(block.ffn, MoE):
                block.ffn.reset_parameters(std, out_std)
            else:
                for lin in (block.ffn.w1, block.ffn.w2):
                    nn.init.normal_(lin.weight, std=std)
                nn.init.normal_(block.ffn.output_proj.weight, std=out_std)
                block.ffn.reset_mixing_parameters()
            for norm in (block.attn_norm, block.ffn_norm):
                nn.init.ones_(norm.weight)
        nn.init.ones_(self.norm.weight)

    def forward(self, idx_BT: Tensor) -> Tensor:
        T = idx_BT.shape[1]
        if T > self.config.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds model.max_seq_len={self.config.max_seq_len}")
        x = self.embed(idx_BT)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.norm(x))

    def param_counts(self) -> dict[str, int]:
        return param_counts(self)


def param_counts(model: Transformer) -> dict[str, int]:
    """``total`` (each tensor once), ``non_embedding`` (no embedding / untied head), and
    ``active`` / ``active_non_embedding``: what one token uses (MoE: top-k experts)."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())  # parameters() de-duplicates tied weights
    embedding = model.embed.weight.numel()
    if not cfg.tie_embeddings:
        embedding += model.head.weight.numel()
    inactive = 0
    if cfg.moe.enabled:
        cost = moe_cost(cfg.moe, cfg.ffn_config(), cfg.d_model)
        inactive = cfg.n_layers * (cost.params_total - cost.params_active)
    return {"total": total, "non_embedding": total - embedding, "active": total - inactive,
            "active_non_embedding": total - embedding - inactive}


def lm_loss(logits_BTV: Tensor, targets_BT: Tensor, reduction: str = "mean") -> Tensor:
    """Next-token cross-entropy in nats, computed in at least fp32 (bf16/fp16 logits are
    promoted; float64 logits, the numerical-check mode, stay float64)."""
    dtype = torch.promote_types(logits_BTV.dtype, torch.float32)
    return F.cross_entropy(logits_BTV.flatten(0, 1).to(dtype), targets_BT.flatten(), reduction=reduction)
