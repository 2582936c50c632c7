"""Expressivity (docs/DESIGN.md §10.3): synthetic regression showing fixed σ ⊂ LA ⊂ MoA at fixed width.

Student–teacher regression with the library's own FFN modules (Type-I "mlp", bias-free,
``d_model = 8``). Both teachers are built from the real layers:

* **target A** — an LA FFN (width ``teacher_width``) with ``σ = ½·relu + ½·relu2``.
  LA contains it; no single σ of the dictionary does.
* **target B** — the same FFN converted to MoA (:func:`moa.nn.convert_ffn`, which
  preserves the function) and then given a token-dependent gate: logits ``±(β/2)·u·x`` on
  relu / relu2, so ``σ(z; x) = s(x)·relu(z) + (1 − s(x))·relu2(z)`` with
  ``s(x) = sigmoid(β u·x)``: tokens on one side of the hyperplane ``u·x = 0`` use relu,
  tokens on the other relu2. MoA contains it; LA mixes the same way for every token.

Students: each activation of the default dictionary alone (presets ``relu, gelu, silu,
relu2``), ``la-mlp`` (layer granularity) and ``moa-mlp`` (G = 1, softmax gates), over
the same dictionary, at several hidden widths. Each (target, student, width, seed) is
trained full-batch with Adam (cosine decay to 1% of the LR) on a fixed training set;
the **floor** is the lowest train MSE seen over the run (including after the last
step). Results are mean ± std over seeds; each seed draws new data, a new teacher and
new student inits, shared by all students (a paired comparison).

Why the hierarchy must show (the odd-part argument). For a bias-free Type-I FFN,
``f(x) − f(−x) = W2 [σ(W1 x) − σ(−W1 x)]``. relu, gelu and silu all satisfy
``σ(z) − σ(−z) = z`` exactly, so the odd part of such a network is *linear*, at any
width; relu2 networks are positively 2-homogeneous (``f(rx) = r² f(x)``), so they
cannot fit degree-1 structure. LA's odd part is ``linear + 2-homogeneous``
(``(a_relu + a_gelu + a_silu)·z + a_relu2·z|z|``), which target A's odd part is and
target B's is not (its gate ``s(x)`` mixes radial scales). The training set is made
symmetric (every ``x`` comes with ``−x``), so on it odd and even parts are orthogonal
and the relu/gelu/silu train MSE is provably ≥ the residual of a least-squares linear fit
to the target's odd part: reported as ``odd_bound`` (a trained floor below it would be
a bug). The relu2 and LA-on-B floors have no closed-form bound here; they are measured.

Choices, written down:

* Inputs ``x ~ N(0, I_d)``; teacher ``W1`` rows ``~ N(0, I/d)`` (pre-activations of
  unit variance), ``W2 ~ N(0, 1/m)``, gate direction ``u`` uniform on the sphere.
  Students use the modules' default init (``nn.Linear``; LA/MoA start uniform).
* Gate sharpness β = 4: the switch is sharp on the scale of ``u·x ~ N(0, 1)`` yet
  learnable by a MoA student in 1000 steps (measured at β = 8: LA floors about the
  same, MoA floors ~5× higher, so the margin shrinks; β = 16 worse still).
* One learning rate (2e-2, the better of 1e-2 / 2e-2 for LA and MoA in a probe) for every
  variant. The fixed-σ curves are flat by the end and the gelu/silu floors come within
  ~5–10% of their provable bound, so a different LR could not close the gap; LA/MoA
  floors are still creeping down at the end (more steps would only widen it).
* Teacher coefficients are on the simplex (no negative coefficient), because a softmax
  MoA contains LA only for coefficients on the simplex (``gate_logits_for``).
* Targets are scaled by one scalar to unit mean square, so every MSE is relative
  (``MSE / mean(y²)``; the zero predictor scores 1) and stays inside the teacher's class.
* ``samples`` (default 1024, i.e. 8192 target numbers) ≫ student parameters (≤ 548
  at width 32), so a low floor means the function class fits, not that the net
  memorised points; a fresh test set of the same size is scored at the end
  (``test_mse``) to show it.
* The teacher has a fixed width (default 4) below the smallest student width (8):
  a student of exactly the teacher's width often stalls in a local minimum (seen with
  teacher width 8: LA and MoA stuck at ~1e-2 on some seeds), which measures the
  optimiser, not the function class. Wider students show whether a lower class closes
  the gap with width (relu/gelu/silu provably cannot).
* Defaults (1000 steps, lr 2e-2, 3 seeds, widths 8/16/32) fit ~2–3 minutes on two
  CPU cores; the runs use one intra-op thread (the matrices are tiny, and a second
  thread only adds waiting when the other core is busy).
* "Held" means: at every width, the lower class's mean floor is ≥ ``margin`` (10×)
  the higher class's — best fixed σ vs LA on target A, LA vs MoA on target B.

Outputs in ``out_dir``: ``config.json``, ``environment.json``, ``metrics.jsonl`` (each
run's loss curve), ``results.json`` (config, environment, every run's numbers, bounds,
summary, verdicts); ``results.md`` and ``expressivity.png`` are written from
``results.json`` alone by :func:`write_report`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from moa.experiments.settings import EXPRESSIVITY_DEFAULTS as DEFAULTS
from moa.nn import DEFAULT_DICTIONARY, FeedForward, build_ffn, convert_ffn, ffn_config

TARGETS = ("A", "B")
FIXED_VARIANTS = tuple(DEFAULT_DICTIONARY)  # relu, gelu, silu, relu2: FFN presets of kind "mlp"
VARIANTS = (*FIXED_VARIANTS, "la-mlp", "moa-mlp")
#: target A's LA coefficients over DEFAULT_DICTIONARY (relu, gelu, silu, relu2)
TEACHER_COEF = {"relu": 0.5, "relu2": 0.5}
RESULTS, REPORT, PLOT, METRICS = "results.json", "results.md", "expressivity.png", "metrics.jsonl"


def describe_target(target: str, teacher_width: int, gate_sharpness: float) -> str:
    mix = " + ".join(f"{a:g}·{n}" for n, a in TEACHER_COEF.items())
    if target == "A":
        return f"LA teacher, width {teacher_width}: σ = {mix}"
    return (f"MoA teacher, width {teacher_width}: σ(z; x) = s·relu + (1−s)·relu2, "
            f"s = sigmoid({gate_sharpness:g}·u·x)")


def make_teacher(target: str, d_model: int, width: int, gate_sharpness: float,
                 generator: torch.Generator) -> FeedForward:
    """Target A's LA FFN, or target B's MoA FFN (A converted, then token-dependent gates)."""
    la = build_ffn(ffn_config("la-mlp", hidden_dim=width), d_model)
    with torch.no_grad():
        la.w1.weight.copy_(torch.randn(width, d_model, generator=generator) / math.sqrt(d_model))
        la.w2.weight.copy_(torch.randn(d_model, width, generator=generator) / math.sqrt(width))
        la.la_coef.copy_(torch.tensor([TEACHER_COEF.get(n, 0.0) for n in la.config.activations]))
    if target == "A":
        return la
    moa = convert_ffn(la, ffn_config("moa-mlp", hidden_dim=width))  # same function, zero gate weights
    u = torch.randn(d_model, generator=generator)
    u = u / u.norm()
    names = moa.config.activations
    with torch.no_grad():  # softmax over (relu, relu2) logits ±(β/2)u·x → s(x) = sigmoid(β u·x)
        moa.gate.weight[names.index("relu")] = gate_sharpness / 2 * u
        moa.gate.weight[names.index("relu2")] = -gate_sharpness / 2 * u
    return moa


def make_data(d_model: int, samples: int, generator: torch.Generator) -> torch.Tensor:
    """``samples`` Gaussian inputs, symmetric: the second half is minus the first."""
    half = torch.randn(samples // 2, d_model, generator=generator)
    return torch.cat([half, -half])


def odd_part_bound(x: torch.Tensor, y: torch.Tensor) -> float:
    """Relative-MSE lower bound for relu/gelu/silu students on symmetric ``x``.

    Their odd part ``(f(x) − f(−x))/2`` is linear, and on a symmetric set odd and even
    errors are orthogonal, so MSE ≥ min_L mean‖y_odd − L x‖² (``y`` has unit mean square).
    """
    n = x.shape[0] // 2
    x_h, y_odd = x[:n].double(), (y[:n].double() - y[n:].double()) / 2
    sol = torch.linalg.lstsq(x_h, y_odd).solution
    return ((x_h @ sol - y_odd).square().sum() / y_odd.numel()).item()


def fit(model: FeedForward, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
        curve_points: int = 100) -> dict:
    """Full-batch Adam on MSE with cosine decay to lr/100; the floor is the lowest loss seen."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr / 100)
    every = max(1, steps // curve_points)
    floor, curve, diverged = math.inf, [], False
    for step in range(steps):
        loss = F.mse_loss(model(x), y)
        value = loss.item()
        if not math.isfinite(value):
            diverged = True
            break
        floor = min(floor, value)
        if step % every == 0:
            curve.append([step, value])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        final = F.mse_loss(model(x), y).item()
    if math.isfinite(final):
        floor = min(floor, final)
    curve.append([steps, final])
    return {"floor": floor, "final": final, "diverged": diverged, "curve": curve}


def _check(name: str, value, ok: bool, need: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: {need}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def resolve_seeds(seeds) -> list[int]:
    """``seeds``: a count n (seeds 0..n−1) or a sequence of distinct non-negative ints."""
    if _is_int(seeds):
        _check("seeds", seeds, seeds >= 1, "need at least one seed")
        return list(range(seeds))
    _check("seeds", seeds, isinstance(seeds, (list, tuple)) and len(seeds) > 0, "a count or a list of ints")
    for s in seeds:
        _check("seed", s, _is_int(s) and s >= 0, "seeds are non-negative integers")
    _check("seeds", seeds, len(set(seeds)) == len(seeds), "seeds must be distinct")
    return list(seeds)


def check_options(*, widths, steps, lr, d_model, teacher_width, samples, gate_sharpness, margin) -> list[int]:
    """Validate the options (one-line ``ValueError`` naming the bad value); the widths, as a list."""
    _check("widths", widths, isinstance(widths, (list, tuple)) and len(widths) > 0, "a non-empty list of ints")
    for w in widths:
        _check("width", w, _is_int(w) and w >= 1, "widths are positive integers")
    _check("widths", widths, len(set(widths)) == len(widths), "widths must be distinct")
    _check("steps", steps, _is_int(steps) and steps >= 1, "a positive integer")
    _check("lr", lr, isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0, "a finite number > 0")
    _check("d_model", d_model, _is_int(d_model) and d_model >= 1, "a positive integer")
    _check("teacher_width", teacher_width, _is_int(teacher_width) and teacher_width >= 1, "a positive integer")
    _check("samples", samples, _is_int(samples) and samples >= 2 and samples % 2 == 0,
           "an even integer ≥ 2 (the set holds x and −x)")
    _check("gate_sharpness", gate_sharpness,
           isinstance(gate_sharpness, (int, float)) and math.isfinite(gate_sharpness) and gate_sharpness > 0,
           "a finite number > 0")
    _check("margin", margin, isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 1,
           "a finite number > 1")
    return sorted(widths)


def run_expressivity(out_dir, widths: Sequence[int] = DEFAULTS["widths"], seeds=DEFAULTS["seeds"],
                     steps: int = DEFAULTS["steps"], *, lr: float = DEFAULTS["lr"],
                     d_model: int = DEFAULTS["d_model"], teacher_width: int = DEFAULTS["teacher_width"],
                     samples: int = DEFAULTS["samples"], gate_sharpness: float = DEFAULTS["gate_sharpness"],
                     margin: float = DEFAULTS["margin"], progress: bool = False) -> dict:
    """Train every (target, variant, width, seed), write ``out_dir``, return the results dict.

    ``seeds`` is a count or a list of seeds. See the module docstring for the design.
    """
    from moa.train.records import CONFIG, ENVIRONMENT, environment, write_json

    widths = check_options(widths=list(widths) if isinstance(widths, (list, tuple)) else widths, steps=steps,
                           lr=lr, d_model=d_model, teacher_width=teacher_width, samples=samples,
                           gate_sharpness=gate_sharpness, margin=margin)
    seeds = resolve_seeds(list(seeds) if isinstance(seeds, tuple) else seeds)
    out = Path(out_dir)
    if (out / RESULTS).exists():
        raise ValueError(f"{out} already holds {RESULTS}; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "widths": widths, "seeds": seeds, "steps": steps, "lr": lr, "lr_schedule": "cosine to lr/100",
        "optimizer": "Adam, full batch", "d_model": d_model, "teacher_width": teacher_width,
        "samples": samples, "gate_sharpness": gate_sharpness, "margin": margin, "dtype": "float32",
        "threads": 1,
        "inputs": "x ~ N(0, I), symmetric set (x, -x)", "targets_normalised": "unit mean square",
        "dictionary": list(DEFAULT_DICTIONARY), "teacher_coef": TEACHER_COEF,
        "targets": {t: describe_target(t, teacher_width, gate_sharpness) for t in TARGETS},
        "variants": {v: _config_dict(ffn_config(v)) for v in VARIANTS},
    }
    env = environment()
    write_json(out / CONFIG, config)
    write_json(out / ENVIRONMENT, env)
    runs, bounds = [], []
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast, and immune to a busy second core
    try:
        with open(out / METRICS, "w") as metrics:
            for seed in seeds:
                seed_runs, seed_bounds = _run_seed(seed, config, metrics, progress)
                runs += seed_runs
                bounds += seed_bounds
    finally:
        torch.set_num_threads(threads)
    results = {"config": config, "environment": env, "runs": runs, "bounds": bounds,
               "wall_seconds": round(time.perf_counter() - t_start, 1)}
    results.update(summarize(results))
    write_json(out / RESULTS, results)
    write_report(out)
    return results


def _stream(seed: int, *keys) -> int:
    """A seed for one purpose of one experiment seed (data, teacher A/B, a student init)."""
    return int.from_bytes(hashlib.sha256(repr((seed, *keys)).encode()).digest()[:8], "little") >> 1


def _run_seed(seed: int, config: dict, metrics, progress: bool) -> tuple[list[dict], list[dict]]:
    """Every (target, width, variant) for one seed; each run's curve goes to ``metrics``."""
    d_model, samples = config["d_model"], config["samples"]
    gen = torch.Generator().manual_seed(_stream(seed, "data"))
    x, x_test = make_data(d_model, samples, gen), make_data(d_model, samples, gen)
    runs, bounds = [], []
    for target in TARGETS:
        teacher = make_teacher(target, d_model, config["teacher_width"], config["gate_sharpness"],
                               torch.Generator().manual_seed(_stream(seed, "teacher", target)))
        with torch.no_grad():
            y, y_test = teacher(x), teacher(x_test)
            scale = y.square().mean().sqrt()  # one scalar: the target stays in the teacher's class
            y, y_test = y / scale, y_test / scale
        bounds.append({"target": target, "seed": seed, "odd_bound": odd_part_bound(x, y)})
        for width in config["widths"]:
            for variant in VARIANTS:
                # same seed for every variant: all students of a width start from the same W1, W2
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(_stream(seed, "student", width))
                    student = build_ffn(ffn_config(variant, hidden_dim=width), d_model)
                t0 = time.perf_counter()
                r = fit(student, x, y, config["steps"], config["lr"])
                with torch.no_grad():
                    test = F.mse_loss(student(x_test), y_test).item()
                record = {"target": target, "variant": variant, "width": width, "seed": seed,
                          "params": sum(p.numel() for p in student.parameters()),
                          "floor": r["floor"], "final": r["final"], "test_mse": test,
                          "diverged": r["diverged"], "seconds": round(time.perf_counter() - t0, 3)}
                runs.append(record)
                metrics.write(json.dumps({**record, "curve": r["curve"]}) + "\n")
                metrics.flush()
                if progress:
                    print(f"  target {target}  {variant:<8} width {width:>3}  seed {seed}: "
                          f"floor {r['floor']:.2e}  ({record['seconds']:.1f} s)", flush=True)
    return runs, bounds


def _config_dict(cfg) -> dict:
    import dataclasses

    d = dataclasses.asdict(cfg)
    d.pop("hidden_dim")  # set per run from the width
    return d


def _mean_std(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def summarize(results: dict) -> dict:
    """Per-cell statistics and the verdict per target, computed from ``results["runs"]``.

    Target A compares the best fixed σ (lowest mean floor at that width) with LA, target
    B compares LA with MoA; ``held`` needs a ratio of mean floors ≥ ``margin`` at every
    width. ``seed_min_ratio`` is the same ratio seed by seed, its smallest.
    """
    cfg = results["config"]
    widths, margin = cfg["widths"], cfg["margin"]
    floors = {(r["target"], r["variant"], r["width"], r["seed"]): r["floor"] for r in results["runs"]}
    summary = {t: {v: {} for v in VARIANTS} for t in TARGETS}
    for t in TARGETS:
        for v in VARIANTS:
            for w in widths:
                summary[t][v][str(w)] = _mean_std([floors[t, v, w, seed] for seed in cfg["seeds"]])
    bounds = {t: _mean_std([b["odd_bound"] for b in results["bounds"] if b["target"] == t]) for t in TARGETS}
    comparisons = {"A": (FIXED_VARIANTS, "la-mlp", "best fixed", "LA", "LA fits, no fixed σ does"),
                   "B": (("la-mlp",), "moa-mlp", "LA", "MoA", "MoA fits, LA does not")}
    verdicts = {}
    for t, (lower_set, upper, lower_name, upper_name, claim) in comparisons.items():
        cells = []
        for w in widths:
            lower = min(lower_set, key=lambda v: summary[t][v][str(w)]["mean"])
            lo, hi = summary[t][lower][str(w)]["mean"], summary[t][upper][str(w)]["mean"]
            per_seed = [min(floors[t, v, w, seed] for v in lower_set) / floors[t, upper, w, seed]
                        for seed in cfg["seeds"]]
            cells.append({"width": w, "lower": lower, "lower_floor": lo, "upper": upper, "upper_floor": hi,
                          "ratio": lo / hi, "seed_min_ratio": min(per_seed)})
        worst = min(cells, key=lambda c: c["ratio"])
        held = all(c["ratio"] >= margin for c in cells)
        failed = ", ".join(str(c["width"]) for c in cells if c["ratio"] < margin)
        status = f"held at every width (≥{margin:g}×)" if held else f"NOT held (<{margin:g}× at width {failed})"
        which = f"{lower_name} ({worst['lower']})" if len(lower_set) > 1 else lower_name
        line = (f"target {t}: {claim} — {status}; worst width {worst['width']}: {which} {worst['lower_floor']:.1e} "
                f"vs {upper_name} {worst['upper_floor']:.1e} ({worst['ratio']:.0f}×; "
                f"per seed ≥ {min(c['seed_min_ratio'] for c in cells):.0f}×)")
        verdicts[t] = {"held": held, "per_width": cells, "line": line}
    return {"summary": summary, "odd_bound": bounds, "verdicts": verdicts}


def _cell(s: Optional[dict]) -> str:
    return "–" if s is None else f"{s['mean']:.2e} ± {s['std']:.1e}"


def format_tables(results: dict) -> str:
    """Markdown: one table per target (rows = variants, columns = widths), verdict lines."""
    cfg = results["config"]
    widths, summary = cfg["widths"], results["summary"]
    n_seeds = len(cfg["seeds"])
    lines = [f"# Expressivity: fixed σ ⊂ LA ⊂ MoA (docs/DESIGN.md §10.3)", "",
             f"Relative train-MSE floor (MSE / mean y², min over the run), mean ± std over {n_seeds} seed(s); "
             f"d_model={cfg['d_model']}, {cfg['samples']} samples, {cfg['steps']} full-batch Adam steps, "
             f"lr {cfg['lr']:g}. Columns are student hidden widths.", ""]
    head = "| variant | " + " | ".join(f"m={w}" for w in widths) + " |"
    rule = "|---|" + "---:|" * len(widths)
    for t in TARGETS:
        b = results["odd_bound"][t]
        lines += [f"## Target {t} — {cfg['targets'][t]}", "", head, rule]
        for v in VARIANTS:
            lines.append(f"| {v} | " + " | ".join(_cell(summary[t][v].get(str(w))) for w in widths) + " |")
        lines += ["", f"Provable floor for relu/gelu/silu at any width (odd part is linear): "
                      f"{b['mean']:.2e} ± {b['std']:.1e}.", "", results["verdicts"][t]["line"], ""]
    params = {(r["variant"], r["width"]): r["params"] for r in results["runs"]}
    lines += ["## Parameters", "", head, rule]
    for v in VARIANTS:
        lines.append(f"| {v} | " + " | ".join(str(params.get((v, w), "–")) for w in widths) + " |")
    diverged = [r for r in results["runs"] if r["diverged"]]
    if diverged:
        lines += ["", f"{len(diverged)} run(s) diverged (non-finite loss); their floor is the lowest finite loss."]
    lines += ["", f"Wall time {results['wall_seconds']:.0f} s; git {results['environment'].get('git_commit')}.", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """MSE floor vs width per variant, log y, one panel per target; bars span min–max over seeds."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    cfg = results["config"]
    widths = cfg["widths"]
    fig = Figure(figsize=(6 * len(TARGETS), 4.5))
    axes = fig.subplots(1, len(TARGETS), sharey=True)
    styles = {"la-mlp": dict(color="tab:blue", lw=2.5, marker="s"),
              "moa-mlp": dict(color="tab:red", lw=2.5, marker="D")}
    greys = dict(zip(FIXED_VARIANTS, ("0.15", "0.35", "0.55", "0.75")))
    for ax, t in zip(axes, TARGETS):
        for v in VARIANTS:
            means, lo, hi = [], [], []
            for w in widths:
                vals = [r["floor"] for r in results["runs"] if (r["target"], r["variant"], r["width"]) == (t, v, w)]
                m = results["summary"][t][v][str(w)]["mean"]
                means.append(m)
                lo.append(m - min(vals))
                hi.append(max(vals) - m)
            style = styles.get(v, dict(color=greys.get(v, "0.5"), lw=1.2, marker="o", ls="--"))
            ax.errorbar(widths, means, yerr=[lo, hi], label=v, capsize=3, **style)
        ax.axhline(results["odd_bound"][t]["mean"], color="0.4", ls=":", lw=1,
                   label="relu/gelu/silu bound")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xlabel("student hidden width m")
        ax.set_title(f"target {t}: {cfg['targets'][t]}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative train MSE floor")
    axes[-1].legend(fontsize=8, loc="best")
    fig.suptitle(f"Expressivity (mean over {len(cfg['seeds'])} seeds, bars: min–max)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(out_dir) -> str:
    """(Re)write ``results.md`` and ``expressivity.png`` from ``results.json``; return the markdown."""
    out = Path(out_dir)
    path = out / RESULTS
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the experiment first")
    with open(path) as f:
        results = json.load(f)
    text = format_tables(results)
    (out / REPORT).write_text(text)
    plot(results, out / PLOT)
    return text
