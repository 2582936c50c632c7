"""Fixtures for the Hugging Face tests: tiny moa models and run directories, a small real
corpus, and tiny random transformers models built from configs (nothing is downloaded)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from moa.config import RunConfig, TrainConfig
from moa.data import DataConfig
from moa.data.sources import stdlib_root
from moa.model import ModelConfig, Transformer
from moa.train.checkpoint import save_checkpoint
from moa.train.records import CONFIG, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

CORPUS_MODULES = ("textwrap.py", "string.py", "glob.py", "fnmatch.py", "shlex.py", "heapq.py", "bisect.py",
                  "copy.py", "colorsys.py", "keyword.py", "numbers.py", "abc.py")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A folder of 12 real text files (stdlib modules, ~150 kB)."""
    root = tmp_path_factory.mktemp("hf-corpus")
    for name in CORPUS_MODULES:
        shutil.copyfile(stdlib_root() / name, root / name)
    return root


def tiny_config(**changes) -> ModelConfig:
    """d=32, 2 layers, 4 heads, byte vocab: the size every HF test uses."""
    base = dict(vocab_size=256, d_model=32, n_layers=2, n_heads=4, ffn="moa-glu", max_seq_len=64)
    return ModelConfig(**{**base, **changes})


def tiny_model(seed: int = 0, **changes) -> Transformer:
    """A tiny moa model with non-trivial mixing (gates, LA coefficients, norms and MoE
    expert biases perturbed away from their init) and sharp attention (query/key weights
    x10, so attention logits are O(1) and RoPE θ changes the output), in eval mode."""
    torch.manual_seed(seed)
    model = Transformer(tiny_config(**changes))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("gate", "la_coef", "norm")):
                p.add_(0.5 * torch.randn_like(p))
            if name.endswith(("attn.wq.weight", "attn.wk.weight")):
                p.mul_(10.0)
        for name, b in model.named_buffers():
            if name.endswith("expert_bias"):
                b.copy_(0.05 * torch.randn_like(b))
    return model.eval()


def write_run(run_dir: Path, model: Transformer, tokenizer, data: DataConfig = DataConfig(),
              seq_len: int = 32, eval_tokens: int = 2048) -> Path:
    """A run directory as the trainer leaves it (config.json + checkpoint.pt [+ tokenizer.json])."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True)
    cfg = RunConfig(model=model.config, data=data,
                    train=TrainConfig(tokens=4096, batch_size=4, seq_len=seq_len, eval_tokens=eval_tokens))
    write_json(run_dir / CONFIG, cfg.to_dict())
    save_checkpoint(run_dir, {"step": 0, "vocab_size": model.config.vocab_size, "tokenizer": tokenizer.spec,
                              "model": model.state_dict(), "optimizers": [], "config": cfg.to_dict()})
    if tokenizer.spec != "bytes":
        tokenizer.backend.save(str(run_dir / "tokenizer.json"))
    return run_dir


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    """A tiny random LlamaForCausalLM (GQA, untied, θ=1000, eps=1e-5) with moa's byte
    tokenizer, saved with save_pretrained."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from moa.data import ByteTokenizer
    from moa.hf.tokenizer import save_hf_tokenizer

    out = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rope_theta=1000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=None, eos_token_id=255)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    save_hf_tokenizer(ByteTokenizer(), out, 64)
    return out
