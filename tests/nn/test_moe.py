"""MoE layer: fast dispatch vs the per-token reference, routing, balancing, errors, accounting."""

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn as nn

from moa.nn import (
    FFNConfig, MoE, MoEConfig, ffn_config, ffn_cost, mixing_parameter_names, moe_aux_loss, moe_cost,
    moe_layers, moe_metrics, moe_reference_forward, moe_update_bias, router_parameter_names,
)

D, E = 16, 4
DICT = ("relu", "gelu", "silu", "relu2")

EXPERTS = {  # every kind × mixing, small widths
    "relu": FFNConfig(kind="mlp", mixing="fixed", activations=("relu",), hidden_dim=32),
    "swiglu": FFNConfig(kind="glu", mixing="fixed", activations=("silu",), hidden_dim=32),
    "la-mlp-channel": FFNConfig(kind="mlp", mixing="la", activations=DICT, hidden_dim=32, la_granularity="channel"),
    "la-glu": FFNConfig(kind="glu", mixing="la", activations=DICT, hidden_dim=32),
    "moa-mlp": FFNConfig(kind="mlp", mixing="moa", activations=DICT, hidden_dim=32, gate_groups=2,
                         gate_norm="sigmoid"),
    "moa-glu": FFNConfig(kind="glu", mixing="moa", activations=DICT, hidden_dim=32),
}


def randomise(module, seed=0, scale=0.5):
    """Random values for every parameter (inits are too symmetric to test routing/gates)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def make(ffn="swiglu", seed=0, dtype=torch.float64, **moe):
    moe = {"num_experts": E, "top_k": 2, **moe}
    torch.manual_seed(seed)
    layer = MoE(MoEConfig(**moe), EXPERTS[ffn] if isinstance(ffn, str) else ffn, D).to(dtype)
    return randomise(layer, seed)


def grads(fn, module, x):
    """Output and grads of a fixed linear functional; unused parameters count as zero."""
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).view_as(y)).sum()
    params = list(module.parameters())
    gs = torch.autograd.grad(loss, [x, *params], allow_unused=True)
    gs = [torch.zeros_like(t) if g is None else g for g, t in zip(gs, [x, *params])]
    return y.detach(), gs


def assert_same(a, b, module, atol):
    (ya, ga), (yb, gb) = a, b
    torch.testing.assert_close(ya, yb, atol=atol, rtol=atol)
    names = ["x"] + [n for n, _ in module.named_parameters()]
    for name, u, v in zip(names, ga, gb):
        torch.testing.assert_close(u, v, atol=atol, rtol=atol, msg=lambda m: f"grad of {name}: {m}")


@pytest.mark.parametrize("ffn,router,shared,renormalize",
                         list(itertools.product(EXPERTS, ("softmax", "sigmoid"), (0, 1), (True, False))))
def test_matches_reference(ffn, router, shared, renormalize):
    layer = make(ffn, router=router, shared_experts=shared, renormalize=renormalize, dispatch="loop")
    x = torch.randn(2, 5, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert_same(grads(layer, layer, x), grads(lambda t: moe_reference_forward(layer, t), layer, x), layer, 1e-10)


@pytest.mark.parametrize("router", ["softmax", "sigmoid"])
def test_bias_selects_but_does_not_weight(router):
    layer = make("moa-glu", router=router, balance="bias", top_k=1, renormalize=False, dispatch="loop")
    x = torch.randn(12, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        layer.expert_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0]))  # everyone picks expert 3
    assert_same(grads(layer, layer, x), grads(lambda t: moe_reference_forward(layer, t), layer, x), layer, 1e-10)
    assert layer.last_load.tolist() == [0.0, 0.0, 0.0, 1.0]
    # the combine weight is the unbiased score of expert 3
    _, scores, _, weights = layer.route(x)
    torch.testing.assert_close(weights[:, 0], scores[:, 3])


GROUPED_CASES = ["relu", "swiglu", "la-glu", "moa-glu",
                 FFNConfig(kind="mlp", mixing="moa", activations=("relu", "gelu", "silu"), hidden_dim=32,
                           gate_groups=2)]  # 6 gate logits: padded to 16-byte rows


@pytest.mark.parametrize("ffn", GROUPED_CASES, ids=lambda f: f if isinstance(f, str) else "moa-mlp-G2K3")
def test_grouped_gemm_matches_loop(ffn):
    """torch._grouped_mm has a CPU implementation for float32 in torch 2.13: test it here."""
    loop = make(ffn, dtype=torch.float32, shared_experts=1, dispatch="loop")
    grouped = make(ffn, dtype=torch.float32, shared_experts=1, dispatch="grouped")
    grouped.load_state_dict(loop.state_dict())
    x = torch.randn(3, 7, D, generator=torch.Generator().manual_seed(3))
    assert_same(grads(grouped, grouped, x), grads(loop, loop, x), loop, 2e-5)


def test_grouped_gemm_refuses_clearly():
    with pytest.raises(ValueError, match="does not support la_granularity='channel'"):
        make("la-mlp-channel", dispatch="grouped")
    layer = make("swiglu", dispatch="grouped")  # float64: no grouped GEMM
    with pytest.raises(RuntimeError, match="dispatch='grouped' cannot run here: .*float64"):
        layer(torch.randn(4, D, dtype=torch.float64))
    layer = make("swiglu", dispatch="auto")  # auto falls back to the loop on CPU
    torch.testing.assert_close(layer(torch.ones(4, D, dtype=torch.float64)),
                               moe_reference_forward(layer, torch.ones(4, D, dtype=torch.float64)))


@pytest.mark.parametrize("router", ["softmax", "sigmoid"])
@pytest.mark.parametrize("ffn", ["swiglu", "moa-mlp"])
def test_uniform_router_with_all_experts_is_the_average(router, ffn):
    layer = make(ffn, top_k=E, router=router)
    with torch.no_grad():
        layer.router.weight.zero_()  # every score equal: renormalised weights 1/E
    x = torch.randn(9, D, dtype=torch.float64)
    expected = sum(expert(x) for expert in layer.experts) / E
    torch.testing.assert_close(layer(x), expected, atol=1e-12, rtol=1e-12)


def _softmax(row):
    exps = [math.exp(v) for v in row]
    return [v / sum(exps) for v in exps]


@pytest.mark.parametrize("router", ["softmax", "sigmoid"])
def test_aux_and_z_loss_by_hand(router):
    """Switch aux loss aux_coef·E·Σ_e f_e·P_e and z-loss z_coef·mean_n logsumexp(l_n)²."""
    aux_coef, z_coef = 0.01, 1e-3
    layer = make("relu", num_experts=3, top_k=1, router=router, aux_coef=aux_coef, z_coef=z_coef)
    w = [[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]]  # (E=3, 4 used dims)
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[:, :4] = torch.tensor(w, dtype=torch.float64)
    xs = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, -2.0]]
    x = torch.zeros(4, D, dtype=torch.float64)
    x[:, :4] = torch.tensor(xs, dtype=torch.float64)
    layer(x)
    logits = [[sum(wi * xi for wi, xi in zip(w_e, x_n)) for w_e in w] for x_n in xs]
    # logits: [1,0,0], [0,2,0], [.5,1,0], [0,0,2]: top-1 experts 0, 1, 1, 2
    assert [max(range(3), key=row.__getitem__) for row in logits] == [0, 1, 1, 2]
    f = [1 / 4, 2 / 4, 1 / 4]  # fraction of routed rows per expert
    if router == "softmax":
        probs = [_softmax(row) for row in logits]
    else:  # sigmoid scores, normalised to sum 1 per token for P_e
        sig = [[1 / (1 + math.exp(-v)) for v in row] for row in logits]
        probs = [[v / sum(row) for v in row] for row in sig]
    P = [sum(p[e] for p in probs) / 4 for e in range(3)]
    aux = aux_coef * 3 * sum(fe * pe for fe, pe in zip(f, P))
    z = z_coef * sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits) / 4
    assert layer.last_load.tolist() == f
    assert layer.last_losses["aux_loss"].item() == pytest.approx(aux, rel=1e-12)
    assert layer.last_losses["z_loss"].item() == pytest.approx(z, rel=1e-12)
    (layer.last_losses["aux_loss"] + layer.last_losses["z_loss"]).backward()
    assert layer.router.weight.grad.abs().sum() > 0  # differentiable, into the router


@pytest.mark.parametrize("balance", ["bias", "none"])
def test_aux_loss_is_zero_without_aux_balancing(balance):
    layer = make("relu", balance=balance)
    layer(torch.randn(5, D, dtype=torch.float64))
    assert layer.last_losses["aux_loss"].item() == 0.0
    assert layer.last_losses["z_loss"].item() > 0
    layer = make("relu", z_coef=0.0)
    layer(torch.randn(5, D, dtype=torch.float64))
    assert layer.last_losses["z_loss"].item() == 0.0 and layer.last_losses["aux_loss"].item() > 0


def _imbalance(load):
    return (load.max() / load.min().clamp_min(1e-9)).item()


@pytest.mark.parametrize("router,skew,rate,steps", [("softmax", 0.2, 3e-3, 200), ("sigmoid", 0.4, 5e-3, 150)])
def test_bias_balancing_evens_out_a_skewed_router(router, skew, rate, steps):
    layer = make("relu", dtype=torch.float32, router=router, balance="bias", bias_rate=rate)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        layer.router.weight.normal_(0, 0.3, generator=gen)
        layer.router.weight[0] += skew  # a large weight toward expert 0 (inputs have mean 1)
    x = torch.randn(512, D, generator=gen) + 1.0
    with torch.no_grad():
        layer(x)
    assert _imbalance(layer.last_load) > 2.5
    layer.train()
    loads = []
    with torch.no_grad():
        for _ in range(steps):
            for micro in x.chunk(2):  # two micro-batches per optimizer step
                layer(micro)
            loads.append(layer.load_counts / layer.load_counts.sum())
            layer.update_bias()
            assert layer.load_counts is None
    # a fixed-step sign update ends in a small limit cycle around the balanced load
    assert _imbalance(torch.stack(loads[-20:]).mean(0)) < 1.05
    assert max(_imbalance(l) for l in loads[-20:]) < 1.1
    layer.eval()
    layer(x)  # evaluation does not count towards the bias update
    assert layer.load_counts is None


def test_update_bias_is_a_no_op_for_other_modes():
    layer = make("relu", balance="aux").train()
    layer(torch.randn(8, D, dtype=torch.float64))
    layer.update_bias()
    assert layer.load_counts is None and layer.expert_bias.abs().sum() == 0


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("dispatch", ["loop", "grouped"])
def test_no_token_is_dropped(top_k, dispatch):
    """All tokens pick expert 0: each still gets exactly top_k weighted contributions."""
    layer = make("moa-glu", dtype=torch.float32, top_k=top_k, renormalize=False, dispatch=dispatch)
    with torch.no_grad():
        for expert in layer.experts[1:]:  # identical experts: y = (Σ selected weights)·f(x)
            expert.load_state_dict(layer.experts[0].state_dict())
        layer.router.weight.zero_()
        layer.router.weight[0] = 1.0
    x = torch.rand(64, D, generator=torch.Generator().manual_seed(5)) + 0.5  # all-positive: expert 0 wins
    y = layer(x)
    assert layer.last_load[0].item() == 1 / top_k  # all 64 tokens routed to expert 0
    _, _, experts, weights = layer.route(x)
    assert (experts[:, 0] == 0).all()
    torch.testing.assert_close(y, weights.sum(-1, keepdim=True) * layer.experts[0](x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y, moe_reference_forward(layer, x), atol=1e-5, rtol=1e-5)
    y.sum().backward()  # idle experts get zero (not missing) gradients, as DDP needs
    if top_k == 1:
        for expert in layer.experts[1:]:
            assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in expert.parameters())


def test_shapes_and_empty_input():
    layer = make("la-glu", shared_experts=1)
    assert layer(torch.randn(2, 3, D, dtype=torch.float64)).shape == (2, 3, D)
    # (an LA/MoA FFN itself fails on 0 tokens in functional._chunk_rows, so fixed experts here)
    assert make("swiglu", shared_experts=1)(torch.randn(0, D, dtype=torch.float64)).shape == (0, D)


def _one_line_error(exc_type, match, fn):
    with pytest.raises(exc_type, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_config_errors_are_one_line():
    _one_line_error(ValueError, r"top_k=5 exceeds moe.num_experts=4; valid: 1..4",
                    lambda: MoEConfig(num_experts=4, top_k=5))
    _one_line_error(ValueError, r"top_k=0 must be an integer >= 1", lambda: MoEConfig(num_experts=4, top_k=0))
    _one_line_error(ValueError, r"zero experts", lambda: MoE(MoEConfig(num_experts=0), EXPERTS["relu"], D))
    _one_line_error(ValueError, r"balance='loss' is invalid; valid: aux, bias, none",
                    lambda: MoEConfig(num_experts=4, balance="loss"))
    _one_line_error(ValueError, r"router='relu' is invalid; valid: softmax, sigmoid",
                    lambda: MoEConfig(num_experts=4, router="relu"))
    _one_line_error(ValueError, r"aux_coef=-1 must be", lambda: MoEConfig(num_experts=4, aux_coef=-1))
    _one_line_error(ValueError, r"dispatch='fast' is invalid", lambda: MoEConfig(dispatch="fast"))
    _one_line_error(ValueError, r"not divisible by gate_groups",
                    lambda: MoE(MoEConfig(num_experts=2, expert_hidden=30), ffn_config("moa-glu", gate_groups=4), D))
    assert not MoEConfig().enabled  # the default (0 experts, top_k=2) is a valid "no MoE"
    with pytest.raises(Exception):
        MoEConfig(num_experts=2).num_experts = 3  # frozen
    with pytest.raises(TypeError):
        MoEConfig(2)  # keyword-only


@pytest.mark.parametrize("ffn,moe", [
    (ffn_config("swiglu"), dict(num_experts=8, top_k=2)),
    (ffn_config("moa-glu"), dict(num_experts=4, top_k=1, shared_experts=2, expert_hidden=64)),
    (ffn_config("la-mlp", la_granularity="channel"), dict(num_experts=3, top_k=3, expert_hidden=48)),
    (ffn_config("moa-mlp", gate_groups=4), dict(num_experts=6, top_k=2, shared_experts=1)),
])
def test_moe_cost_counts_real_parameters(ffn, moe):
    cfg = MoEConfig(**moe)
    layer = MoE(cfg, ffn, D)
    cost = moe_cost(cfg, ffn, D)
    assert cost.params_total == sum(p.numel() for p in layer.parameters())
    expert = sum(p.numel() for p in layer.experts[0].parameters())
    assert cost.expert.params == expert
    assert cost.router_params == D * cfg.num_experts
    assert cost.params_active == D * cfg.num_experts + (cfg.top_k + cfg.shared_experts) * expert
    assert cost.matmul_flops == 2 * D * cfg.num_experts + (cfg.top_k + cfg.shared_experts) * cost.expert.matmul_flops


def test_moe_cost_by_hand():
    # SwiGLU experts of width 64 at d=16: 3·16·64 = 3072 params each; MoA-GLU adds G·K·(d+1) = 4·17
    swiglu = moe_cost(MoEConfig(num_experts=8, top_k=2, shared_experts=1, expert_hidden=64), ffn_config("swiglu"), D)
    assert (swiglu.params_total, swiglu.params_active) == (16 * 8 + 9 * 3072, 16 * 8 + 3 * 3072)
    assert swiglu.matmul_flops == 2 * 16 * 8 + 3 * 2 * 3072
    moa = moe_cost(MoEConfig(num_experts=8, top_k=2, expert_hidden=64), ffn_config("moa-glu"), D)
    assert moa.params_active == 16 * 8 + 2 * (3072 + 4 * 17)
    assert moa.expert == ffn_cost(ffn_config("moa-glu", hidden_dim=64), D)
    default = moe_cost(MoEConfig(num_experts=2, top_k=1), ffn_config("swiglu"), D)
    assert default.expert.params == 3 * 16 * 64  # expert_hidden=None: glu rule, ceil(8·16/3) → 64


def test_model_level_helpers():
    model = nn.Sequential(make("moa-glu", balance="bias"), make("relu", seed=1)).train()
    assert moe_layers(model) == [model[0], model[1]]
    y = model(torch.randn(6, D, dtype=torch.float64))
    total = sum(v for layer in moe_layers(model) for v in layer.last_losses.values())
    torch.testing.assert_close(moe_aux_loss(model), total)  # float64 layers: a float64 sum
    (y.sum() + moe_aux_loss(model)).backward()
    moe_update_bias(model)
    assert model[0].expert_bias.abs().sum() > 0 and model[0].load_counts is None
    assert "0.expert_bias" in model.state_dict()  # the bias is checkpointed
    metrics = moe_metrics(model)
    assert set(metrics) == {"moe_aux_loss", "moe_z_loss", "moe_max_load", "moe_load"}
    assert len(metrics["moe_load"]) == 2 and metrics["moe_max_load"] >= 1
    assert router_parameter_names(model) == {"0.router.weight", "1.router.weight"}
    # expert gates are found by module type, so the optimizer's mixing group picks them up
    assert {"0.experts.3.gate.weight", "0.experts.3.gate.bias"} <= mixing_parameter_names(model)
    assert moe_aux_loss(nn.Linear(2, 2)).item() == 0.0


def _rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


@pytest.mark.slow
def test_compiled_layer_matches_eager():
    layer = make("moa-glu", dtype=torch.float32, shared_experts=1, dispatch="loop")
    x = torch.randn(2, 8, D)
    torch.testing.assert_close(torch.compile(layer)(x), layer(x), atol=1e-5, rtol=1e-5)  # graph breaks at counts
    grouped = make("moa-glu", dtype=torch.float32, dispatch="grouped")
    with pytest.raises(RuntimeError, match="bfloat16 only"):
        torch.compile(grouped)(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the grouped GEMM traces in bf16
        assert _rel_err(torch.compile(grouped)(x), grouped(x)) < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("ffn", ["swiglu", "la-glu", "moa-glu"])
def test_grouped_gemm_on_cuda(ffn):
    loop = make(ffn, dtype=torch.float32, dispatch="loop").cuda()
    auto = make(ffn, dtype=torch.float32, dispatch="auto").cuda()
    auto.load_state_dict(loop.state_dict())
    x = torch.randn(256, D, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert auto._use_grouped(x)
        (ya, ga), (yb, gb) = grads(auto, auto, x), grads(loop, loop, x)
    assert _rel_err(ya, yb) < 2e-2
    for name, u, v in zip(["x"] + [n for n, _ in loop.named_parameters()], ga, gb):
        assert _rel_err(u, v) < 3e-2 or v.norm() < 1e-6, name
    torch.testing.assert_close(loop(x), moe_reference_forward(loop, x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("ffn", ["la-glu", "moa-glu"])
def test_grouped_gemm_matches_loop_with_a_scaled_dictionary_and_gate_z_loss(ffn):
    """dictionary_scale="rms" divides each σ_k by its constant and the MoA z-loss is the mean
    over the layer's (token, expert) assignments, whichever dispatch computes the experts."""
    from moa.nn import gate_z_loss
    from moa.nn.ffn import gate_z_squares

    cfg = dataclasses.replace(EXPERTS[ffn], dictionary_scale="rms",
                              gate_z_loss=0.1 if EXPERTS[ffn].mixing == "moa" else 0.0)
    loop = make(cfg, dtype=torch.float32, dispatch="loop", shared_experts=0)
    grouped = make(cfg, dtype=torch.float32, dispatch="grouped", shared_experts=0)
    grouped.load_state_dict(loop.state_dict())
    x = torch.randn(3, 7, D, generator=torch.Generator().manual_seed(3))
    unscaled = make(dataclasses.replace(cfg, dictionary_scale="none"), dtype=torch.float32, dispatch="loop",
                    shared_experts=0)
    unscaled.load_state_dict(loop.state_dict())
    assert (loop(x) - unscaled(x)).abs().max() > 1e-3  # the scaling matters here
    assert_same(grads(grouped, grouped, x), grads(loop, loop, x), loop, 2e-5)
    gate_z_loss(loop), gate_z_loss(grouped)  # clear what the forwards above stored
    if cfg.mixing != "moa":
        return
    z_loop, z_grouped = [(m(x), gate_z_loss(m))[1] for m in (loop, grouped)]
    # by hand: every row routed to an expert, its gate logits under that expert
    _, _, expert_NK, _ = loop.route(x.reshape(-1, D))
    xs = x.reshape(-1, D)
    terms = torch.cat([gate_z_squares(loop.experts[e].gate(xs[i:i + 1]), cfg).reshape(-1)
                       for i in range(xs.shape[0]) for e in expert_NK[i].tolist()])
    expected = 0.1 * terms.mean()
    torch.testing.assert_close(z_loop, expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(z_grouped, expected, rtol=1e-5, atol=0)
