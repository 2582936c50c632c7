"""FFN configuration: a frozen, validated dataclass and the named presets.

Design choices the paper's abstract leaves open, written down here (docs/DESIGN.md §3.3):

* ``init="uniform"`` starts LA at ``a_k = 1/K`` and MoA at ``W_g = 0`` with the biases
  that make every gate ``1/K`` (``log 1/K`` under softmax, ``logit 1/K`` under sigmoid,
  ``1/K`` under "none"; :func:`moa.nn.ffn.gate_logits_for`), i.e. MoA starts out as
  uniform LA and learns to depart from it.
* Settings of one mixing are ignored by the others, so one override can apply to every
  variant of a comparison: ``dictionary_scale`` is a no-op for ``mixing="fixed"`` (one
  activation), ``gate_groups``, ``gate_norm``, ``temperature`` and ``gate_z_loss`` act on
  MoA's gates only, ``la_granularity`` on LA only.
* ``init=<activation name>`` is the function-preserving init: the FFN starts out
  computing the fixed baseline with that activation. It is exact for LA and for MoA with
  ``gate_norm="none"``; with softmax/sigmoid gates the other activations keep a weight of
  about ``exp(-init_logit_gap)`` (a one-hot softmax needs infinite logits, and infinite
  logits would never train), i.e. equal to the baseline to ~1e-13 at the default gap.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from moa.nn.activations import ACTIVATIONS, DEFAULT_DICTIONARY, get_activation
from moa.nn.triton_mix import kernel_codes

KINDS = ("mlp", "glu")
MIXINGS = ("fixed", "la", "moa")
GATE_NORMS = ("softmax", "sigmoid", "none")
LA_GRANULARITIES = ("layer", "channel")
IMPLS = ("auto", "fused", "triton", "reference")
DICTIONARY_SCALES = ("none", "rms")
GLU_WIDTH_MULTIPLE = 32


def _one_of(field: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{field}={value!r} is invalid; valid: {', '.join(map(str, choices))}")


@dataclass(frozen=True, kw_only=True)
class FFNConfig:
    """One feed-forward block (docs/DESIGN.md §3).

    kind: "mlp" (Type-I, ``w2 σ(w1 x)``) or "glu" (Type-II, ``w3 (σ(w1 x) ⊙ w2 x)``).
    mixing: "fixed" (one σ), "la" (learned ``Σ a_k σ_k``), "moa" (per-token gates ``g(x)``).
    activations: dictionary names from :data:`moa.nn.ACTIVATIONS`; exactly one for "fixed".
    hidden_dim: width m; ``None`` → 4d for "mlp", ceil(8d/3) to a multiple of 32 for "glu".
    gate_groups: G, MoA gate groups over contiguous blocks of hidden units (m % G == 0).
    gate_norm: "softmax" | "sigmoid" | "none" over the K gate logits.
    temperature: τ > 0 dividing the gate logits.
    la_granularity: "layer" (``a`` of shape (K,)) or "channel" (shape (m, K)).
    init: "uniform", or an activation name in ``activations`` (function-preserving init).
    init_logit_gap: logit margin of the function-preserving init under softmax/sigmoid.
    impl: "fused" (memory-efficient custom autograd op), "triton" (fused Triton kernels,
        CUDA; :mod:`moa.nn.triton_mix`), "auto" (triton on CUDA when Triton is installed and
        every activation has a kernel formula, else fused) or "reference" (explicit sum).
    dictionary_scale: "none", or "rms": each σ_k is divided by its RMS under z ~ N(0, 1)
        (:func:`moa.nn.activations.gaussian_rms`, a constant), so no entry (ReLU² grows as
        z²) dominates the mixture by scale alone; LA/MoA only, from-scratch init only.
    gate_z_loss: coefficient c of the MoA gate z-loss ``c · mean(logsumexp(logits)²)``
        (ST-MoE, arXiv 2202.08906) added to the training objective (not to the reported
        loss), which keeps gate logits from growing without bound; 0 disables it.
    """

    kind: str = "glu"
    mixing: str = "fixed"
    activations: tuple[str, ...] = ("silu",)
    hidden_dim: Optional[int] = None
    gate_groups: int = 1
    gate_norm: str = "softmax"
    temperature: float = 1.0
    la_granularity: str = "layer"
    init: str = "uniform"
    init_logit_gap: float = 30.0
    impl: str = "auto"
    dictionary_scale: str = "none"
    gate_z_loss: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.activations, (list, str)):
            acts = (self.activations,) if isinstance(self.activations, str) else self.activations
            object.__setattr__(self, "activations", tuple(acts))
        if not isinstance(self.activations, tuple):
            raise ValueError(f"activations={self.activations!r} must be a tuple of names from: "
                             f"{', '.join(sorted(ACTIVATIONS))}")
        _one_of("kind", self.kind, KINDS)
        _one_of("mixing", self.mixing, MIXINGS)
        _one_of("gate_norm", self.gate_norm, GATE_NORMS)
        _one_of("la_granularity", self.la_granularity, LA_GRANULARITIES)
        _one_of("impl", self.impl, IMPLS)
        _one_of("dictionary_scale", self.dictionary_scale, DICTIONARY_SCALES)
        if self.dictionary_scale != "none" and self.init != "uniform":
            raise ValueError(f"dictionary_scale={self.dictionary_scale!r} needs init='uniform' (a function-preserving "
                             f"init={self.init!r} assumes unscaled activations)")
        if not (isinstance(self.gate_z_loss, (int, float)) and math.isfinite(self.gate_z_loss)
                and self.gate_z_loss >= 0):
            raise ValueError(f"gate_z_loss={self.gate_z_loss!r} must be a finite number >= 0")
        if len(self.activations) == 0:
            raise ValueError(
                f"activations is empty; give at least one of: {', '.join(sorted(ACTIVATIONS))}"
            )
        for name in self.activations:
            get_activation(name)
        if len(set(self.activations)) != len(self.activations):
            raise ValueError(f"activations={self.activations!r} has duplicates; list each name once")
        if self.mixing == "fixed" and len(self.activations) != 1:
            raise ValueError(
                f"mixing='fixed' needs exactly one activation, got {len(self.activations)}: "
                f"{self.activations!r}; use mixing='la' or 'moa' to mix several"
            )
        if self.impl == "triton" and self.mixing != "fixed":
            kernel_codes(self.activations)  # one-line error for an activation without a kernel formula
        if self.hidden_dim is not None and (not isinstance(self.hidden_dim, int) or self.hidden_dim <= 0):
            raise ValueError(f"hidden_dim={self.hidden_dim!r} must be a positive integer or None")
        if isinstance(self.gate_groups, bool) or not isinstance(self.gate_groups, int) or self.gate_groups <= 0:
            raise ValueError(f"gate_groups={self.gate_groups!r} must be a positive integer")
        if self.hidden_dim is not None and self.mixing == "moa" and self.hidden_dim % self.gate_groups:
            raise ValueError(
                f"hidden_dim={self.hidden_dim} is not divisible by gate_groups={self.gate_groups}"
            )
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ValueError(f"temperature={self.temperature!r} must be a finite number > 0")
        if not (isinstance(self.init_logit_gap, (int, float)) and math.isfinite(self.init_logit_gap)
                and self.init_logit_gap > 0):
            raise ValueError(f"init_logit_gap={self.init_logit_gap!r} must be a finite number > 0")
        if self.init != "uniform" and self.init not in self.activations:
            raise ValueError(
                f"init={self.init!r} is invalid; valid: uniform, {', '.join(self.activations)}"
            )

    @property
    def num_activations(self) -> int:
        return len(self.activations)

    def resolve_hidden_dim(self, d_model: int) -> int:
        """Hidden width m for model width ``d_model`` (checked against gate groups)."""
        if not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model={d_model!r} must be a positive integer")
        if self.hidden_dim is not None:
            m = self.hidden_dim
        elif self.kind == "mlp":
            m = 4 * d_model
        else:
            m = GLU_WIDTH_MULTIPLE * math.ceil(8 * d_model / 3 / GLU_WIDTH_MULTIPLE)
        if self.mixing == "moa" and m % self.gate_groups:
            raise ValueError(f"hidden width {m} is not divisible by gate_groups={self.gate_groups}")
        return m

    def replace(self, **changes) -> "FFNConfig":
        return dataclasses.replace(self, **changes)


def _preset(kind: str, mixing: str, acts: tuple[str, ...]) -> FFNConfig:
    return FFNConfig(kind=kind, mixing=mixing, activations=acts)


#: Named FFN variants. Fixed baselines, then LA and MoA over the default dictionary.
FFN_PRESETS: dict[str, FFNConfig] = {
    "relu": _preset("mlp", "fixed", ("relu",)),
    "gelu": _preset("mlp", "fixed", ("gelu",)),
    "relu2": _preset("mlp", "fixed", ("relu2",)),
    "silu": _preset("mlp", "fixed", ("silu",)),
    "swiglu": _preset("glu", "fixed", ("silu",)),
    "geglu": _preset("glu", "fixed", ("gelu",)),
    "reglu": _preset("glu", "fixed", ("relu",)),
    "la-mlp": _preset("mlp", "la", DEFAULT_DICTIONARY),
    "la-glu": _preset("glu", "la", DEFAULT_DICTIONARY),
    "moa-mlp": _preset("mlp", "moa", DEFAULT_DICTIONARY),
    "moa-glu": _preset("glu", "moa", DEFAULT_DICTIONARY),
}


def ffn_config(name: str, **overrides) -> FFNConfig:
    """The preset ``name`` with fields replaced by ``overrides`` (validated)."""
    if name not in FFN_PRESETS:
        raise ValueError(f"unknown FFN preset {name!r}; valid: {', '.join(FFN_PRESETS)}")
    fields = {f.name for f in dataclasses.fields(FFNConfig)}
    for key in overrides:
        if key not in fields:
            raise ValueError(f"unknown FFNConfig field {key!r}; valid: {', '.join(sorted(fields))}")
    return dataclasses.replace(FFN_PRESETS[name], **overrides)
