"""Attention against an explicit float64 reference: RoPE written out pair by pair,
softmax(QKᵀ/√E + causal mask)V, GQA by explicit KV-head lookup; RoPE's relative-position
(shift) invariance; GQA equal to MHA with repeated KV heads."""

import math

import pytest
import torch

from moa.model import Attention, ModelConfig, Transformer, apply_rotary, rotary_tables

THETA = 10000.0


def rope_angles(positions, head_dim, theta=THETA):
    """angle[t, i] = t · θ^(−2i/E) for the E/2 rotation planes, in float64."""
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    return positions.to(torch.float64)[:, None] * theta ** (-2.0 * i / head_dim)[None, :]


def rope_reference(x_TE, positions):
    """Rotate plane i, the pair (x[i], x[i + E/2]) (the half-split layout), by angle[t, i]."""
    E = x_TE.shape[-1]
    angle = rope_angles(positions, E)
    out = torch.empty_like(x_TE)
    for i in range(E // 2):
        c, s = angle[:, i].cos(), angle[:, i].sin()
        a, b = x_TE[..., i], x_TE[..., i + E // 2]
        out[..., i] = a * c - b * s
        out[..., i + E // 2] = a * s + b * c
    return out


def attention_reference(attn, x_BTD, offset=0):
    """Explicit causal attention of ``attn``'s weights in float64, head by head."""
    B, T, _ = x_BTD.shape
    H, KV, E = attn.n_heads, attn.kv_heads, attn.head_dim
    q = (x_BTD @ attn.wq.weight.T).view(B, T, H, E)
    k = (x_BTD @ attn.wk.weight.T).view(B, T, KV, E)
    v = (x_BTD @ attn.wv.weight.T).view(B, T, KV, E)
    pos = torch.arange(offset, offset + T)
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)  # key j > query t is hidden
    heads = []
    for h in range(H):
        kv = h // (H // KV)  # query heads h·KV/H share one KV head (grouped-query attention)
        qh, kh = rope_reference(q[:, :, h], pos), rope_reference(k[:, :, kv], pos)
        scores = qh @ kh.transpose(1, 2) / math.sqrt(E) + mask  # (B, T, T)
        heads.append(torch.softmax(scores, dim=-1) @ v[:, :, kv])
    return torch.cat(heads, dim=-1) @ attn.wo.weight.T


def _tables(T, E, offset=0):
    angle = rope_angles(torch.arange(offset, offset + T), E)
    return angle.cos(), angle.sin()


def _attention(n_heads=4, kv=None, d=32, seed=0):
    torch.manual_seed(seed)
    attn = Attention(ModelConfig(vocab_size=10, d_model=d, n_heads=n_heads, n_kv_heads=kv)).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0.0, 0.5)  # large enough that the softmax is far from uniform
    return attn


def test_rotary_tables_equal_closed_form():
    cos, sin = rotary_tables(16, 300, THETA)
    angle = rope_angles(torch.arange(300), 16)
    torch.testing.assert_close(cos.double(), angle.cos(), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin.double(), angle.sin(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kv", [None, 2, 1])
def test_attention_equals_explicit_reference(kv):
    attn = _attention(kv=kv)
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    for offset in (0, 5):
        cos, sin = _tables(11, 8, offset)
        torch.testing.assert_close(attn(x, cos, sin), attention_reference(attn, x, offset), rtol=1e-10, atol=1e-12)


def test_transformer_equals_explicit_reference():
    """The whole LM in float64: embedding, pre-norm blocks with the attention reference
    and RMSNorm written out, final norm and tied head."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn="swiglu", max_seq_len=64)
    model = Transformer(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    cos, sin = _tables(cfg.max_seq_len, cfg.head_dim)
    model.rope_cos, model.rope_sin = cos, sin  # float64 tables: the float32 ones are checked above

    def rms(x, w):
        return x / torch.sqrt(x.square().mean(-1, keepdim=True) + cfg.norm_eps) * w

    idx = torch.randint(0, 40, (2, 13))
    x = model.embed.weight[idx]
    for block in model.blocks:
        x = x + attention_reference(block.attn, rms(x, block.attn_norm.weight))
        x = x + block.ffn(rms(x, block.ffn_norm.weight))
    expected = rms(x, model.norm.weight) @ model.embed.weight.T
    torch.testing.assert_close(model(idx), expected, rtol=1e-10, atol=1e-10)


def test_rope_scores_depend_only_on_relative_position():
    """⟨R_i q, R_j k⟩ is a function of i − j: shifting both positions leaves it unchanged,
    while changing the distance changes it."""
    E = 16
    cos, sin = _tables(200, E)  # float64 for an exact comparison; the float32 tables are checked above
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(E, dtype=torch.float64, generator=g), torch.randn(E, dtype=torch.float64, generator=g)

    def score(i, j):
        qi = apply_rotary(q.view(1, 1, 1, E), cos[i:i + 1], sin[i:i + 1]).flatten()
        kj = apply_rotary(k.view(1, 1, 1, E), cos[j:j + 1], sin[j:j + 1]).flatten()
        return float(qi @ kj)

    for i, j in [(0, 0), (7, 3), (20, 19), (50, 10)]:
        for shift in (1, 13, 100):
            assert score(i + shift, j + shift) == pytest.approx(score(i, j), rel=1e-12, abs=1e-12), (i, j, shift)
    distances = [score(9, 9 - d) for d in range(6)]
    assert min(abs(a - b) for a, b in zip(distances, distances[1:])) > 1e-3, distances


@pytest.mark.parametrize("kv", [None, 2])
def test_attention_output_is_shift_invariant(kv):
    """The same tokens at positions s … s+T−1 instead of 0 … T−1: identical outputs."""
    attn = _attention(kv=kv, seed=1)
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    base = attn(x, *_tables(9, 8))
    for offset in (1, 40):
        torch.testing.assert_close(attn(x, *_tables(9, 8, offset)), base, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kv", [2, 1])
def test_gqa_equals_mha_with_repeated_kv_heads(kv):
    gqa = _attention(kv=kv, seed=2)
    mha = _attention(kv=None, seed=3)
    E, rep = gqa.head_dim, gqa.n_heads // kv
    with torch.no_grad():
        mha.wq.weight.copy_(gqa.wq.weight)
        mha.wo.weight.copy_(gqa.wo.weight)
        for name in ("wk", "wv"):  # query head h reads KV head h // rep
            w = getattr(gqa, name).weight.view(kv, E, -1).repeat_interleave(rep, dim=0)
            getattr(mha, name).weight.copy_(w.reshape(-1, w.shape[-1]))
    x = torch.randn(3, 10, 32, dtype=torch.float64)
    cos, sin = _tables(10, E)
    torch.testing.assert_close(gqa(x, cos, sin), mha(x, cos, sin), rtol=1e-10, atol=1e-12)
