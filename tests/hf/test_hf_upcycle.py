"""Upcycling pretrained Llama/Mistral/Qwen2 MLPs into LA/MoA: the exact same logits
(``torch.equal``, fp32 and bf16), a real gate gradient at init (and the saturated softmax
init it replaces), ``moa upcycle``; and ``moa train --init-from``: moa's first evaluation
equals the HF model's loss on the same batches, then training lowers it."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
    Qwen2ForCausalLM,
)

import moa.hf  # noqa: F401  (registers the moa architectures)
from moa.cli import main
from moa.hf import upcycle
from moa.hf.importer import hf_model_fields, import_hf_model
from moa.nn import build_ffn, convert_ffn, ffn_config

SIZES = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
ARCHS = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM),
         "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
X = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(3))


def tiny_hf(arch: str, seed: int = 0, **changes):
    config_cls, model_cls = ARCHS[arch]
    torch.manual_seed(seed)
    return model_cls(config_cls(**{**SIZES, **changes})).eval()


@pytest.fixture(scope="module", params=list(ARCHS))
def pretrained(request):
    return request.param, tiny_hf(request.param, rope_theta=777.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ffn,overrides", [("moa-glu", {}), ("moa-glu", {"gate_groups": 4, "temperature": 0.3}),
                                           ("la-glu", {}), ("la-glu", {"la_granularity": "channel"})])
def test_upcycled_logits_are_identical(pretrained, dtype, ffn, overrides):
    arch, base = pretrained
    model = copy.deepcopy(base).to(dtype)
    with torch.no_grad():
        before = model(X).logits
    assert upcycle(model, ffn, **overrides) is model
    assert type(model).__name__ == {"llama": "MoaForCausalLM", "mistral": "MoaMistralForCausalLM",
                                    "qwen2": "MoaQwen2ForCausalLM"}[arch]
    assert all(type(layer.mlp).__name__ == "MoaMLP" for layer in model.model.layers)
    with torch.no_grad():
        after = model(X).logits
    assert torch.equal(before, after)


def test_gate_gradient_is_real_at_init():
    """Upcycled MoA gates (gate_norm none) and LA coefficients get O(1e-3) gradients on the
    first step, where the exact softmax init (moa.nn convert_ffn) gets ~1e-13."""
    model = upcycle(tiny_hf("llama"), "moa-glu")
    model(X, labels=X).loss.backward()
    gate_grad = max(layer.mlp.act_gate.weight.grad.abs().max().item() for layer in model.model.layers)
    assert gate_grad > 1e-5
    la = upcycle(tiny_hf("llama"), "la-glu")
    la(X, labels=X).loss.backward()
    assert max(layer.mlp.la_coef.grad.abs().max().item() for layer in la.model.layers) > 1e-5
    # the softmax function-preserving init saturates: its gate gradient is ~exp(-30) smaller
    torch.manual_seed(0)
    swiglu = build_ffn(ffn_config("swiglu", hidden_dim=64), 32)
    soft = convert_ffn(swiglu, ffn_config("moa-glu", hidden_dim=64))
    x = torch.randn(64, 32)
    soft(x).square().sum().backward()
    soft_grad = soft.gate.weight.grad.abs().max().item()
    assert soft_grad < 1e-9 and gate_grad > 1e4 * soft_grad


@pytest.mark.parametrize("ffn,overrides,match", [
    ("moa-glu", {"gate_norm": "softmax"}, "cannot be exactly one-hot"),
    ("swiglu", {}, "cannot hold a SwiGLU"),
    ("moa-mlp", {}, "cannot hold a SwiGLU"),
    ("la-glu", {"activations": ("relu", "gelu")}, "lacks silu"),
    ("moa-glu", {"hidden_dim": 8}, "unknown upcycle override"),
    ("moa-glu", {"gate_groups": 3}, "gate_groups=3 does not divide the MLP width intermediate_size=64"),
])
def test_upcycle_rejects_what_it_cannot_do_exactly(ffn, overrides, match):
    with pytest.raises(ValueError, match=match):
        upcycle(tiny_hf("llama"), ffn, **overrides)


def test_upcycle_rejects_other_architectures():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=16))
    with pytest.raises(ValueError, match="model_type='gpt2' is not supported"):
        upcycle(gpt2, "moa-glu")
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        upcycle(tiny_hf("llama", hidden_act="gelu"), "moa-glu")


def test_moa_upcycle_cli_saves_a_loadable_model(tmp_path, llama_dir):
    out = tmp_path / "up"
    assert main(["upcycle", str(llama_dir), "--ffn", "moa-glu", "--out", str(out), "gate_groups=2"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "moa_llama" and cfg["moa_ffn"]["gate_groups"] == 2
    assert cfg["moa_ffn"]["gate_norm"] == "none" and cfg["rope_theta"] == 1000.0
    assert (out / "tokenizer.json").exists() and (out / "modeling_moa.py").exists()
    original = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    x = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        assert torch.equal(original(x).logits, loaded(x).logits)
    assert main(["upcycle", str(llama_dir), "--ffn", "moa-glu", "--out", str(tmp_path / "x"), "bogus=1"]) == 2


def test_upcycled_llama3_rope_scaling_is_written_for_transformers_4(tmp_path):
    """transformers 5 keeps RoPE scaling only in rope_parameters; the saved config also
    carries rope_scaling, which 4.x reads (else it would run unscaled RoPE)."""
    from moa.hf.upcycle import save_upcycled

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}
    model = tiny_hf("llama", rope_parameters={"rope_theta": 5e5, **scaling})
    x = torch.randint(0, 128, (1, 60))
    with torch.no_grad():
        before = model(x).logits
    save_upcycled(upcycle(model, "moa-glu"), tmp_path / "up")
    cfg = json.loads((tmp_path / "up" / "config.json").read_text())
    assert cfg["rope_theta"] == 5e5 and cfg["rope_scaling"] == scaling
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "up").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, before)


def test_import_matches_the_checkpoint(llama_dir, tmp_path):
    hf = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    x = torch.randint(0, 256, (2, 40))
    for ffn in ("swiglu", "la-glu", "moa-glu"):
        model = import_hf_model(llama_dir, ffn)
        with torch.no_grad():
            assert (model(x) - hf(x).logits).abs().max().item() <= 1e-5
    # a Mistral window shorter than its positions: imported for contexts up to the window
    mistral_dir = tmp_path / "mistral"
    tiny_hf("mistral", sliding_window=16, max_position_embeddings=64).save_pretrained(mistral_dir)
    assert hf_model_fields(mistral_dir)["max_seq_len"] == 16
    # a dictionary of one's own (with silu) is built from the checkpoint's SwiGLU as well
    model = import_hf_model(llama_dir, "moa-glu", activations="silu,relu2")
    assert model.config.ffn_config().activations == ("silu", "relu2")
    with torch.no_grad():
        assert (model(x) - hf(x).logits).abs().max().item() <= 1e-5


@pytest.mark.parametrize("change,match", [
    ({"attention_bias": True}, "attention bias"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}, "RoPE scaling type 'linear'"),
    ({"head_dim": 16}, "head_dim=16"),
    ({"model_type": "qwen2"}, "model_type='qwen2' is not supported"),
    ({"sliding_window": 8, "model_type": "mistral"}, "sliding_window=8"),
])
def test_init_from_unsupported_features_are_one_line_errors(tmp_path, llama_dir, change, match, capsys):
    cfg = json.loads((llama_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(ValueError, match=match):
        hf_model_fields(tmp_path, seq_len=32)
    assert main(["train", "--preset", "debug", "--init-from", str(tmp_path), "--out", str(tmp_path / "r"),
                 "train.seq_len=32", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moa: error:") and match in err and len(err.strip().splitlines()) == 1


def test_train_init_from_starts_at_the_hf_loss_and_lowers_it(tmp_path, llama_dir, corpus):
    from moa.config import config_from_dict
    from moa.data import prepare_data, val_batches
    from moa.model import lm_loss
    from moa.train.records import read_json, read_metrics

    run = tmp_path / "run"
    assert main(["train", "--preset", "debug", "--init-from", str(llama_dir), "--out", str(run), "--no-progress",
                 f"data.source=text:{corpus}", "model.ffn=moa-glu", "train.batch_size=8", "train.seq_len=32",
                 "train.tokens=5120", "train.eval_tokens=1024", "train.log_every=5", "optim.lr=3e-3"]) == 0
    cfg = config_from_dict(read_json(run / "config.json"))
    assert cfg.model.gate_norm == "none" and cfg.data.tokenizer == f"hf:{llama_dir}" and cfg.model.rope_theta == 1000.0
    evals = [e for e in read_metrics(run) if e["event"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == cfg.train.steps
    data = prepare_data(cfg.data)
    hf = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    nats = tokens = 0
    with torch.no_grad():
        for x, y in val_batches(data.val_tokens, cfg.train.seq_len, cfg.train.batch_size, cfg.train.eval_tokens):
            nats += lm_loss(hf(x).logits, y, reduction="sum").double().item()
            tokens += y.numel()
    hf_loss = nats / tokens
    assert abs(evals[0]["val_loss"] - hf_loss) <= 1e-5 * hf_loss
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.1
