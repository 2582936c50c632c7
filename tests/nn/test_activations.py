"""The activation registry: names, errors, and derivatives against autograd."""

import math

import pytest
import torch

from moa.nn import ACTIVATIONS, DEFAULT_DICTIONARY, get_activation

REQUIRED = ["relu", "gelu", "gelu_tanh", "silu", "relu2", "tanh", "sigmoid", "softplus", "identity", "leaky_relu"]


def test_registry_holds_required_names():
    assert set(REQUIRED) <= set(ACTIVATIONS)
    assert set(DEFAULT_DICTIONARY) == {"relu", "gelu", "silu", "relu2"}


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        get_activation("swish2")
    msg = str(e.value)
    assert "swish2" in msg and all(n in msg for n in REQUIRED) and "\n" not in msg


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_vjp_matches_autograd(name):
    act = ACTIVATIONS[name]
    z = torch.cat([torch.linspace(-25, 25, 2001, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)])
    z.requires_grad_()
    g = torch.randn_like(z)
    (expected,) = torch.autograd.grad(act(z), z, g)
    torch.testing.assert_close(act.vjp(g, z.detach()), expected, rtol=1e-12, atol=1e-12)
    (ones,) = torch.autograd.grad(act(z).sum(), z)
    torch.testing.assert_close(act.derivative(z.detach()), ones, rtol=1e-12, atol=1e-12)


def test_known_values():
    z = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(ACTIVATIONS["relu2"](z), torch.tensor([0.0, 0.25, 9.0], dtype=torch.float64))
    torch.testing.assert_close(ACTIVATIONS["leaky_relu"](z), torch.tensor([-0.02, 0.5, 3.0], dtype=torch.float64))
    torch.testing.assert_close(ACTIVATIONS["identity"](z), z)


def test_derivatives_at_kinks_and_thresholds_are_explicit_values():
    """At 0 and −0 (where finite differences are not used) σ' has fixed, written-out values
    (torch's conventions at the kinks), and softplus switches to the identity above 20."""
    at_zero = {"relu": 0.0, "leaky_relu": 0.01, "relu2": 0.0, "identity": 1.0, "gelu": 0.5, "gelu_tanh": 0.5,
               "silu": 0.5, "tanh": 1.0, "sigmoid": 0.25, "softplus": 0.5}
    assert set(at_zero) == set(ACTIVATIONS)
    z = torch.tensor([0.0, -0.0], dtype=torch.float64)
    for name, value in at_zero.items():
        assert ACTIVATIONS[name].derivative(z).tolist() == [value, value], name
    sp = ACTIVATIONS["softplus"].derivative(torch.tensor([20.0, 20.5], dtype=torch.float64)).tolist()
    assert sp[0] == pytest.approx(1 / (1 + math.exp(-20.0)), rel=1e-15, abs=0) and sp[1] == 1.0
    assert ACTIVATIONS["relu2"].derivative(torch.tensor([3.0, -3.0], dtype=torch.float64)).tolist() == [6.0, 0.0]
