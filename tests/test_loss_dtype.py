"""lm_loss keeps float64 logits in float64 (train.dtype=float64 is the numerical-check mode)
and computes lower precisions in float32."""

import torch

from moa.model import ModelConfig, Transformer, lm_loss


def explicit_cross_entropy(logits_BTV: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
    """Mean of logsumexp(l) - l[target] over tokens, written out in float64."""
    l_NV = logits_BTV.reshape(-1, logits_BTV.shape[-1]).double()
    t_N = targets_BT.reshape(-1)
    return (torch.logsumexp(l_NV, -1) - l_NV.gather(1, t_N[:, None])[:, 0]).mean()


def test_float64_loss_is_float64():
    torch.manual_seed(0)
    logits = (torch.randn(3, 7, 50, dtype=torch.float64) * 4).requires_grad_()
    targets = torch.randint(0, 50, (3, 7))
    loss = lm_loss(logits, targets)
    ref = explicit_cross_entropy(logits, targets)
    assert loss.dtype == torch.float64
    assert abs(loss.item() - ref.item()) < 1e-14
    fp32 = lm_loss(logits.detach().float(), targets)
    assert fp32.dtype == torch.float32
    assert abs(fp32.double().item() - ref.item()) > 1e-12  # fp32 rounding is visible at this scale

    (grad,) = torch.autograd.grad(loss, logits)
    (grad_ref,) = torch.autograd.grad(ref, logits)
    assert grad.dtype == torch.float64
    assert (grad - grad_ref).abs().max().item() < 1e-16


def test_low_precision_logits_promote_to_float32():
    logits = torch.randn(2, 5, 11).bfloat16()
    targets = torch.randint(0, 11, (2, 5))
    loss = lm_loss(logits, targets)
    assert loss.dtype == torch.float32
    ref = explicit_cross_entropy(logits.float(), targets)
    assert abs(loss.item() - ref.item()) < 1e-5


def test_float64_model_loss():
    """A float64 model's loss equals the explicit float64 cross-entropy of its logits."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=40, d_model=32, n_layers=1, n_heads=2, ffn="moa-glu")).double()
    x = torch.randint(0, 40, (2, 9))
    y = torch.randint(0, 40, (2, 9))
    logits = model(x)
    loss = lm_loss(logits, y)
    assert loss.dtype == torch.float64
    assert abs(loss.item() - explicit_cross_entropy(logits, y).item()) < 1e-14


def test_float64_moe_balance_losses_stay_float64():
    """The MoE aux/z losses added to a float64 objective are float64 too."""
    from moa.nn import MoEConfig, moe_aux_loss

    torch.manual_seed(0)
    moe = MoEConfig(num_experts=4, top_k=2, balance="aux", aux_coef=0.01, z_coef=1e-3)
    model = Transformer(ModelConfig(vocab_size=40, d_model=32, n_layers=1, n_heads=2, ffn="swiglu", moe=moe)).double()
    model(torch.randint(0, 40, (2, 9)))
    aux = moe_aux_loss(model)
    assert aux.dtype == torch.float64 and aux.item() > 0
