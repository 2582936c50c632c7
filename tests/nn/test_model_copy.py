"""A model can be deep-copied (EMA copies, clones for evaluation) after training steps: the MoE layer's per-forward balance losses do not pin an autograd graph into copies."""

import copy

import pytest
import torch

from moa.model import ModelConfig, Transformer, lm_loss
from moa.nn import MoEConfig, moe_aux_loss, moe_layers

V = 40
MOES = {
    "dense": MoEConfig(),
    "moe-aux": MoEConfig(num_experts=4, top_k=2, shared_experts=1, balance="aux", z_coef=1e-3),
    "moe-bias": MoEConfig(num_experts=4, top_k=1, balance="bias", renormalize=False),
}


def trained(moe: MoEConfig, **model_options) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=2, ffn="moa-glu", moe=moe,
                                    **model_options))
    x, y = torch.randint(0, V, (2, 8)), torch.randint(0, V, (2, 8))
    for _ in range(2):
        loss = lm_loss(model(x), y)
        (loss + moe_aux_loss(model)).backward()
    model(x)  # a last forward with its graph still alive, as after an evaluation with grad on
    return model


@pytest.mark.parametrize("name", list(MOES))
def test_deepcopy_after_forward_and_backward(name):
    model = trained(MOES[name])
    clone = copy.deepcopy(model)
    x = torch.randint(0, V, (3, 8))
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))
    for a, b in zip(model.parameters(), clone.parameters()):
        assert a is not b and torch.equal(a, b)
    for layer, twin in zip(moe_layers(model), moe_layers(clone)):
        for key, value in twin.last_losses.items():
            assert value.grad_fn is None  # a copy holds values, not the original's graph
            assert torch.equal(value, layer.last_losses[key].detach())
        assert twin.load_counts is None or torch.equal(twin.load_counts, layer.load_counts)
    # the original keeps training: its balance losses are still differentiable
    out = model(x)
    if name != "dense":
        assert moe_aux_loss(model).requires_grad == (MOES[name].balance == "aux" or MOES[name].z_coef > 0)
    lm_loss(out, x).backward()



@pytest.mark.parametrize("name", ["dense", "moe-aux"])
def test_deepcopy_with_gate_z_loss(name):
    """MoA FFNs keep their gate z-loss from a training forward until ``gate_z_loss(model)``
    collects it; a copy taken in between holds its value, not the graph."""
    model = trained(MOES[name], gate_z_loss=1e-3)
    clone = copy.deepcopy(model)
    x = torch.randint(0, V, (3, 8))
    with torch.no_grad():
        assert torch.equal(clone.eval()(x), model.eval()(x))
    copied = [m.__dict__.get("z_loss") for m in clone.modules() if hasattr(m, "gate")]
    assert any(z is not None for z in copied) and all(z is None or z.grad_fn is None for z in copied)
