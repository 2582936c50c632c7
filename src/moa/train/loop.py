"""The training loop: a token budget, exact resume, evaluation in nats and bits per byte.

``train(config, out_dir)`` runs a fresh run; ``train(None, out_dir, resume=True)``
continues one from its last checkpoint. The batch of step s is a pure function of
(data, seed, s) (:class:`moa.data.TokenBatcher`) and the LR a pure function of s
(:mod:`moa.train.schedule`), so a checkpoint only needs model, optimizer, step and RNG
state for the resumed run to continue exactly as if it had never stopped.

Under torchrun the same function runs on every rank (:mod:`moa.train.distributed`):
each rank takes a disjoint slice of every global batch, only rank 0 writes records,
and FSDP2 runs save sharded checkpoints.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from moa.config import RunConfig, config_from_dict, diff_configs
from moa.data import TokenBatcher, count_utf8_bytes, prepare_data, val_batches
from moa.model import Transformer, lm_loss, param_counts
from moa.nn import gate_z_loss, moe_aux_loss, moe_check_dispatch, moe_metrics, moe_update_bias
from moa.train import checkpoint as ckpt
from moa.train import distributed as D
from moa.train.gate_stats import gate_slice, gate_statistics, has_mixing
from moa.train.optim import build_optimizers
from moa.train.records import (
    CONFIG, ENVIRONMENT, SUMMARY, MetricsLogger, clear_unstarted, environment, git_commit, read_json, write_json,
)
from moa.train.schedule import lr_multiplier


class TrainingDiverged(RuntimeError):
    """The loss became non-finite; the last good checkpoint is kept."""


class RunDirError(ValueError):
    """A run directory that cannot be used as asked."""


@dataclass
class Evaluation:
    loss: float  # nats per token
    bpb: float  # bits per UTF-8 byte
    tokens: int


def resolve_device(cfg: RunConfig) -> tuple[torch.device, Optional[torch.dtype]]:
    """(device, autocast dtype or None)."""
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device='cuda' but no CUDA device is available; valid here: auto, cpu")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(want)
    if device.type == "cuda" and D.launched_by_torchrun():
        device = torch.device("cuda", int(D.os.environ.get("LOCAL_RANK", 0)))
    dtype = cfg.train.dtype
    if dtype == "float64" and device.type != "cpu":
        raise ValueError("train.dtype=float64 is for numerical checks on CPU; valid on CUDA: auto, float32, bfloat16")
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    return device, (torch.bfloat16 if dtype == "bfloat16" else None)


def evaluate(model, batches, device, autocast_dtype, n_bytes: int, env: D.DistEnv = D.DistEnv()) -> Evaluation:
    """Mean loss and bpb over ``batches``, the same for any number of ranks.

    Under torchrun each rank scores its contiguous share of each batch's rows
    (:func:`moa.train.distributed.rank_share`; a batch that does not divide by the world
    size gives shares one row apart) and sums nats and target tokens; one all-reduce of
    the two sums gives the token-weighted mean. A rank with an empty share still runs the
    forward on one row and counts nothing: FSDP2's forward is a collective every rank joins.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (nats, target tokens) of this rank
    with torch.no_grad(), _autocast(device, autocast_dtype):
        for x, y in batches:
            lo, hi = D.rank_share(x.shape[0], env)
            if hi == lo:
                model(x[:1].to(device))
                continue
            x, y = x[lo:hi].to(device), y[lo:hi].to(device)
            sums[0] += lm_loss(model(x), y, reduction="sum").double()
            sums[1] += y.numel()
    nats, tokens = D.all_reduce_sum(sums, env).tolist()
    model.train(was_training)
    return Evaluation(loss=nats / tokens, bpb=nats / (math.log(2) * n_bytes), tokens=int(tokens))


def _autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _prepare_run_dir(cfg: Optional[RunConfig], out: Path, resume: bool, env: D.DistEnv) -> RunConfig:
    """The run's config, after checking ``out`` can take it; creates nothing (see
    :func:`_create_run_dir`, called once every configuration check has passed)."""
    if resume:
        if not (out / CONFIG).exists():
            raise RunDirError(f"cannot resume {out}: it has no {CONFIG} (not a moa run directory)")
        saved = config_from_dict(read_json(out / CONFIG))
        if cfg is not None and cfg.model.vocab_size is None:  # filled in from the tokenizer when it started
            cfg = cfg.replace(model=cfg.model.replace(vocab_size=saved.model.vocab_size))
        if cfg is not None and cfg != saved:
            diffs = "; ".join(diff_configs(saved, cfg)[:4])
            raise RunDirError(f"cannot resume {out} with a different config ({diffs}); drop the overrides or use a new --out")
        if not ckpt.has_checkpoint(out):
            raise RunDirError(f"cannot resume {out}: it stopped before its first checkpoint (train.ckpt_every="
                              f"{saved.train.ckpt_every}), so there is nothing to resume; the same command without "
                              f"--resume starts it again")
        return saved
    if out.exists() and (ckpt.has_checkpoint(out) or any((out / n).exists() for n in (SUMMARY, CONFIG))):
        saved = config_from_dict(read_json(out / CONFIG)) if (out / CONFIG).exists() else None
        if (not ckpt.has_checkpoint(out) and not (out / SUMMARY).exists() and cfg is not None and saved is not None
                and saved.replace(model=saved.model.replace(vocab_size=cfg.model.vocab_size)) == cfg):
            return cfg  # the same run, stopped before its first checkpoint: it starts again (its records cleared)
        raise RunDirError(f"{out} already holds a run; use --resume {out} to continue it, or another --out")
    return cfg


def _create_run_dir(out: Path, env: D.DistEnv) -> None:
    D.barrier(env)  # every rank has looked (and validated) before rank 0 creates anything
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        clear_unstarted(out)  # a previous attempt stopped before its first checkpoint (checked before)


def train(cfg: Optional[RunConfig], out_dir, *, resume: bool = False, progress: bool = True,
          stop_after: Optional[int] = None, init_state: Optional[dict] = None) -> dict:
    """Run (or resume) training; returns the summary also written to ``summary.json``.

    ``init_state``: a fresh run starts from these weights (``moa train --init-from``,
    :mod:`moa.hf.importer`) and evaluates them first (an ``eval`` event at step 0).

    ``stop_after``: stop after that many optimizer steps of this invocation, as if the
    process had been killed (no final checkpoint or summary); used to test resume.
    Under torchrun, joins the process group and leaves it (barrier first) at the end; after
    an error it leaves the group alone and lets the exception end the process.
    """
    device, autocast_dtype = resolve_device(cfg if cfg is not None else config_from_dict(read_json(Path(out_dir) / CONFIG)))
    env = D.init_distributed(device.type)
    try:
        summary = _train(cfg, Path(out_dir), resume, progress, stop_after, device, autocast_dtype, env,
                         init_state=init_state)
    except BaseException:
        # leave the group as it is: a barrier would pair with the others' pending collectives
        # (a rank failing alone, e.g. out of memory) and hang them until the timeout, and
        # destroying a group a peer is still using may block as well; this process exits, its
        # connections close, the peers' collectives fail and torchrun stops the job
        raise
    D.shutdown(env)
    return summary


def _train(cfg, out, resume, progress, stop_after, device, autocast_dtype, env: D.DistEnv,
           init_state: Optional[dict] = None) -> dict:
    cfg = _prepare_run_dir(cfg, out, resume, env)
    t_start = time.perf_counter()
    parallel = D.resolve_parallel(cfg.train.parallel, env)
    torch.manual_seed(cfg.seed)

    if not env.is_main:  # rank 0 tokenizes and caches; the others then read the cache
        D.barrier(env)
    data = prepare_data(cfg.data)
    if env.is_main:
        D.barrier(env)
    tok = data.tokenizer
    meta = ckpt.read_meta(out) if resume else None
    if meta is not None:
        if meta["vocab_size"] != cfg.model.vocab_size or meta["tokenizer"] != tok.spec:
            raise RunDirError(f"tokenizer/model vocab mismatch on resume: checkpoint has {meta['tokenizer']} "
                              f"(vocab {meta['vocab_size']}), data now gives {tok.spec} (vocab {tok.vocab_size})")
        if meta["corpus_fingerprint"] != data.fingerprint:
            raise RunDirError(f"corpus changed since the checkpoint (fingerprint {meta['corpus_fingerprint']} → "
                              f"{data.fingerprint}); resume needs the same data")
        if meta["step"] >= cfg.train.steps and (out / SUMMARY).exists():
            return read_json(out / SUMMARY)  # a finished run: its record stands as written
        sharded = parallel == "fsdp"
        if sharded != (meta["format"] == "dcp"):
            raise RunDirError(f"cannot resume {out}: its checkpoint is {'sharded (FSDP)' if not sharded else 'one file'}"
                              f", this run is {parallel} (train.parallel={cfg.train.parallel}, "
                              f"{env.world_size} process(es)); resume it as it was run")
        if sharded and meta.get("world_size", env.world_size) != env.world_size:
            raise RunDirError(f"cannot resume {out}: its FSDP checkpoint was written by {meta['world_size']} ranks, "
                              f"this is {env.world_size}; resume with torchrun --nproc_per_node {meta['world_size']}")
    if cfg.model.vocab_size is None:
        cfg = cfg.replace(model=cfg.model.replace(vocab_size=tok.vocab_size))
    elif cfg.model.vocab_size < tok.vocab_size:
        raise ValueError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
                         f"{tok.vocab_size} ({tok.spec}); leave it unset to match the tokenizer")
    tc = cfg.train
    first_row, micro, accum = D.rank_rows(tc.batch_size, tc.micro_batch_size, env)
    batcher = TokenBatcher(data.train_tokens, tc.seq_len, tc.batch_size, cfg.seed)
    # a micro-batch is per rank: evaluation batches hold one per rank (each rank scores its share),
    # so evaluation, like training, gets faster with more ranks; the loss is a token-weighted sum
    # and so does not depend on how the windows are batched
    val_rows = tc.micro_batch_size * env.world_size if tc.micro_batch_size else tc.batch_size
    val = val_batches(data.val_tokens, tc.seq_len, val_rows, tc.eval_tokens)
    val_bytes = sum(count_utf8_bytes(tok, y) for _, y in val)

    model = Transformer(cfg.model).to(device, torch.float64 if tc.dtype == "float64" else torch.float32)
    init_state = init_state if meta is None else None  # a resumed run continues from its checkpoint
    if init_state is not None:
        model.load_state_dict(init_state)
    counts = param_counts(model)
    step_model = D.parallelize(model, parallel, env, device, autocast_dtype)
    optimizers = build_optimizers(model, cfg.optim, replicated_group=D.replicated_group(parallel, env))
    use_compile = tc.compile == "true" or (tc.compile == "auto" and device.type == "cuda")
    moe_check_dispatch(model, device, autocast_dtype or model.embed.weight.dtype, compiled=use_compile)
    if meta is None:  # every configuration error is raised above, before the run directory exists
        _create_run_dir(out, env)
    start_step = 0
    wall_before = train_time_before = 0.0
    if meta is not None:
        if parallel == "fsdp":
            ckpt.load_sharded(out, model, optimizers, env.rank)
        else:
            state = ckpt.load_checkpoint(out)
            model.load_state_dict(state["model"])
            for opt, opt_state in zip(optimizers, state["optimizers"]):
                opt.load_state_dict(opt_state)
            ckpt.set_rng_state(state["rng"])
        start_step, wall_before, train_time_before = meta["step"], meta["wall_s"], meta["train_s"]
    elif env.is_main:
        write_json(out / CONFIG, cfg.to_dict())
        write_json(out / ENVIRONMENT, {**environment(), "data": data.meta, "params": counts,
                                       "world_size": env.world_size, "parallel": parallel})
        if tok.spec != "bytes" and hasattr(tok, "backend"):
            tok.backend.save(str(out / "tokenizer.json"))

    if use_compile:
        step_model = torch.compile(step_model)
    logger = MetricsLogger(out, keep_until_step=start_step if resume else None) if env.is_main else None
    total = tc.steps
    params = [p for p in model.parameters() if p.requires_grad]
    is_moe = cfg.model.moe.enabled
    gate_x = gate_slice(val[0][0]).to(device) if val and has_mixing(model) else None
    z_loss_on = cfg.model.gate_z_loss > 0

    def checkpoint(step: int, wall: float, train_s: float) -> None:
        meta = {"step": step, "vocab_size": cfg.model.vocab_size, "tokenizer": tok.spec, "wall_s": wall,
                "train_s": train_s, "corpus_fingerprint": data.fingerprint, "config": cfg.to_dict(),
                "world_size": env.world_size, "parallel": parallel}
        if parallel == "fsdp":
            ckpt.save_sharded(out, model, optimizers, meta, env.rank)
        elif env.is_main:
            ckpt.save_checkpoint(out, {**meta, "model": model.state_dict(),
                                       "optimizers": [o.state_dict() for o in optimizers], "rng": ckpt.rng_state()})
        D.barrier(env)

    bar = None
    if progress and env.is_main:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=start_step, unit="step", dynamic_ncols=True, leave=False)

    pending: list[tuple[int, torch.Tensor]] = []  # (step, loss) not yet checked on the host
    last_good = start_step
    train_s = train_time_before
    interval_t, interval_tokens = time.perf_counter(), 0
    last_eval: Optional[Evaluation] = None
    tokens_per_s = 0.0

    def flush_pending() -> Optional[float]:
        nonlocal pending
        if not pending:
            return None
        losses = D.all_reduce_mean(torch.stack([l for _, l in pending]).float(), env).cpu()
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            step_bad = pending[int(bad[0])][0]
            raise TrainingDiverged(f"loss is not finite at step {step_bad + 1}; stopped. Last good checkpoint: "
                                   f"{out} (step {last_good}); lower optim.lr or raise warmup")
        mean = losses.mean().item()
        pending = []
        return mean

    if init_state is not None:  # the imported weights' loss, before any step
        first = evaluate(step_model, val, device, autocast_dtype, val_bytes, env)
        if logger is not None:
            logger.log({"event": "eval", "step": 0, "tokens": 0, "val_loss": first.loss, "val_bpb": first.bpb})
    try:
        model.train()
        for step in range(start_step, total):
            if stop_after is not None and step - start_step >= stop_after:
                return {}
            mult = lr_multiplier(step, total, cfg.schedule)
            for opt in optimizers:
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * mult
            loss_sum = None
            for i in range(accum):
                lo = first_row + i * micro
                x, y = batcher.batch(step, lo, lo + micro)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                sync = i == accum - 1
                with _grad_sync(step_model, parallel, sync), _autocast(device, autocast_dtype):
                    loss = lm_loss(step_model(x), y)
                    objective = loss + moe_aux_loss(model) if is_moe else loss  # balance losses: trained, not reported
                    if z_loss_on:  # MoA gate z-loss (model.gate_z_loss): trained, not reported
                        objective = objective + gate_z_loss(model)
                    (objective / accum if accum > 1 else objective).backward()
                loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)
            if is_moe:
                moe_update_bias(model)  # aux-loss-free balancing (no-op unless moe.balance=bias)
            pending.append((step, loss_sum / accum if accum > 1 else loss_sum))
            interval_tokens += tc.tokens_per_step
            done = step + 1
            is_last = done == total
            log_now = done % tc.log_every == 0 or is_last
            eval_now = (tc.eval_every and done % tc.eval_every == 0) or is_last
            ckpt_now = (tc.ckpt_every and done % tc.ckpt_every == 0) or is_last
            if log_now or eval_now or ckpt_now:
                train_loss = flush_pending()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                now = time.perf_counter()
                train_s += now - interval_t
                tokens_per_s = interval_tokens / max(now - interval_t, 1e-9)
                if train_loss is not None and logger is not None:
                    logger.log({"event": "train", "step": done, "tokens": done * tc.tokens_per_step,
                                "train_loss": train_loss, "lr": cfg.optim.lr * mult, "tokens_per_s": tokens_per_s,
                                **(moe_metrics(model) if is_moe else {})})
                    if bar is not None:
                        bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
                paused = time.perf_counter()  # logging counts as training time; eval and checkpoints do not
                train_s += paused - now
                if eval_now:
                    last_eval = evaluate(step_model, val, device, autocast_dtype, val_bytes, env)
                    if logger is not None:
                        logger.log({"event": "eval", "step": done, "tokens": done * tc.tokens_per_step,
                                    "val_loss": last_eval.loss, "val_bpb": last_eval.bpb})
                    if gate_x is not None:  # LA/MoA: per-layer gate statistics (moa.train.gate_stats)
                        gates = gate_statistics(model, gate_x, _autocast(device, autocast_dtype))
                        if logger is not None:
                            logger.log({"event": "gates", "step": done, "tokens": done * tc.tokens_per_step, **gates})
                if ckpt_now:
                    # on the training device: NCCL reduces CUDA tensors only
                    finite = torch.tensor(float(all(torch.isfinite(p).all() for p in params)), device=device)
                    if D.all_reduce_sum(finite, env).item() < env.world_size:  # never save a diverged model
                        raise TrainingDiverged(f"parameters are not finite after step {done}; stopped. Last good "
                                               f"checkpoint: {out} (step {last_good}); lower optim.lr")
                    last_good = done
                    checkpoint(done, wall_before + time.perf_counter() - t_start, train_s)
                interval_t, interval_tokens = time.perf_counter(), 0
            if bar is not None:
                bar.update(1)
    finally:
        if logger is not None:
            logger.close()
        if bar is not None:
            bar.close()

    if last_eval is None:  # resumed a finished run: evaluate the final model
        last_eval = evaluate(step_model, val, device, autocast_dtype, val_bytes, env)
    if parallel == "fsdp":  # a consolidated copy of the weights for `moa sample`
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if env.is_main:
            ckpt.atomic_write(out / "model.pt", lambda f: torch.save(full, f))
    trained = total * tc.tokens_per_step
    summary = {
        "final_val_loss": last_eval.loss, "final_val_bpb": last_eval.bpb,
        "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
        "params_active": counts["active"], "params_active_non_embedding": counts["active_non_embedding"],
        "moe_experts": cfg.model.moe.num_experts, "tokens": trained, "steps": total, "wall_s": wall_before + time.perf_counter() - t_start,
        # over the whole run (train_s adds up every invocation's training time up to its last
        # checkpoint), so a run resumed with nothing left to train keeps its real throughput
        "train_s": train_s, "tokens_per_s": trained / train_s if train_s > 0 else None,
        "last_tokens_per_s": tokens_per_s, "git_commit": git_commit(), "corpus_fingerprint": data.fingerprint,
        "ffn": cfg.model.ffn, "tokenizer": tok.spec, "vocab_size": cfg.model.vocab_size,
        "val_tokens": last_eval.tokens, "device": str(device), "world_size": env.world_size, "parallel": parallel,
        "resumed_from_step": start_step if resume else None,
    }
    if env.is_main:
        write_json(out / SUMMARY, summary)
    return summary


def _grad_sync(step_model, parallel: str, sync: bool):
    """DDP: skip the gradient all-reduce on all but the last micro-batch of a step.

    FSDP2 reduce-scatters every micro-batch instead (as torchtitan does): skipping it would
    accumulate *unsharded* gradients, the whole model's on every rank (8 GB in fp32 for 2B
    parameters, against 0.5 GB of sharded weights and Adam state on 64 ranks).
    """
    if sync or parallel != "ddp":
        return nullcontext()
    return step_model.no_sync()
