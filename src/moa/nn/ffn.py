"""Feed-forward blocks: fixed σ, learnable activations (LA) and mixture of activations (MoA).

Notation follows the paper (docs/DESIGN.md §3.1). Bias-free linear layers:

* Type-I, ``kind="mlp"``:  ``f(x) = w2(σ(w1 x))``,            w1: d→m, w2: m→d
* Type-II, ``kind="glu"``: ``f(x) = w3(σ(w1 x) ⊙ w2 x)``,     w1, w2: d→m, w3: m→d

The σ is one activation (:class:`FixedFFN`), ``Σ_k a_k σ_k`` with learned ``la_coef``
(:class:`LAFFN`), or ``Σ_k g_k(x) σ_k`` with per-token gates from ``gate``
(:class:`MoAFFN`). All three share one interface, ``forward(x) -> y`` with x, y of shape
(..., d_model), and are built from an :class:`FFNConfig` by :func:`build_ffn`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from moa.nn.activations import ACTIVATIONS, gaussian_rms
from moa.nn.config import FFNConfig
from moa.nn.functional import mix_project, mix_project_reference
from moa.nn.triton_mix import mix_project_triton, triton_supports

Tensor = torch.Tensor


class FeedForward(nn.Module):
    """Shared linear projections of Type-I/II FFNs; subclasses define ``forward``."""

    def __init__(self, config: FFNConfig, d_model: int):
        super().__init__()
        self.config = config
        self.d_model = d_model
        self.hidden_dim = m = config.resolve_hidden_dim(d_model)
        self.w1 = nn.Linear(d_model, m, bias=False)
        if config.kind == "glu":
            self.w2 = nn.Linear(d_model, m, bias=False)
            self.w3 = nn.Linear(m, d_model, bias=False)
        else:
            self.w2 = nn.Linear(m, d_model, bias=False)

    @property
    def output_proj(self) -> nn.Linear:
        """The projection back to d_model (w2 for Type-I, w3 for Type-II)."""
        return self.w3 if self.config.kind == "glu" else self.w2

    def forward(self, x: Tensor) -> Tensor:  # (..., d) -> (..., d)
        raise NotImplementedError

    def reset_mixing_parameters(self) -> None:
        """(Re)initialise LA/gate parameters from ``config.init``; no-op for fixed σ."""

    def extra_repr(self) -> str:
        c = self.config
        return f"kind={c.kind}, mixing={c.mixing}, activations={c.activations}, d_model={self.d_model}, hidden={self.hidden_dim}"


class FixedFFN(FeedForward):
    """Baseline FFN with one fixed activation (ReLU, GELU, SwiGLU = glu + silu, ...)."""

    def __init__(self, config: FFNConfig, d_model: int):
        super().__init__(config, d_model)
        self.act = ACTIVATIONS[config.activations[0]]

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.w1(x))  # (..., m)
        if self.config.kind == "glu":
            return self.w3(h * self.w2(x))
        return self.w2(h)


class LAFFN(FeedForward):
    """Learnable activation ``σ_LA(z) = Σ_k a_k σ_k(z)``, input-independent coefficients.

    ``la_coef`` has shape (K,) for ``la_granularity="layer"`` or (m, K) for "channel".
    """

    def __init__(self, config: FFNConfig, d_model: int):
        super().__init__(config, d_model)
        k = config.num_activations
        shape = (k,) if config.la_granularity == "layer" else (self.hidden_dim, k)
        self.la_coef = nn.Parameter(torch.empty(shape))
        self.reset_mixing_parameters()

    def reset_mixing_parameters(self) -> None:
        with torch.no_grad():
            self.la_coef.copy_(_init_coefficients(self.config).expand_as(self.la_coef))

    def mixing_weights(self, x: Tensor | None = None) -> Tensor:
        """The coefficients in use: ``la_coef`` (the same for every token)."""
        return self.la_coef

    def forward(self, x: Tensor) -> Tensor:
        return _mixed_forward(self, x, self.la_coef)


class MoAFFN(FeedForward):
    """Mixture of activations ``σ_MoA(z; x) = Σ_k g_k(x) σ_k(z)`` with per-token gates.

    ``g(x) = normalize((gate(x)) / τ)`` where ``gate = nn.Linear(d_model, G*K)`` (with
    bias); the G groups split the hidden units into contiguous blocks of m/G. Gates
    depend only on the token's own state (causal by construction).
    """

    def __init__(self, config: FFNConfig, d_model: int):
        super().__init__(config, d_model)
        self.gate = nn.Linear(d_model, config.gate_groups * config.num_activations, bias=True)
        self.reset_mixing_parameters()

    def reset_mixing_parameters(self) -> None:
        coef = _init_coefficients(self.config)  # (K,)
        with torch.no_grad():
            self.gate.weight.zero_()
            self.gate.bias.copy_(gate_logits_for(coef, self.config).repeat(self.config.gate_groups))

    def mixing_weights(self, x: Tensor) -> Tensor:
        """Per-token gates, shape (..., G, K), for ``x`` of shape (..., d_model)."""
        return normalize_gates(self.gate(x), self.config)

    def __getstate__(self) -> dict:
        """Copies (``copy.deepcopy``, pickling) keep a pending ``z_loss`` as a value: it
        belongs to the autograd graph of the last forward, which a copy cannot share."""
        state = super().__getstate__()
        if state.get("z_loss") is not None:
            state["z_loss"] = state["z_loss"].detach()
        return state

    def forward(self, x: Tensor) -> Tensor:
        logits = self.gate(x)
        if self.training and self.config.gate_z_loss > 0:  # collected by gate_z_loss(model)
            self.z_loss = self.config.gate_z_loss * gate_z_squares(logits, self.config).mean()
        return _mixed_forward(self, x, normalize_gates(logits, self.config))


def gate_z_squares(logits: Tensor, config: FFNConfig) -> Tensor:
    """``logsumexp(l/τ)²`` per token and gate group, (..., G), in fp32: the z-loss's terms."""
    return torch.logsumexp(logits.float().unflatten(-1, (config.gate_groups, -1)) / config.temperature, -1).square()


def dictionary_scaled(coef: Tensor, config: FFNConfig) -> Tensor:
    """The coefficients to apply to the raw σ_k: ``g_k / c_k`` under ``dictionary_scale="rms"``
    (Σ g_k σ_k(z)/c_k = Σ (g_k/c_k) σ_k(z)), else ``coef`` itself."""
    if config.dictionary_scale != "rms":
        return coef
    return coef / torch.tensor([gaussian_rms(a) for a in config.activations], dtype=coef.dtype, device=coef.device)


def _mixed_forward(ffn: FeedForward, x: Tensor, coef: Tensor) -> Tensor:
    """``w_out(σ_mix(w1 x) [⊙ w2 x])`` through the fused op, the Triton op or the reference."""
    impl = ffn.config.impl
    if impl == "auto":
        impl = "triton" if x.is_cuda and triton_supports(ffn.config.activations) else "fused"
    mix = {"fused": mix_project, "triton": mix_project_triton, "reference": mix_project_reference}[impl]
    coef = dictionary_scaled(coef, ffn.config)
    v = ffn.w2(x) if ffn.config.kind == "glu" else None
    return mix(ffn.w1(x), coef, ffn.config.activations, ffn.output_proj.weight, v)


def normalize_gates(logits: Tensor, config: FFNConfig) -> Tensor:
    """Gates (..., G, K) from gate logits (..., G·K): ``normalize(logits / τ)``."""
    # normalise in at least fp32 (bf16 softmax is too coarse for gates near one-hot)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / config.temperature
    logits = logits.unflatten(-1, (config.gate_groups, config.num_activations))
    if config.gate_norm == "softmax":
        return torch.softmax(logits, dim=-1)
    if config.gate_norm == "sigmoid":
        return torch.sigmoid(logits)
    return logits


def _init_coefficients(config: FFNConfig) -> Tensor:
    """Mixing coefficients (K,) that ``config.init`` asks for: uniform 1/K or one-hot."""
    k = config.num_activations
    # explicit CPU: these are init constants, also under a `with torch.device("meta")` build
    if config.init == "uniform":
        return torch.full((k,), 1.0 / k, device="cpu")
    coef = torch.zeros(k, device="cpu")
    coef[config.activations.index(config.init)] = 1.0
    return coef


def gate_logits_for(coef: Tensor, config: FFNConfig) -> Tensor:
    """Gate biases (with zero gate weights) under which MoA's gates equal ``coef``.

    Exact for ``gate_norm="none"``; softmax needs ``coef`` positive and summing to one
    (biases ``log a``), sigmoid needs ``0 < a < 1`` (biases ``logit a``). Zeros and ones
    are mapped to a margin of ``config.init_logit_gap`` (see :mod:`moa.nn.config`).
    Biases are multiplied by τ so the temperature cancels.
    """
    coef = coef.detach().double().cpu()
    gap = config.init_logit_gap
    if config.gate_norm == "none":
        logits = coef
    elif config.gate_norm == "softmax":
        if (coef < 0).any() or not math.isclose(coef.sum().item(), 1.0, rel_tol=1e-6):
            raise ValueError(f"softmax gates can only represent coefficients on the simplex, got {coef.tolist()}")
        logits = torch.where(coef > 0, coef.clamp_min(1e-300).log(), torch.full_like(coef, -gap))
    else:
        if ((coef < 0) | (coef > 1)).any():
            raise ValueError(f"sigmoid gates can only represent coefficients in [0, 1], got {coef.tolist()}")
        inner = torch.logit(coef.clamp(1e-300, 1 - 1e-16))
        logits = torch.where(coef <= 0, torch.full_like(coef, -gap),
                             torch.where(coef >= 1, torch.full_like(coef, gap), inner))
    return logits * config.temperature  # float64; copy_ casts to the parameter dtype


_CLASSES = {"fixed": FixedFFN, "la": LAFFN, "moa": MoAFFN}


def gate_z_loss(model: nn.Module) -> Tensor | float:
    """Sum of the z-losses the MoA FFNs of ``model`` stored in their last training forward (then cleared).

    0.0 when none has one (``gate_z_loss=0``); add it to the objective, not the reported loss.
    A dense layer contributes ``coef · mean over tokens``; an MoE layer of MoA experts
    ``coef · mean over its (token, expert) assignments``, with either dispatch: the loop's
    experts each store their share (:func:`moa.nn.moe_dispatch.experts_loop`), the grouped
    GEMM the whole layer's on its first expert.
    """
    total = 0.0
    for module in model.modules():
        loss = module.__dict__.pop("z_loss", None) if isinstance(module, MoAFFN) else None
        if loss is not None:
            total = total + loss
    return total


def build_ffn(config: FFNConfig, d_model: int) -> FeedForward:
    """Build the FFN that ``config`` describes for model width ``d_model``."""
    if not isinstance(config, FFNConfig):
        raise TypeError(f"config must be an FFNConfig, got {type(config).__name__}")
    return _CLASSES[config.mixing](config, d_model)


def convert_ffn(source: FeedForward, config: FFNConfig) -> FeedForward:
    """A new FFN of ``config`` that computes the same function as ``source``.

    The linear projections are copied (same kind and width required). The mixing is set
    so the function is preserved (docs/DESIGN.md §3.3, containment fixed ⊂ LA ⊂ MoA):
    fixed σ_j → LA/MoA one-hot on σ_j; LA → MoA with zero gate weights and biases from
    the LA coefficients (layer granularity: any G; channel: G must equal m);
    same mixing → parameters copied.
    """
    src = source.config
    if "rms" in (src.dictionary_scale, config.dictionary_scale):
        raise ValueError("function-preserving conversion needs dictionary_scale='none' on both sides")
    if src.kind != config.kind:
        raise ValueError(f"cannot convert kind {src.kind!r} to {config.kind!r}")
    dtype = source.w1.weight.dtype
    target = build_ffn(config, source.d_model).to(device=source.w1.weight.device, dtype=dtype)
    if target.hidden_dim != source.hidden_dim:
        raise ValueError(f"hidden width differs: source {source.hidden_dim}, target {target.hidden_dim}")
    target.load_state_dict(
        {k: v for k, v in source.state_dict().items() if k.split(".")[0] in ("w1", "w2", "w3")},
        strict=False,
    )
    with torch.no_grad():
        if src.mixing == config.mixing and src.activations == config.activations:
            # copying the parameters preserves the function only if nothing that reads them changed
            fields = {"moa": ("gate_norm", "temperature", "gate_groups"), "la": ("la_granularity",)}.get(src.mixing, ())
            changed = [f"{f} {getattr(src, f)!r} → {getattr(config, f)!r}" for f in fields
                       if getattr(src, f) != getattr(config, f)]
            if changed:
                raise ValueError(f"converting {src.mixing} to {config.mixing} with {', '.join(changed)} would not "
                                 f"preserve the function; keep those settings")
            target.load_state_dict(source.state_dict())
        elif src.mixing == "fixed":
            if src.activations[0] not in config.activations:
                raise ValueError(f"activation {src.activations[0]!r} is not in the target dictionary {config.activations}")
            target.config = config = config.replace(init=src.activations[0])
            target.reset_mixing_parameters()
        elif src.mixing == "la" and config.mixing == "moa":
            if src.activations != config.activations:
                raise ValueError("LA → MoA conversion needs the same activation dictionary")
            coef_GK = source.la_coef.detach()
            if coef_GK.dim() == 1:
                coef_GK = coef_GK.expand(config.gate_groups, -1)
            elif config.gate_groups != coef_GK.shape[0]:
                raise ValueError(f"channel LA has {coef_GK.shape[0]} channels; the MoA target needs gate_groups={coef_GK.shape[0]}")
            target.gate.weight.zero_()
            target.gate.bias.copy_(torch.cat([gate_logits_for(row, config) for row in coef_GK]).to(dtype))
        else:
            raise ValueError(f"cannot convert mixing {src.mixing!r} to {config.mixing!r} preserving the function")
    return target
