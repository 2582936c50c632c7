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
