"""moa.train.runs: a config's FLOPs per token against torch's own count, and describe/load_run."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from moa.model import Transformer
from moa.nn import ffn_cost, moe_cost
from moa.presets import get_preset
from moa.train.runs import describe, flops_per_token


@pytest.mark.parametrize("preset,ffn", [("debug", "swiglu"), ("debug", "la-glu"), ("debug", "moa-glu"),
                                        ("debug", "relu"), ("debug", "moa-mlp"), ("debug-moe", "moa-glu")])
def test_flops_per_token_matches_torch_flop_counter(preset, ffn):
    cfg = get_preset(preset)
    cfg = cfg.replace(model=cfg.model.replace(ffn=ffn, vocab_size=256, n_kv_heads=1))
    m, T = cfg.model, cfg.train.seq_len
    torch.manual_seed(0)
    model = Transformer(m)
    with FlopCounterMode(display=False) as counter:  # counts every matmul; SDPA on CPU it does not see
        model(torch.randint(0, 256, (2, T)))
    ours = flops_per_token(cfg)
    cost = moe_cost(m.moe, m.ffn_config(), m.d_model) if m.moe.enabled else ffn_cost(m.ffn_config(), m.d_model)
    attention_mix = 2 * 2 * m.n_heads * m.head_dim * (T + 1) // 2  # by hand: QKᵀ and AV at the causal mean context
    assert counter.get_total_flops() / (2 * T) == ours - m.n_layers * (attention_mix + cost.elementwise_flops)
    assert describe(cfg)["flops_per_token"] == ours
