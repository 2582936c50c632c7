"""The activation registry: names, errors, and derivatives against autograd."""

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
def test_value_and_derivative_match_autograd(name):
    act = ACTIVATIONS[name]
    # avoid the kinks of relu-like functions, where the derivative is a convention
    z = torch.linspace(-25, 25, 2001, dtype=torch.float64)
    z = z[(z.abs() > 1e-3)].requires_grad_()
    y = act(z)
    (grad,) = torch.autograd.grad(y.sum(), z)
    value, deriv = act.value_and_derivative(z.detach())
    torch.testing.assert_close(value, y.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(deriv, grad, rtol=1e-10, atol=1e-12)


def test_known_values():
    z = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(ACTIVATIONS["relu2"](z), torch.tensor([0.0, 0.25, 9.0], dtype=torch.float64))
    torch.testing.assert_close(ACTIVATIONS["leaky_relu"](z), torch.tensor([-0.02, 0.5, 3.0], dtype=torch.float64))
    torch.testing.assert_close(ACTIVATIONS["identity"](z), z)
