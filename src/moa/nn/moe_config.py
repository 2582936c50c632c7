"""Mixture-of-Experts configuration and accounting (docs/DESIGN.md §5).

:class:`MoEConfig` is frozen, keyword-only and validated in ``__post_init__``.
``num_experts=0`` means "no MoE" for a model (the dense FFN is used); building an
:class:`moa.nn.MoE` layer needs at least one expert. Every expert, routed or shared, is
an FFN of one :class:`moa.nn.FFNConfig` (any kind and mixing) with hidden width
``expert_hidden`` (``None``: the FFN's own width rule for ``d_model``).

:func:`moe_cost` counts parameters and forward FLOPs per token the same way as
:func:`moa.nn.ffn_cost` (matmuls exact at 2 per multiply-add, elementwise work nominal).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from moa.nn.accounting import FFNCost, ffn_cost
from moa.nn.config import FFNConfig

ROUTERS = ("softmax", "sigmoid")
BALANCES = ("aux", "bias", "none")
DISPATCHES = ("auto", "loop", "grouped")


def _one_of(field: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"moe.{field}={value!r} is invalid; valid: {', '.join(choices)}")


def _non_negative(field: str, value) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0):
        raise ValueError(f"moe.{field}={value!r} must be a finite number >= 0")


def _int_at_least(field: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"moe.{field}={value!r} must be an integer >= {low}")


@dataclass(frozen=True, kw_only=True)
class MoEConfig:
    """A token-choice top-k MoE layer (docs/DESIGN.md §5.1).

    num_experts: E routed experts; 0 means "no MoE" (a model uses its dense FFN).
    top_k: experts per token (1 <= top_k <= num_experts).
    shared_experts: experts that process every token, added to the routed output.
    expert_hidden: hidden width of every expert; None → the FFN's own default for d_model.
    router: "softmax" or "sigmoid" scores over the router logits (computed in fp32).
    renormalize: rescale each token's top-k weights to sum to 1.
    balance: "aux" (Switch load-balancing loss), "bias" (DeepSeek-V3 aux-loss-free bias
        on the selection scores, updated by :meth:`MoE.update_bias`) or "none".
    aux_coef: coefficient of the load-balancing loss (balance="aux").
    z_coef: coefficient of the router z-loss (any balance mode; 0 disables it).
    bias_rate: step size of the bias update (balance="bias").
    dispatch: "auto" (grouped GEMM on CUDA where supported, else the per-expert loop),
        "loop" (one matmul per expert on its contiguous slice of sorted tokens) or
        "grouped" (``torch._grouped_mm``; an error where unsupported).
    """

    num_experts: int = 0
    top_k: int = 2
    shared_experts: int = 0
    expert_hidden: Optional[int] = None
    router: str = "softmax"
    renormalize: bool = True
    balance: str = "aux"
    aux_coef: float = 0.01
    z_coef: float = 1e-3
    bias_rate: float = 1e-3
    dispatch: str = "auto"

    def __post_init__(self) -> None:
        _int_at_least("num_experts", self.num_experts, 0)
        _int_at_least("top_k", self.top_k, 1)
        if self.num_experts > 0 and self.top_k > self.num_experts:
            raise ValueError(f"moe.top_k={self.top_k} exceeds moe.num_experts={self.num_experts}; "
                             f"valid: 1..{self.num_experts}")
        _int_at_least("shared_experts", self.shared_experts, 0)
        if self.expert_hidden is not None:
            _int_at_least("expert_hidden", self.expert_hidden, 1)
        _one_of("router", self.router, ROUTERS)
        _one_of("balance", self.balance, BALANCES)
        _one_of("dispatch", self.dispatch, DISPATCHES)
        if not isinstance(self.renormalize, bool):
            raise ValueError(f"moe.renormalize={self.renormalize!r} must be True or False")
        for name in ("aux_coef", "z_coef", "bias_rate"):
            _non_negative(name, getattr(self, name))

    @property
    def enabled(self) -> bool:
        """Whether a model should use an MoE layer (``num_experts > 0``)."""
        return self.num_experts > 0

    def require_experts(self) -> None:
        """Raise the one-line error for building a layer with zero experts."""
        if self.num_experts < 1:
            raise ValueError("moe.num_experts=0: zero experts cannot form an MoE layer; "
                             "valid: num_experts >= 1 (0 means a dense FFN)")

    def expert_ffn(self, ffn: FFNConfig, d_model: int) -> FFNConfig:
        """The FFN config of every expert: ``ffn`` at width ``expert_hidden`` (validated)."""
        if self.expert_hidden is not None:
            ffn = ffn.replace(hidden_dim=self.expert_hidden)
        ffn.resolve_hidden_dim(d_model)  # width vs gate groups, d_model > 0
        return ffn

    def replace(self, **changes) -> "MoEConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class MoECost:
    """Parameters and forward FLOPs per token of ``MoE(moe, ffn, d_model)``.

    ``params_active`` = router + shared experts + ``top_k`` routed experts: the
    parameters one token's forward uses. FLOPs are per token, for the active path.
    """

    expert: FFNCost  # one expert (routed and shared experts have the same shape)
    router_params: int
    params_total: int
    params_active: int
    matmul_flops: int
    elementwise_flops: int

    @property
    def flops(self) -> int:
        return self.matmul_flops + self.elementwise_flops


def moe_cost(moe: MoEConfig, ffn: FFNConfig, d_model: int) -> MoECost:
    """Exact parameter counts and active forward FLOPs per token of an MoE layer.

    Router: ``d_model·E`` weights, ``2·d_model·E`` matmul FLOPs and a nominal 4 FLOPs
    per logit (normalisation, selection). Combine: a multiply-add per routed output
    element (``2·top_k·d_model``) and an add per shared expert output element.
    """
    moe.require_experts()
    expert = ffn_cost(moe.expert_ffn(ffn, d_model), d_model)
    e, k, s = moe.num_experts, moe.top_k, moe.shared_experts
    router = d_model * e
    return MoECost(
        expert=expert,
        router_params=router,
        params_total=router + (e + s) * expert.params,
        params_active=router + (k + s) * expert.params,
        matmul_flops=2 * router + (k + s) * expert.matmul_flops,
        elementwise_flops=4 * e + (k + s) * expert.elementwise_flops + 2 * k * d_model + s * d_model,
    )
