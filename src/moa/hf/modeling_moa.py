"""``transformers`` models whose MLPs are moa FFNs: fixed σ, learnable activations (LA) or
mixture of activations (MoA), dense or in a top-k Mixture of Experts (arXiv 2605.26647).

Shipped next to exported weights as ``trust_remote_code`` code: it imports only torch and
``transformers``, so a user without moa loads an export with ``trust_remote_code=True``;
``import moa.hf`` registers the same classes with the Auto classes (no flag needed).

Everything but the MLP is the base architecture (Llama, Mistral or Qwen2): each causal-LM
class builds its base model and then replaces every decoder layer's ``mlp``. The MLP math
is the explicit reference form of moa's fused op (one term per activation):

* Type-I  (``kind="mlp"``): ``y = down_proj(σ_mix(up_proj x))``
* Type-II (``kind="glu"``): ``y = down_proj(σ_mix(gate_proj x) ⊙ up_proj x)``
* ``σ_mix(z) = Σ_k c_k σ_k(z)`` with ``c`` = one-hot (fixed), ``la_coef`` (LA: (K,) or
  (m, K)), or per-token gates ``normalize(act_gate(x) / τ)`` of shape (..., G, K) over G
  contiguous blocks of hidden units (MoA; normalised in at least fp32).

Shapes (legend): N tokens, D model width, m hidden width, G gate groups, H = m/G, K
activations, E experts, k experts per token.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM

from .configuration_moa import MoaConfig, MoaMistralConfig, MoaQwen2Config, moa_ffn, moa_moe


def _relu2(z):
    return F.relu(z).square()


# The same functions as moa.nn.ACTIVATIONS (keyed by the paper's names).
ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
    "silu": F.silu,
    "relu2": _relu2,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": lambda z: F.softplus(z, beta=1.0, threshold=20.0),
    "identity": lambda z: z,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
}


class MoaMLP(nn.Module):
    """One moa FFN of width ``intermediate_size``; ``forward(x (..., D)) -> (..., D)``."""

    def __init__(self, config):
        super().__init__()
        ffn = moa_ffn(config)
        unknown = [a for a in ffn["activations"] if a not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"unknown activation(s) {unknown}; valid: {', '.join(ACTIVATIONS)}")
        self.kind, self.mixing = ffn["kind"], ffn["mixing"]
        self.activations = tuple(ffn["activations"])
        self.gate_groups, self.gate_norm = int(ffn["gate_groups"]), ffn["gate_norm"]
        self.temperature = float(ffn["temperature"])
        rms = ffn.get("dictionary_rms")  # σ_k / c_k folded into the weights: Σ (w_k / c_k) σ_k
        self.dictionary_rms = None if rms is None else tuple(float(c) for c in rms)
        if self.dictionary_rms is not None and len(self.dictionary_rms) != len(self.activations):
            raise ValueError(f"dictionary_rms has {len(self.dictionary_rms)} values for {len(self.activations)} activations")
        d, m, k = config.hidden_size, config.intermediate_size, len(self.activations)
        if self.kind == "glu":
            self.gate_proj = nn.Linear(d, m, bias=False)
        self.up_proj = nn.Linear(d, m, bias=False)
        self.down_proj = nn.Linear(m, d, bias=False)
        if self.mixing == "la":
            shape = (k,) if ffn["la_granularity"] == "layer" else (m, k)
            self.la_coef = nn.Parameter(torch.full(shape, 1.0 / k))
        elif self.mixing == "moa":
            self.act_gate = nn.Linear(d, self.gate_groups * k, bias=True)

    def gates(self, x):
        """MoA gates (..., G, K) for x (..., D)."""
        logits = self.act_gate(x)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / self.temperature
        logits = logits.unflatten(-1, (self.gate_groups, len(self.activations)))
        if self.gate_norm == "softmax":
            return torch.softmax(logits, dim=-1)
        if self.gate_norm == "sigmoid":
            return torch.sigmoid(logits)
        return logits

    def mix(self, z, x):
        """σ_mix(z) for pre-activations z (..., m)."""
        if self.mixing == "fixed":
            return ACTIVATIONS[self.activations[0]](z)
        if self.mixing == "la":
            c = self._scaled(self.la_coef).to(z.dtype)  # (K,) or (m, K)
            return sum(ACTIVATIONS[a](z) * c[..., i] for i, a in enumerate(self.activations))
        g = self._scaled(self.gates(x)).to(z.dtype)  # (..., G, K)
        z_GH = z.unflatten(-1, (self.gate_groups, -1))
        h_GH = sum(ACTIVATIONS[a](z_GH) * g[..., i : i + 1] for i, a in enumerate(self.activations))
        return h_GH.flatten(-2)

    def _scaled(self, coef):
        if self.dictionary_rms is None:
            return coef
        return coef / torch.tensor(self.dictionary_rms, dtype=coef.dtype, device=coef.device)

    def forward(self, x):
        if self.kind == "glu":
            return self.down_proj(self.mix(self.gate_proj(x), x) * self.up_proj(x))
        return self.down_proj(self.mix(self.up_proj(x), x))


class MoaSparseMoE(nn.Module):
    """Token-choice top-k MoE of :class:`MoaMLP` experts plus shared experts.

    Routing as moa's ``moa.nn.MoE``: fp32 router logits, softmax/sigmoid scores, top-k of
    ``scores + expert_bias`` (bias only with ``balance="bias"``), weights = the selected
    scores, renormalised to sum 1 if ``renormalize``; shared experts see every token.
    """

    def __init__(self, config):
        super().__init__()
        moe = moa_moe(config)
        self.num_experts, self.top_k = int(moe["num_experts"]), int(moe["top_k"])
        self.router_fn, self.renormalize = moe.get("router", "softmax"), bool(moe.get("renormalize", True))
        self.use_bias = moe.get("balance", "aux") == "bias"
        self.router = nn.Linear(config.hidden_size, self.num_experts, bias=False)
        self.experts = nn.ModuleList(MoaMLP(config) for _ in range(self.num_experts))
        self.shared_experts = nn.ModuleList(MoaMLP(config) for _ in range(int(moe.get("shared_experts", 0))))
        self.register_buffer("expert_bias", torch.zeros(self.num_experts, dtype=torch.float32))

    def forward(self, x):
        x_ND = x.reshape(-1, x.shape[-1])
        dt = torch.promote_types(x.dtype, torch.float32)
        logits_NE = F.linear(x_ND.to(dt), self.router.weight.to(dt))
        scores_NE = torch.softmax(logits_NE, -1) if self.router_fn == "softmax" else torch.sigmoid(logits_NE)
        select_NE = scores_NE + self.expert_bias.to(dt) if self.use_bias else scores_NE
        experts_Nk = select_NE.topk(self.top_k, dim=-1).indices
        weights_Nk = scores_NE.gather(-1, experts_Nk)
        if self.renormalize:
            weights_Nk = weights_Nk / weights_Nk.sum(-1, keepdim=True)
        y_NkD = x_ND.new_zeros(x_ND.shape[0], self.top_k, x_ND.shape[1])
        for e, expert in enumerate(self.experts):
            token, slot = (experts_Nk == e).nonzero(as_tuple=True)
            if token.numel():
                y_NkD[token, slot] = expert(x_ND[token]).to(y_NkD.dtype)
        y_ND = (y_NkD * weights_Nk.to(y_NkD.dtype).unsqueeze(-1)).sum(1)
        for shared in self.shared_experts:
            y_ND = y_ND + shared(x_ND)
        return y_ND.view(x.shape)


def build_moa_mlp(config) -> nn.Module:
    """The MLP module a decoder layer of ``config`` uses."""
    return MoaSparseMoE(config) if moa_moe(config) else MoaMLP(config)


def _replace_mlps(model: nn.Module, config) -> None:
    for layer in model.model.layers:
        layer.mlp = build_moa_mlp(config)


class MoaForCausalLM(LlamaForCausalLM):
    """Llama with moa MLPs (``model_type="moa_llama"``)."""

    config_class = MoaConfig

    def __init__(self, config):
        super().__init__(config)
        _replace_mlps(self, config)
        self.post_init()


class MoaMistralForCausalLM(MistralForCausalLM):
    """Mistral with moa MLPs (``model_type="moa_mistral"``)."""

    config_class = MoaMistralConfig

    def __init__(self, config):
        super().__init__(config)
        _replace_mlps(self, config)
        self.post_init()


class MoaQwen2ForCausalLM(Qwen2ForCausalLM):
    """Qwen2 with moa MLPs (``model_type="moa_qwen2"``)."""

    config_class = MoaQwen2Config

    def __init__(self, config):
        super().__init__(config)
        _replace_mlps(self, config)
        self.post_init()
