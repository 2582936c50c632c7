"""Run presets: plain functions returning a :class:`RunConfig`, keyed by name.

``debug`` (d=32, seconds on a CPU) and ``demo`` (the default of ``moa train``, a few
minutes on 2 CPU cores) come first; ``cpu-*`` sizes fit a laptop; ``gpu-*`` sizes follow
the paper's dense models (≈0.12B–2B parameters). Every preset uses the offline stdlib
corpus by default; override ``data.source`` / ``data.tokenizer`` for real corpora.
Parameter counts are printed by ``moa presets`` (computed, not hard-coded).
"""

from __future__ import annotations

from typing import Callable

from moa.config import OptimConfig, RunConfig, ScheduleConfig, TrainConfig
from moa.data import DataConfig
from moa.model import ModelConfig
from moa.nn import MoEConfig


def debug() -> RunConfig:
    """Test size: d=32, 2 layers, bytes; well under a minute on 2 CPU cores."""
    return RunConfig(
        model=ModelConfig(d_model=32, n_layers=2, n_heads=2, ffn="moa-glu", max_seq_len=256),
        optim=OptimConfig(lr=1e-2),
        train=TrainConfig(tokens=400_000, batch_size=16, seq_len=64, eval_tokens=16_384, log_every=10),
    )


def demo() -> RunConfig:
    """An MoA (moa-glu) byte-level LM on the stdlib corpus, a few minutes on 2 CPU cores."""
    return RunConfig(
        model=ModelConfig(d_model=96, n_layers=3, n_heads=3, ffn="moa-glu", max_seq_len=256),
        optim=OptimConfig(lr=6e-3),
        train=TrainConfig(tokens=3_000_000, batch_size=32, seq_len=128, eval_tokens=65_536, eval_every=100,
                          log_every=10),
    )


def quick() -> RunConfig:
    """For ``moa compare --preset quick``: d=64, 2 layers, 1M tokens per run (~30 s on 2 cores)."""
    return RunConfig(
        model=ModelConfig(d_model=64, n_layers=2, n_heads=2, ffn="moa-glu", max_seq_len=256),
        optim=OptimConfig(lr=6e-3),
        train=TrainConfig(tokens=1_000_000, batch_size=16, seq_len=128, eval_tokens=32_768, eval_every=100,
                          log_every=10),
    )


def _sized(d: int, layers: int, heads: int, tokens: int, lr: float, batch: int, seq: int,
           tokenizer: str = "bytes") -> Callable[[], RunConfig]:
    def preset() -> RunConfig:
        return RunConfig(
            model=ModelConfig(d_model=d, n_layers=layers, n_heads=heads, ffn="moa-glu", max_seq_len=max(seq, 256)),
            data=DataConfig(tokenizer=tokenizer),
            optim=OptimConfig(lr=lr),
            schedule=ScheduleConfig(),
            train=TrainConfig(tokens=tokens, batch_size=batch, seq_len=seq, eval_every=200,
                              eval_tokens=262_144, ckpt_every=500),
        )
    preset.__doc__ = f"d={d}, {layers} layers, {heads} heads, {tokenizer}, {tokens:,} tokens"
    return preset


def _moe(dense: Callable[[], RunConfig], experts: int, top_k: int, expert_hidden: int, shared: int = 0,
         doc: str = "") -> Callable[[], RunConfig]:
    """``dense`` with every FFN an MoE of ``experts`` experts of width ``expert_hidden``."""
    def preset() -> RunConfig:
        cfg = dense()
        moe = MoEConfig(num_experts=experts, top_k=top_k, expert_hidden=expert_hidden, shared_experts=shared)
        return cfg.replace(model=cfg.model.replace(moe=moe))
    preset.__doc__ = doc or f"MoE: {experts} experts, top-{top_k}, expert width {expert_hidden}; {dense.__doc__}"
    return preset


#: name → preset function; ``moa presets`` lists them with their sizes.
PRESETS: dict[str, Callable[[], RunConfig]] = {
    "debug": debug,
    "demo": demo,
    "quick": quick,
    "cpu-xs": _sized(64, 2, 2, 5_000_000, 6e-3, 32, 128),
    "cpu-s": _sized(128, 4, 4, 20_000_000, 4e-3, 32, 256),
    "cpu-m": _sized(256, 4, 4, 50_000_000, 3e-3, 32, 256, "bpe:4096"),
    "cpu-l": _sized(384, 6, 6, 100_000_000, 2e-3, 32, 256, "bpe:8192"),
    "gpu-125m": _sized(768, 12, 12, 2_500_000_000, 1.5e-3, 256, 1024, "bpe:32768"),
    "gpu-350m": _sized(1024, 24, 16, 7_000_000_000, 1e-3, 256, 1024, "bpe:32768"),
    "gpu-760m": _sized(1536, 24, 16, 15_000_000_000, 8e-4, 512, 1024, "bpe:32768"),
    "gpu-1.3b": _sized(2048, 24, 16, 26_000_000_000, 6e-4, 512, 1024, "bpe:32768"),
    "gpu-2b": _sized(2560, 24, 20, 40_000_000_000, 5e-4, 512, 1024, "bpe:32768"),
}
# MoE presets: top-2 of 8 experts at half the dense FFN width, so the active parameters
# per token match the dense preset of the same size (about; `moa presets` prints both).
PRESETS.update({
    "debug-moe": _moe(debug, 4, 2, 48),
    "cpu-s-moe": _moe(PRESETS["cpu-s"], 8, 2, 176),
    "cpu-m-moe": _moe(PRESETS["cpu-m"], 8, 2, 352),
    "gpu-125m-moe": _moe(PRESETS["gpu-125m"], 8, 2, 1024),
    "gpu-350m-moe": _moe(PRESETS["gpu-350m"], 8, 2, 1376),
    "gpu-1.3b-moe": _moe(PRESETS["gpu-1.3b"], 16, 2, 1824, shared=1),
})


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]()


def vocab_size_of(tokenizer: str) -> int:
    """Vocabulary size implied by a tokenizer spec (``hf:`` needs loading: 50,304 assumed)."""
    if tokenizer == "bytes":
        return 256
    if tokenizer.startswith("bpe:"):
        return int(tokenizer[4:])
    return 50_304
