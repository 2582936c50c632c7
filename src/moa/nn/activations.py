"""The activation dictionary: elementwise functions keyed by the paper's names.

Each entry is an :class:`Activation`: callable like a function, and able to apply its
vector-Jacobian product ``grad ⊙ σ'(z)`` through torch's own fused backward kernels
(``gelu_backward``, ``silu_backward``, ...). The memory-efficient mixing ops
(:mod:`moa.nn.functional`) recompute activations in backward and need that product
without an autograd graph; the native kernels make the recompute cost one pass each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
aten = torch.ops.aten

LEAKY_RELU_SLOPE = 0.01
SOFTPLUS_THRESHOLD = 20.0  # torch's default: softplus(z) = z above it, derivative 1


@dataclass(frozen=True)
class Activation:
    """An elementwise activation σ.

    ``fn(z)`` is σ(z); ``vjp(grad, z)`` is ``grad ⊙ σ'(z)``. ``flops`` is a nominal
    per-element cost used only by the FLOP accounting (:mod:`moa.nn.accounting`).
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    vjp: Callable[[Tensor, Tensor], Tensor]
    flops: int

    def __call__(self, z: Tensor) -> Tensor:
        return self.fn(z)

    def derivative(self, z: Tensor) -> Tensor:
        """σ'(z) (at kinks, the convention of torch's own backward)."""
        return self.vjp(torch.ones_like(z), z)


def _relu2(z: Tensor) -> Tensor:
    return F.relu(z).square()


def _relu2_vjp(grad: Tensor, z: Tensor) -> Tensor:
    return F.relu(z).mul_(2.0).mul_(grad)


def _gelu_tanh(z: Tensor) -> Tensor:
    return F.gelu(z, approximate="tanh")


def _leaky_relu(z: Tensor) -> Tensor:
    return F.leaky_relu(z, LEAKY_RELU_SLOPE)


def _softplus(z: Tensor) -> Tensor:
    return F.softplus(z, beta=1.0, threshold=SOFTPLUS_THRESHOLD)


def _identity(z: Tensor) -> Tensor:
    return z


_ENTRIES = (
    Activation("relu", F.relu, lambda g, z: aten.threshold_backward(g, z, 0.0), 1),
    Activation("gelu", F.gelu, lambda g, z: aten.gelu_backward(g, z), 8),
    Activation("gelu_tanh", _gelu_tanh, lambda g, z: aten.gelu_backward(g, z, approximate="tanh"), 8),
    Activation("silu", F.silu, lambda g, z: aten.silu_backward(g, z), 4),
    Activation("relu2", _relu2, _relu2_vjp, 2),
    Activation("tanh", torch.tanh, lambda g, z: aten.tanh_backward(g, torch.tanh(z)), 4),
    Activation("sigmoid", torch.sigmoid, lambda g, z: aten.sigmoid_backward(g, torch.sigmoid(z)), 4),
    Activation("softplus", _softplus, lambda g, z: aten.softplus_backward(g, z, 1.0, SOFTPLUS_THRESHOLD), 4),
    Activation("identity", _identity, lambda g, z: g, 0),
    Activation("leaky_relu", _leaky_relu, lambda g, z: aten.leaky_relu_backward(g, z, LEAKY_RELU_SLOPE, False), 1),
)

#: name -> activation; every entry is an elementwise function ``Tensor -> Tensor``.
ACTIVATIONS: dict[str, Activation] = {a.name: a for a in _ENTRIES}

#: The paper's default dictionary for LA and MoA (docs/DESIGN.md §3.2).
def gaussian_rms(name: str) -> float:
    """``sqrt(E[σ(z)²])`` for z ~ N(0, 1): the scale of σ at unit-variance pre-activations.

    Used by ``dictionary_scale="rms"`` (docs/DESIGN.md §3.6) to divide each
    σ_k by a constant so every dictionary entry is equally loud at init. Computed once in
    float64 by the trapezoid rule on [−12, 12] (tails below 1e-30); e.g. relu √(1/2),
    relu2 √(3/2) in closed form.
    """
    if name not in _RMS:
        z = torch.linspace(-12.0, 12.0, 240_001, dtype=torch.float64)
        density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        _RMS[name] = float(torch.trapezoid(get_activation(name)(z).square() * density, z).sqrt())
    return _RMS[name]


_RMS: dict[str, float] = {}

DEFAULT_DICTIONARY: tuple[str, ...] = ("relu", "gelu", "silu", "relu2")


def get_activation(name: str) -> Activation:
    """Look up ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}"
        ) from None
