"""The activation dictionary: elementwise functions keyed by the paper's names.

Each entry is an :class:`Activation`, callable like a function, that also knows its
derivative. The memory-efficient mixing op (:mod:`moa.nn.functional`) recomputes the
activations in backward and needs ``σ_k'(z)`` without keeping autograd graphs around.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_TANH_C = 0.044715
LEAKY_RELU_SLOPE = 0.01
SOFTPLUS_THRESHOLD = 20.0  # torch's default: softplus(z) = z above it, derivative 1


@dataclass(frozen=True)
class Activation:
    """An elementwise activation σ with its derivative σ'.

    ``value_and_derivative`` returns both at once so shared work (e.g. the sigmoid in
    SiLU) is done once in the backward recompute. ``flops`` is a nominal per-element
    cost used only by the FLOP accounting (:mod:`moa.nn.accounting`).
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    value_and_derivative: Callable[[Tensor], tuple[Tensor, Tensor]]
    flops: int

    def __call__(self, z: Tensor) -> Tensor:
        return self.fn(z)

    def derivative(self, z: Tensor) -> Tensor:
        return self.value_and_derivative(z)[1]


def _relu_vd(z: Tensor) -> tuple[Tensor, Tensor]:
    return F.relu(z), (z > 0).to(z.dtype)


def _gelu_vd(z: Tensor) -> tuple[Tensor, Tensor]:
    cdf = 0.5 * (1.0 + torch.erf(z * _INV_SQRT_2))
    pdf = torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
    return z * cdf, cdf + z * pdf


def _gelu_tanh_vd(z: Tensor) -> tuple[Tensor, Tensor]:
    z2 = z * z
    t = torch.tanh(_SQRT_2_OVER_PI * z * (1.0 + _GELU_TANH_C * z2))
    value = 0.5 * z * (1.0 + t)
    deriv = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * z2)
    return value, deriv


def _silu_vd(z: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(z)
    value = z * s
    return value, s + value * (1.0 - s)


def _relu2_vd(z: Tensor) -> tuple[Tensor, Tensor]:
    r = F.relu(z)
    return r * r, 2.0 * r


def _relu2(z: Tensor) -> Tensor:
    return F.relu(z).square()


def _tanh_vd(z: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.tanh(z)
    return t, 1.0 - t * t


def _sigmoid_vd(z: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(z)
    return s, s * (1.0 - s)


def _softplus_vd(z: Tensor) -> tuple[Tensor, Tensor]:
    above = z > SOFTPLUS_THRESHOLD
    deriv = torch.where(above, torch.ones_like(z), torch.sigmoid(z))
    return F.softplus(z, beta=1.0, threshold=SOFTPLUS_THRESHOLD), deriv


def _identity(z: Tensor) -> Tensor:
    return z


def _identity_vd(z: Tensor) -> tuple[Tensor, Tensor]:
    return z, torch.ones_like(z)


def _leaky_relu(z: Tensor) -> Tensor:
    return F.leaky_relu(z, LEAKY_RELU_SLOPE)


def _leaky_relu_vd(z: Tensor) -> tuple[Tensor, Tensor]:
    pos = z > 0
    deriv = torch.where(pos, torch.ones_like(z), torch.full_like(z, LEAKY_RELU_SLOPE))
    return F.leaky_relu(z, LEAKY_RELU_SLOPE), deriv


def _gelu_tanh(z: Tensor) -> Tensor:
    return F.gelu(z, approximate="tanh")


_ENTRIES = (
    Activation("relu", F.relu, _relu_vd, 1),
    Activation("gelu", F.gelu, _gelu_vd, 8),
    Activation("gelu_tanh", _gelu_tanh, _gelu_tanh_vd, 8),
    Activation("silu", F.silu, _silu_vd, 4),
    Activation("relu2", _relu2, _relu2_vd, 2),
    Activation("tanh", torch.tanh, _tanh_vd, 4),
    Activation("sigmoid", torch.sigmoid, _sigmoid_vd, 4),
    Activation("softplus", F.softplus, _softplus_vd, 4),
    Activation("identity", _identity, _identity_vd, 0),
    Activation("leaky_relu", _leaky_relu, _leaky_relu_vd, 1),
)

#: name -> activation; every entry is an elementwise function ``Tensor -> Tensor``.
ACTIVATIONS: dict[str, Activation] = {a.name: a for a in _ENTRIES}

#: The paper's default dictionary for LA and MoA (MOA.md §1).
DEFAULT_DICTIONARY: tuple[str, ...] = ("relu", "gelu", "silu", "relu2")


def get_activation(name: str) -> Activation:
    """Look up ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}"
        ) from None
