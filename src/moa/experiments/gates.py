"""``gates``: what a trained MoA model's gates do on held-out text (docs/DESIGN.md §10.4).

For every MoA FFN of the model (the FFN of each dense block; in an MoE layer every routed
expert, on the tokens routed to it, and every shared expert) the FFN's input is captured
by a forward hook (no model code changes), its per-token gates ``g(x)`` (shape (G, K),
:meth:`moa.nn.MoAFFN.mixing_weights`) are computed, and over the run's fixed validation
set we report per layer (and per expert):

* ``mean`` / ``std``: the gate weight of each activation over tokens and gate groups;
* ``entropy``: the mean per-(token, group) entropy of the gate distribution in nats, and
  ``entropy_norm`` = entropy / log K (0: one-hot, 1: uniform);
* ``argmax``: the fraction of (token, group) gates whose largest weight is each activation;
* ``top_tokens``: for each activation, the token types (seen at least ``min_count``
  times) with the highest mean gate weight for it (gates averaged over groups), each with
  its count and the occurrence where that weight was largest, shown with the tokens
  before it (gates are causal: a token's gate sees only its own state, which depends on
  the prefix, so no right context is shown).

Choices written down here:

* Softmax gates are distributions already. Sigmoid gates are normalised to ``w / Σ_k w``
  and raw gates (``gate_norm="none"``, which may be negative) to ``|w| / Σ_k |w|`` before
  entropy and argmax; ``mean``/``std`` are always of the raw weights (so they sum to 1
  per layer for softmax only), ``mean_normalised`` of the normalised ones.
* MoE layers: routing is recomputed from the hooked layer input with the layer's own
  :meth:`moa.nn.MoE.route` (the same top-k selection its forward makes), so the analysis
  does not depend on the dispatch path (the grouped GEMM never calls the expert modules).
  Expert statistics are unweighted by the router's combine weights. A layer's ``pooled``
  entry sums over every (token, expert) row, routed and shared; its token preferences
  first average a token's rows in that layer.
* The data are the first ``min(max_tokens, train.eval_tokens)`` target positions of the
  run's validation split, cut into windows of the run's ``seq_len``: the run's own
  validation set, or a prefix of it.

Layout of ``OUT`` (default ``RUN_DIR/gates``): ``gates.json`` (everything),
``gates.md`` (tables), ``gates_heatmap.png`` (layers × activations mean weight),
``gates_entropy.png`` (normalised entropy per layer).
"""

from __future__ import annotations

import dataclasses
import json
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from moa.nn import MoAFFN, MoE

Tensor = torch.Tensor

GATES_JSON, GATES_MD, HEATMAP_PNG, ENTROPY_PNG = "gates.json", "gates.md", "gates_heatmap.png", "gates_entropy.png"
DEFAULT_MAX_TOKENS = 65536
MOA_FFNS = "moa-mlp or moa-glu"
# gates.md lists this many tokens per activation for single experts (gates.json has all)
MD_TOP_PER_EXPERT = 3

_NORMALISATION = {
    "softmax": "softmax gates are used as they are (a distribution per token and group)",
    "sigmoid": "sigmoid gates are normalised to w / sum_k w per token and group for entropy and argmax",
    "none": "raw gates (gate_norm=none) are normalised to |w| / sum_k |w| per token and group for entropy and argmax",
}


# ---------------------------------------------------------------- accumulation

@dataclass
class _Unit:
    """One MoA FFN (a dense block's FFN, or one expert) and its running sums."""

    layer: int
    name: str  # "ffn", "expert 3", "shared 0"
    role: str  # "dense" | "routed" | "shared"
    index: int  # the expert's index in its ModuleList (0 for a dense FFN)
    ffn: MoAFFN
    k: int
    gates: list = field(default_factory=list)  # per batch (rows, K) group-mean gates, fp32 CPU
    positions: list = field(default_factory=list)  # per batch (rows,) flat token positions
    sums: dict = field(default_factory=dict)  # float64 sums over (row, group) entries

    def add(self, x_ND: Tensor, pos_N: Tensor, gate_norm: str) -> None:
        if x_ND.shape[0] == 0:
            return
        g_NGK = self.ffn.mixing_weights(x_ND).double()
        p_NGK = _distribution(g_NGK, gate_norm)
        h_NG = -torch.special.xlogy(p_NGK, p_NGK).sum(-1)
        new = {
            "n": torch.tensor(float(g_NGK.shape[0] * g_NGK.shape[1]), dtype=torch.float64),
            "w": g_NGK.sum((0, 1)), "w2": g_NGK.square().sum((0, 1)), "p": p_NGK.sum((0, 1)),
            "h": h_NG.sum(), "argmax": torch.bincount(p_NGK.argmax(-1).flatten(), minlength=self.k).double(),
        }
        for key, value in new.items():
            value = value.cpu()
            self.sums[key] = value if key not in self.sums else self.sums[key] + value
        self.gates.append(g_NGK.mean(1).float().cpu())
        self.positions.append(pos_N.cpu())


def _distribution(g_NGK: Tensor, gate_norm: str) -> Tensor:
    """The gates as a distribution over the K activations (see the module docstring)."""
    if gate_norm == "softmax":
        return g_NGK
    w = g_NGK if gate_norm == "sigmoid" else g_NGK.abs()
    total = w.sum(-1, keepdim=True)
    uniform = torch.full_like(w, 1.0 / w.shape[-1])
    return torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), uniform)


def _units(model) -> tuple[list[_Unit], list[tuple[MoE, list[_Unit], list[_Unit]]], list[tuple[MoAFFN, _Unit]]]:
    """Every MoA FFN of ``model.blocks``: (all units, MoE layers with theirs, dense ones)."""
    units, moes, dense = [], [], []
    for i, block in enumerate(model.blocks):
        ffn = block.ffn
        if isinstance(ffn, MoE):
            routed = [_Unit(i, f"expert {e}", "routed", e, x, x.config.num_activations)
                      for e, x in enumerate(ffn.experts) if isinstance(x, MoAFFN)]
            shared = [_Unit(i, f"shared {s}", "shared", s, x, x.config.num_activations)
                      for s, x in enumerate(ffn.shared_experts) if isinstance(x, MoAFFN)]
            if routed or shared:
                moes.append((ffn, routed, shared))
                units += routed + shared
        elif isinstance(ffn, MoAFFN):
            unit = _Unit(i, "ffn", "dense", 0, ffn, ffn.config.num_activations)
            dense.append((ffn, unit))
            units.append(unit)
    return units, moes, dense


@torch.no_grad()
def gate_statistics(model, batches, tokenizer, *, top: int = 10, min_count: int = 5, context: int = 16,
                    device: Optional[torch.device] = None, autocast_dtype: Optional[torch.dtype] = None) -> dict:
    """Gate statistics of every MoA FFN of ``model`` over ``batches`` (see module doc).

    model: a :class:`moa.model.Transformer` (``blocks[i].ffn`` a MoAFFN or an MoE of them).
    batches: ``(x, y)`` pairs of (B, T) token ids (``y`` is ignored).
    tokenizer: decodes the top tokens (``decode(ids) -> str``, ``eos_id``, ``spec``).
    top / min_count: token types listed per activation / times a type must occur.
    context: tokens of left context shown with each top token's strongest occurrence.
    Returns a JSON-serialisable dict: ``layers`` (one entry per block with its ``units``,
    and ``pooled`` for MoE layers) plus the gate configuration.
    """
    for name, value, low in (("top", top, 1), ("min_count", min_count, 1), ("context", context, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    units, moes, dense = _units(model)
    if not units:
        ffn = getattr(getattr(model, "config", None), "ffn", "?")
        raise ValueError(f"the model has no MoA FFN (model.ffn={ffn!r}); gates need {MOA_FFNS}")
    cfg = units[0].ffn.config
    device = device or next(model.parameters()).device
    state = {"pos": None}  # flat positions (B*T,) of the batch being run, read by the hooks

    def dense_hook(unit):
        def hook(module, args, output):
            x = args[0]
            unit.add(x.reshape(-1, x.shape[-1]), state["pos"], cfg.gate_norm)
        return hook

    def moe_hook(routed, shared):
        def hook(module, args, output):
            x_ND = args[0].reshape(-1, module.d_model)
            _, _, experts_Nk, _ = module.route(x_ND)
            for unit in routed:
                rows_N = (experts_Nk == unit.index).any(-1)  # top-k experts are distinct
                unit.add(x_ND[rows_N], state["pos"][rows_N.cpu()], cfg.gate_norm)
            for unit in shared:
                unit.add(x_ND, state["pos"], cfg.gate_norm)
        return hook

    handles = [ffn.register_forward_hook(dense_hook(unit)) for ffn, unit in dense]
    handles += [moe.register_forward_hook(moe_hook(r, s)) for moe, r, s in moes]
    was_training = model.training
    model.eval()
    inputs, offset = [], 0
    amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    try:
        with amp:
            for x, _ in batches:
                state["pos"] = offset + torch.arange(x.numel())
                offset += x.numel()
                inputs.append(x.cpu())
                model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not inputs:
        raise ValueError("no batches to analyse; give at least one (x, y) batch")
    seq_len = inputs[0].shape[1]
    tokens = torch.cat([x.reshape(-1) for x in inputs])

    prefs = dict(tokens=tokens, seq_len=seq_len, tokenizer=tokenizer, names=cfg.activations, top=top,
                 min_count=min_count, context=context)
    layers = []
    for i in sorted({u.layer for u in units}):
        mine = [u for u in units if u.layer == i]
        entry = {"layer": i, "units": [_summarise(u.sums, u.gates, u.positions, cfg.activations, u.name, u.role, prefs)
                                       for u in mine]}
        if mine[0].role != "dense":
            entry["pooled"] = _summarise(_add_sums([u.sums for u in mine]), [g for u in mine for g in u.gates],
                                         [p for u in mine for p in u.positions], cfg.activations, "all experts",
                                         "pooled", prefs)
        layers.append(entry)
    moe = None
    if moes:
        mc = moes[0][0].config
        moe = {"num_experts": mc.num_experts, "top_k": mc.top_k, "shared_experts": mc.shared_experts,
               "router": mc.router}
    return {
        "activations": list(cfg.activations), "kind": cfg.kind, "gate_norm": cfg.gate_norm,
        "gate_groups": cfg.gate_groups, "temperature": cfg.temperature, "log_k": math.log(len(cfg.activations)),
        "normalisation": _NORMALISATION[cfg.gate_norm], "moe": moe, "tokens": int(tokens.numel()),
        "seq_len": int(seq_len), "top": top, "min_count": min_count, "layers": layers,
    }


def _add_sums(sums: list[dict]) -> dict:
    out: dict = {}
    for s in sums:
        for key, value in s.items():
            out[key] = value if key not in out else out[key] + value
    return out


def _summarise(sums: dict, gates: list, positions: list, names, name: str, role: str, prefs: dict) -> dict:
    """Means, std, entropy, argmax shares and top tokens of one unit (or a pooled layer)."""
    k = len(names)
    n = float(sums["n"]) if sums else 0.0
    rows = sum(int(p.numel()) for p in positions)
    out = {"name": name, "role": role, "rows": rows, "fraction_of_tokens": rows / max(1, prefs["tokens"].numel())}
    if n == 0:  # an expert no token was routed to
        return {**out, "mean": None, "std": None, "mean_normalised": None, "entropy": None, "entropy_norm": None,
                "argmax": None, "top_tokens": {a: [] for a in names}}
    mean = sums["w"] / n
    std = (sums["w2"] / n - mean.square()).clamp_min(0).sqrt()
    entropy = float(sums["h"] / n)

    def per(t: Tensor) -> dict:
        return {a: float(v) for a, v in zip(names, t)}

    return {
        **out, "mean": per(mean), "std": per(std), "mean_normalised": per(sums["p"] / n),
        "entropy": entropy, "entropy_norm": entropy / math.log(k) if k > 1 else 0.0,
        "argmax": per(sums["argmax"] / n),
        "top_tokens": _top_tokens(torch.cat(gates), torch.cat(positions), **prefs),
    }


def _top_tokens(g_RK: Tensor, pos_R: Tensor, *, tokens: Tensor, seq_len: int, tokenizer, names, top: int,
                min_count: int, context: int) -> dict:
    """Per activation, the token types with the highest mean gate weight for it."""
    # a position may have several rows (a pooled MoE layer: one per expert): average them first
    n_pos = tokens.numel()
    rows_P = torch.bincount(pos_R, minlength=n_pos)
    seen_P = rows_P > 0
    g_PK = torch.zeros(n_pos, g_RK.shape[1], dtype=torch.float64).index_add_(0, pos_R, g_RK.double())
    g_PK = g_PK[seen_P] / rows_P[seen_P, None]
    pos_P = seen_P.nonzero().squeeze(1)
    ids_P = tokens[pos_P]
    vocab = int(tokens.max()) + 1
    count_V = torch.bincount(ids_P, minlength=vocab)
    mean_VK = torch.zeros(vocab, g_PK.shape[1], dtype=torch.float64).index_add_(0, ids_P, g_PK)
    mean_VK = mean_VK / count_V.clamp_min(1)[:, None]
    eligible_V = count_V >= min_count
    out = {}
    for k, act in enumerate(names):
        score_V = mean_VK[:, k].masked_fill(~eligible_V, -math.inf)
        ranked = score_V.argsort(descending=True)[: min(top, int(eligible_V.sum()))]
        entries = []
        for v in ranked.tolist():
            mine = (ids_P == v).nonzero().squeeze(1)
            best = int(pos_P[mine[g_PK[mine, k].argmax()]])
            start = max(best - best % seq_len, best - context)
            entries.append({"id": v, "token": _piece(tokenizer, v), "count": int(count_V[v]),
                            "mean_weight": float(mean_VK[v, k]), "max_weight": float(g_PK[mine, k].max()),
                            "context": _show(tokenizer.decode(tokens[start:best])), "position": best})
        out[act] = entries
    return out


def _piece(tokenizer, token_id: int) -> str:
    """A token as readable text: ``␣`` for a space, escapes for control characters,
    ``<eos>``, ``<0xNN>`` for a lone byte of a multi-byte character."""
    if token_id == getattr(tokenizer, "eos_id", None):
        return "<eos>"
    text = tokenizer.decode([token_id])
    if "\ufffd" in text and getattr(tokenizer, "spec", "") == "bytes":
        return f"<0x{token_id:02X}>"  # one byte of a multi-byte UTF-8 character
    return _show(text).replace(" ", "␣") if text else f"<{token_id}>"


def _show(text: str) -> str:
    out = []
    for c in text:
        if c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\\":
            out.append("\\\\")
        elif ord(c) < 32 or ord(c) == 127:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


# ---------------------------------------------------------------- runs

def _read_config(run_dir: Path):
    from moa.config import config_from_dict
    from moa.train.records import CONFIG, read_json

    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a moa run directory (no such directory)")
    if not (run_dir / CONFIG).exists():
        raise FileNotFoundError(f"{run_dir} is not a moa run directory (no {CONFIG})")
    try:
        return config_from_dict(read_json(run_dir / CONFIG))
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{run_dir / CONFIG} is not a valid moa config: {str(exc).splitlines()[0]}") from None


def require_moa(cfg, run_dir) -> None:
    """Raise the one-line error for a run whose FFN has no token gates."""
    ffn = cfg.model.ffn_config()
    if ffn.mixing != "moa":
        where = "experts" if cfg.model.moe.enabled else "FFN"
        raise ValueError(f"{run_dir}: model.ffn={cfg.model.ffn!r} is not MoA (mixing={ffn.mixing!r}, {where} "
                         f"without token gates); gates need an MoA run: model.ffn={MOA_FFNS}")


def run_gates(run_dir, out_dir=None, max_tokens: int = DEFAULT_MAX_TOKENS, *, top: int = 10, min_count: int = 5,
              context: int = 16, device: str = "auto", plots: bool = True) -> dict:
    """Gate statistics of the run in ``run_dir`` on its validation set, written to ``out_dir``.

    out_dir: default ``run_dir/gates``; gets gates.json, gates.md and the plots.
    max_tokens: cap on the validation target positions analysed (at most the run's
    ``train.eval_tokens``; at least one window of its ``seq_len``).
    device: "auto" (CUDA if available, with the run's autocast dtype), "cpu" or "cuda".
    Returns the dict written to gates.json.
    """
    from moa.train.runs import load_run
    from moa.data import prepare_data, val_batches
    from moa.train.loop import resolve_device

    run_dir = Path(run_dir)
    cfg = _read_config(run_dir)
    require_moa(cfg, run_dir)
    seq_len = cfg.train.seq_len
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < seq_len:
        raise ValueError(f"max_tokens={max_tokens!r} must be an integer >= one window of the run's "
                         f"seq_len={seq_len}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r} is invalid; valid: auto, cpu, cuda")
    # the run's own precision on the chosen device (a float64 run is loaded in fp32 by load_run)
    train_dtype = "float32" if cfg.train.dtype == "float64" else cfg.train.dtype
    dev, autocast_dtype = resolve_device(cfg.replace(train=dataclasses.replace(cfg.train, device=device,
                                                                               dtype=train_dtype)))
    model, tokenizer, cfg = load_run(run_dir)
    model.to(dev)

    data = prepare_data(cfg.data)
    warnings = []
    if data.tokenizer.spec != tokenizer.spec or data.tokenizer.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"the validation data's tokenizer ({data.tokenizer.spec}, vocab {data.tokenizer.vocab_size}) "
                         f"is not the run's ({tokenizer.spec}, vocab {tokenizer.vocab_size})")
    if data.tokenizer.fingerprint != tokenizer.fingerprint:
        warnings.append(f"the data cache's tokenizer (fingerprint {data.tokenizer.fingerprint}) differs from the "
                        f"run's tokenizer.json ({tokenizer.fingerprint}); token ids may not mean the same")
    summary = _read_optional_json(run_dir / "summary.json")
    run_fp = summary.get("corpus_fingerprint")
    if run_fp is not None and run_fp != data.fingerprint:
        warnings.append(f"the corpus changed since training (fingerprint {run_fp} → {data.fingerprint}); "
                        "the validation text differs from the run's")
    n_tokens = min(max_tokens, cfg.train.eval_tokens)
    batches = val_batches(data.val_tokens, seq_len, cfg.train.micro_batch_size or cfg.train.batch_size, n_tokens)

    stats = gate_statistics(model, batches, tokenizer, top=top, min_count=min_count, context=context, device=dev,
                            autocast_dtype=autocast_dtype)
    result = {
        "run_dir": str(run_dir), "ffn": cfg.model.ffn, "n_layers": cfg.model.n_layers, "d_model": cfg.model.d_model,
        "steps": summary.get("steps"), "final_val_loss": summary.get("final_val_loss"),
        "data_source": cfg.data.source, "tokenizer": tokenizer.spec, "max_tokens": max_tokens,
        "run_eval_tokens": cfg.train.eval_tokens, "corpus_fingerprint": data.fingerprint,
        "device": str(dev), "warnings": warnings, **stats,
    }
    out = Path(out_dir) if out_dir is not None else run_dir / "gates"
    out.mkdir(parents=True, exist_ok=True)
    (out / GATES_JSON).write_text(json.dumps(result, indent=2) + "\n")
    (out / GATES_MD).write_text(to_markdown(result))
    if plots:
        plot_heatmap(result, out / HEATMAP_PNG)
        plot_entropy(result, out / ENTROPY_PNG)
    return result


def _read_optional_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- tables

def _rows(result: dict) -> list[tuple[str, str, dict]]:
    """(layer label, unit label, unit stats) in table order: pooled MoE rows first."""
    out = []
    for layer in result["layers"]:
        if "pooled" in layer:
            out.append((str(layer["layer"]), "all experts", layer["pooled"]))
        for u in layer["units"]:
            out.append((str(layer["layer"]), u["name"], u))
    return out


def summary_tables(result: dict) -> str:
    """Markdown: mean ± std weight and entropy per layer/unit, then argmax shares."""
    names = result["activations"]
    sums_to_one = " (rows sum to 1)" if result["gate_norm"] == "softmax" else ""
    lines = [f"Mean gate weight ± std per activation{sums_to_one}; entropy H of the per-token gate in nats "
             f"and as H / log K (K={len(names)}; 1 = uniform).", "",
             "| layer | FFN | rows | " + " | ".join(names) + " | H (nats) | H / log K |",
             "|---|---|---:|" + "---:|" * len(names) + "---:|---:|"]
    for layer, unit, s in _rows(result):
        if s["mean"] is None:
            cells = ["–"] * (len(names) + 2)
        else:
            cells = [f"{s['mean'][a]:.3f} ± {s['std'][a]:.3f}" for a in names]
            cells += [f"{s['entropy']:.3f}", f"{s['entropy_norm']:.3f}"]
        lines.append(f"| {layer} | {unit} | {s['rows']:,} | " + " | ".join(cells) + " |")
    lines += ["", "Share of (token, group) gates whose largest weight is each activation.", "",
              "| layer | FFN | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for layer, unit, s in _rows(result):
        cells = ["–"] * len(names) if s["argmax"] is None else [f"{100 * s['argmax'][a]:.1f}%" for a in names]
        lines.append(f"| {layer} | {unit} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return "`` " + text.replace("|", "\\|") + " ``"


def to_markdown(result: dict) -> str:
    """The whole report: setup, summary tables, top tokens per activation."""
    moe = result["moe"]
    arch = (f"MoE, {moe['num_experts']} experts, top-{moe['top_k']}, {moe['shared_experts']} shared"
            if moe else "dense")
    lines = [f"# Gate statistics: {result['run_dir']}", "",
             f"- model: {result['ffn']} ({result['kind']}, {arch}), {result['n_layers']} layers, "
             f"d_model {result['d_model']}; activations {', '.join(result['activations'])}; "
             f"{result['gate_norm']} gates, G={result['gate_groups']}, τ={result['temperature']:g}",
             f"- data: {result['tokens']:,} validation tokens ({result['data_source']}, {result['tokenizer']}, "
             f"windows of {result['seq_len']}), corpus {result['corpus_fingerprint']}",
             f"- trained: {result['steps']} steps, final val loss {result['final_val_loss']}",
             f"- {result['normalisation']}"]
    lines += [f"- warning: {w}" for w in result["warnings"]]
    lines += ["", "## Per layer", "", summary_tables(result), "## Tokens that most prefer each activation", "",
              f"Token types seen at least {result['min_count']} times, by mean gate weight for the activation "
              "(averaged over gate groups); the example is the occurrence with the largest weight, after its "
              "left context (gates are causal).", ""]
    for layer, unit, s in _rows(result):
        limit = MD_TOP_PER_EXPERT if s["role"] in ("routed", "shared") else result["top"]
        lines += [f"### Layer {layer}, {unit}" + (f" (top {limit}; all in {GATES_JSON})"
                                                   if limit < result["top"] else ""), "",
                  "| activation | token | count | mean weight | example |", "|---|---|---:|---:|---|"]
        for act, entries in s["top_tokens"].items():
            for e in entries[:limit]:
                lines.append(f"| {act} | {_md(e['token'])} | {e['count']:,} | {e['mean_weight']:.3f} | "
                             f"{_md(e['context'][-48:] + '⟦' + e['token'] + '⟧')} |")
        if not any(s["top_tokens"].values()):
            lines.append(f"| – | no token type seen {result['min_count']} times | | | |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- plots

def _annotated(ax, data, row_labels, col_labels, title: str, vmin: float, vmax: float) -> object:
    import numpy as np

    im = ax.imshow(data, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_title(title, fontsize=10)
    if data.size <= 400:
        for (r, c), v in np.ndenumerate(data):
            if np.isfinite(v):
                dark = (v - vmin) / max(vmax - vmin, 1e-12) < 0.5
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    for r, row in enumerate(data):
        if not np.isfinite(row).any():
            ax.text((len(col_labels) - 1) / 2, r, "no tokens routed", ha="center", va="center", fontsize=8)
    return im


def plot_heatmap(result: dict, path: Path) -> None:
    """Layers × activations mean gate weight (MoE: pooled per layer, and per expert); one
    colour scale, [0, 1] (comparable across runs) unless raw gates fall outside it."""
    import numpy as np
    from matplotlib.figure import Figure

    names = result["activations"]

    def matrix(stats: list) -> "np.ndarray":
        return np.array([[np.nan if s["mean"] is None else s["mean"][a] for a in names] for s in stats], dtype=float)

    layers = [(f"layer {l['layer']}", l.get("pooled") or l["units"][0]) for l in result["layers"]]
    panels = [("mean gate weight per layer" + (" (all experts)" if result["moe"] else ""),
               [n for n, _ in layers], matrix([s for _, s in layers]))]
    if result["moe"]:
        experts = [(f"L{l['layer']} {u['name']}", u) for l in result["layers"] for u in l["units"]]
        panels.append(("per expert", [n for n, _ in experts], matrix([u for _, u in experts])))
    finite = np.concatenate([m[np.isfinite(m)] for _, _, m in panels])
    vmin, vmax = float(finite.min(initial=0.0)), float(finite.max(initial=1.0))  # [0, 1] unless raw gates leave it
    rows = max(len(labels) for _, labels, _ in panels)
    fig = Figure(figsize=(len(panels) * (1.1 * len(names) + 3), max(3.0, 0.35 * rows + 1.5)))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, labels, data) in zip(axes, panels):
        im = _annotated(ax, data, labels, names, title, vmin, vmax)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"{result['ffn']}: {result['gate_norm']} gates, {result['tokens']:,} validation tokens", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_entropy(result: dict, path: Path) -> None:
    """Normalised gate entropy H / log K per layer (MoE: each expert as a dot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    layers = [l["layer"] for l in result["layers"]]
    main = [(l.get("pooled") or l["units"][0])["entropy_norm"] for l in result["layers"]]
    ax.plot(layers, [float("nan") if v is None else v for v in main], "o-",
            label="all experts" if result["moe"] else "gate entropy")
    if result["moe"]:
        xs = [l["layer"] for l in result["layers"] for u in l["units"] if u["entropy_norm"] is not None]
        ys = [u["entropy_norm"] for l in result["layers"] for u in l["units"] if u["entropy_norm"] is not None]
        ax.scatter(xs, ys, s=12, alpha=0.6, color="gray", label="single experts")
    ax.axhline(1.0, ls="--", color="k", lw=0.8, label="uniform")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("H / log K")
    ax.set_title(f"{result['ffn']}: mean per-token gate entropy", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
