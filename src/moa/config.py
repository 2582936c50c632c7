"""Run configuration: frozen dataclasses per concern, dotted ``key=value`` overrides.

``RunConfig`` = model (:class:`moa.model.ModelConfig`) + data (:class:`moa.data.DataConfig`)
+ optim + schedule + train + seed. Each section validates itself in ``__post_init__``.
Overrides such as ``model.ffn=swiglu`` or ``train.tokens=2M`` are parsed by the field's
type annotation; unknown keys are rejected with the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from moa.data import DataConfig
from moa.model import ModelConfig


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is invalid; valid: {', '.join(map(str, choices))}")


def _positive(key: str, value, allow_zero: bool = False) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value >= 0 if allow_zero else value > 0))
    if not ok:
        raise ValueError(f"{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW everywhere, or Muon for 2-D hidden matrices with AdamW for the rest.

    ``lr`` is the AdamW learning rate; Muon uses the same ``lr`` with torch's
    ``adjust_lr_fn="match_rms_adamw"`` so one value serves both. ``weight_decay`` applies
    to matrices only (never to norms, biases, LA coefficients or gates, docs/DESIGN.md §6.1).
    """

    name: str = "adamw"
    lr: float = 3e-3
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    muon_momentum: float = 0.95
    mixing_lr_mult: float = 1.0  # LR of LA coefficients and MoA gates = lr × this (a stability option)

    def __post_init__(self) -> None:
        _choice("optim.name", self.name, ("adamw", "muon"))
        _positive("optim.lr", self.lr)
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)
        _positive("optim.grad_clip", self.grad_clip, allow_zero=True)
        _positive("optim.mixing_lr_mult", self.mixing_lr_mult)
        for key in ("beta1", "beta2", "muon_momentum"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"optim.{key}={getattr(self, key)!r} must be in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """LR multiplier over the run: linear warmup, then cosine / WSD / constant.

    warmup: fraction of steps for the linear warmup. min_lr_ratio: floor of the decay.
    decay: WSD's final decay fraction (linear to ``min_lr_ratio``).
    """

    name: str = "cosine"
    warmup: float = 0.05
    min_lr_ratio: float = 0.1
    decay: float = 0.2

    def __post_init__(self) -> None:
        _choice("schedule.name", self.name, ("cosine", "wsd", "constant"))
        for key in ("warmup", "min_lr_ratio", "decay"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"schedule.{key}={getattr(self, key)!r} must be in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How long and how: a token budget defines the run.

    batch_size: sequences per optimizer step (global); micro_batch_size splits it for
    gradient accumulation (None: no accumulation). eval_every / ckpt_every / log_every:
    steps (0: only at the end). eval_tokens: size of the fixed validation set.
    compile: "auto" (on for CUDA, off on CPU where compile time dominates short runs),
    "true", "false". device: "auto" | "cpu" | "cuda". dtype: "auto" (bf16 autocast on
    CUDA, fp32 on CPU) | "float32" | "bfloat16" (autocast) | "float64" (parameters and math in
    float64: for numerical checks). parallel: "auto" (DDP when launched on
    several processes by torchrun, else none) | "none" | "ddp" | "fsdp" (FSDP2).
    """

    tokens: int = 1_000_000
    batch_size: int = 32
    micro_batch_size: Optional[int] = None
    seq_len: int = 128
    eval_every: int = 0
    eval_tokens: int = 65536
    ckpt_every: int = 0
    log_every: int = 10
    compile: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    parallel: str = "auto"

    def __post_init__(self) -> None:
        for key in ("tokens", "batch_size", "seq_len", "eval_tokens", "log_every"):
            v = getattr(self, key)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"train.{key}={v!r} must be a positive integer")
        for key in ("eval_every", "ckpt_every"):
            v = getattr(self, key)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"train.{key}={v!r} must be an integer >= 0 (0: only at the end)")
        mb = self.micro_batch_size
        if mb is not None and (not isinstance(mb, int) or mb <= 0 or self.batch_size % mb):
            raise ValueError(f"train.micro_batch_size={mb!r} must be a positive divisor of train.batch_size={self.batch_size}")
        _choice("train.compile", self.compile, ("auto", "true", "false"))
        _choice("train.device", self.device, ("auto", "cpu", "cuda"))
        _choice("train.dtype", self.dtype, ("auto", "float32", "bfloat16", "float64"))
        _choice("train.parallel", self.parallel, ("auto", "none", "ddp", "fsdp"))
        if self.tokens < self.batch_size * self.seq_len:
            raise ValueError(f"train.tokens={self.tokens} is less than one step "
                             f"(batch_size*seq_len = {self.batch_size * self.seq_len})")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        return self.tokens // self.tokens_per_step


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an integer >= 0")
        if self.train.seq_len > self.model.max_seq_len:
            raise ValueError(f"train.seq_len={self.train.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------- overrides

def _keys(cls, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(_keys(tp, f"{prefix}{f.name}."))
        else:
            out.append(f"{prefix}{f.name}")
    return out


def valid_keys() -> list[str]:
    """Every dotted key a ``key=value`` override accepts."""
    return _keys(RunConfig)


_SUFFIX = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}


def _parse_int(text: str) -> int:
    """``7M``, ``2.01k``, ``1e3``, ``65_536`` → an int, exactly (decimal arithmetic, no float)."""
    from decimal import Decimal, InvalidOperation

    t = text.replace("_", "")
    mult = 1
    if t and t[-1] in _SUFFIX:
        t, mult = t[:-1], _SUFFIX[t[-1]]
    try:
        value = Decimal(t) * mult
    except InvalidOperation:
        raise ValueError from None
    if not value.is_finite() or value != value.to_integral_value():
        raise ValueError
    return int(value)


def _parse(text: str, tp) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        return _parse(text, args[0])
    if tp is bool:
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError
    if tp is int:
        return _parse_int(text)
    if tp is float:
        return float(text)
    if tp is str:
        return text
    raise TypeError(f"unsupported field type {tp}")


def _type_name(tp) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp)).replace("NoneType", "none")
    return getattr(tp, "__name__", str(tp))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=1", ...]`` → ``{"a.b": 1}``, typed and checked against the schema."""
    hints = {}
    for key in valid_keys():
        cls, parts = RunConfig, key.split(".")
        for part in parts[:-1]:
            cls = typing.get_type_hints(cls)[part]
        hints[key] = typing.get_type_hints(cls)[parts[-1]]
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} is not key=value (e.g. model.ffn=swiglu)")
        key, text = pair.split("=", 1)
        key = key.strip()
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(hints)}"
            raise ValueError(f"unknown key {key!r}{hint}")
        try:
            out[key] = _parse(text.strip(), hints[key])
        except ValueError:
            valid = {"bool": " (true/false, yes/no, on/off, 1/0)",
                     "int": " (e.g. 65536, 7M, 2.5k, 1e6)"}.get(_type_name(hints[key]).split(" or ")[0], "")
            raise ValueError(f"{key}={text!r} is not a valid {_type_name(hints[key])}{valid}") from None
    return out


def apply_overrides(config, overrides: dict[str, Any] | list[str]):
    """A new config with ``overrides`` applied at any depth (each section re-validated)."""
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = apply_overrides(getattr(config, head), sub)
    return dataclasses.replace(config, **direct)


def _from_dict(cls, d: dict):
    if not isinstance(d, dict):
        raise ValueError(f"config section {cls.__name__} is {type(d).__name__} {d!r}, not an object")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        if key not in hints:
            raise ValueError(f"config has unknown key {key!r} in {cls.__name__}")
        tp = hints[key]
        kwargs[key] = _from_dict(tp, value) if dataclasses.is_dataclass(tp) else value
    return cls(**kwargs)


def config_from_dict(d: dict) -> RunConfig:
    """Inverse of :meth:`RunConfig.to_dict` (as read back from ``config.json``)."""
    return _from_dict(RunConfig, d)


def diff_configs(a: RunConfig, b: RunConfig) -> list[str]:
    """Human-readable differences ``key: a → b`` between two configs."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    return [f"{k}: {fa.get(k)!r} → {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def dumps(config: RunConfig) -> str:
    return json.dumps(config.to_dict(), indent=2)
