"""lm-evaluation-harness on moa runs and exports, offline, with a built-in bits-per-byte task.

``moa_val_bpb`` scores the run's own validation split: the documents of the cached val
token stream (split at the EOS, decoded), whole documents from its first EOS on (the split
is the tail of the token stream and may begin mid-document, even mid-character for bytes)
until they hold ``train.eval_tokens`` tokens. Each is a ``loglikelihood_rolling`` request: lm-eval encodes
it, prefixes the EOS (the exported tokenizers have no BOS) and scores every token in
disjoint windows of ``max_position_embeddings`` = ``train.seq_len`` predictions, the last
one with a full-length context (``lm_eval.utils.get_rolling_token_windows``); bits per
byte = Σ nats / (ln 2 · Σ UTF-8 bytes of the documents).

:func:`rolling_nats` is moa's own computation of the same windows with moa's
``Transformer`` and token ids, the reference that the tests hold lm-eval's number to.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

VAL_TASK = "moa_val_bpb"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ImportError('moa eval needs lm-evaluation-harness: pip install -e ".[eval]"') from None


def val_documents(run_config, max_tokens: Optional[int] = None) -> tuple[list[np.ndarray], object]:
    """(token ids of each validation document, moa tokenizer) of a run config."""
    from moa.data import prepare_data

    data = prepare_data(run_config.data)
    tok = data.tokenizer
    if tok.eos_id is None:
        raise ValueError(f"tokenizer {tok.spec!r} has no EOS token, so documents cannot be recovered; "
                         "moa_val_bpb needs bytes, bpe:N or an hf: tokenizer with an EOS")
    budget = run_config.train.eval_tokens if max_tokens is None else max_tokens
    val = np.asarray(data.val_tokens)
    cuts = np.flatnonzero(val == tok.eos_id)
    # what precedes the first EOS may be the end of a document cut by the split: skip it
    docs, start, total = [], (int(cuts[0]) + 1 if len(cuts) else 0), 0
    for end in [*cuts.tolist(), len(val)]:
        if end > start:
            docs.append(val[start:end].astype(np.int64))
            total += end - start
        start = end + 1
        if total >= budget:
            break
    if not docs:
        raise ValueError("the validation split holds no documents")
    return docs, tok


def rolling_windows(n: int, max_len: int) -> list[tuple[int, int, int]]:
    """``(input_start, input_end, n_scored)`` over ``x = [prefix] + ids`` (len n + 1): window
    j predicts ids[jL:(j+1)L]; the last one keeps a full context (lm-eval's rule)."""
    out, done = [], 0
    while done < n:
        k = min(max_len, n - done)
        end = done + k  # inputs x[end - L : end] predict x[end - k + 1 : end + 1]
        out.append((max(0, end - max_len), end, k))
        done = end
    return out


@torch.no_grad()
def rolling_nats(model, docs: Sequence[np.ndarray], prefix_id: int, max_len: int) -> list[float]:
    """Negative log-likelihood (nats, float64) of each document under moa's ``model``."""
    model.eval()
    out = []
    for ids in docs:
        x = torch.tensor([prefix_id, *np.asarray(ids).tolist()], dtype=torch.long)
        nats = 0.0
        for s, e, k in rolling_windows(len(ids), max_len):
            logp = torch.log_softmax(model(x[None, s:e])[0].double(), -1)  # (e - s, V)
            targets = x[e - k + 1:e + 1]
            nats -= logp[-k:].gather(-1, targets[:, None]).sum().item()
        out.append(nats)
    return out


def moa_bits_per_byte(model, docs: Sequence[np.ndarray], tokenizer, max_len: int) -> float:
    """moa's own bits per byte of ``docs`` (token ids) on lm-eval's rolling windows."""
    from moa.data import count_utf8_bytes

    nats = sum(rolling_nats(model, docs, tokenizer.eos_id, max_len))
    n_bytes = sum(count_utf8_bytes(tokenizer, ids) for ids in docs)
    return nats / (math.log(2) * n_bytes)


def write_val_task(folder: Path, texts: Sequence[str]) -> Path:
    """``moa_val_bpb.yaml`` and its local ``jsonl`` documents in ``folder`` (an include path)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{VAL_TASK}.jsonl"
    with open(data, "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    task = {
        "task": VAL_TASK, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "output_type": "loglikelihood_rolling", "test_split": "test", "doc_to_text": "", "doc_to_target": "text",
        "metric_list": [{"metric": m} for m in ("bits_per_byte", "byte_perplexity", "word_perplexity")],
        "metadata": {"version": 1.0},
    }
    path = folder / f"{VAL_TASK}.yaml"
    path.write_text(json.dumps(task, indent=2) + "\n")  # JSON is YAML
    return path


def model_dir_and_run_config(path, workdir: Path, dtype: str = "float32"):
    """(transformers directory, run config or None) for a run directory or an HF directory."""
    from moa.config import config_from_dict
    from moa.hf.export import RUN_CONFIG, export_run
    from moa.train.records import CONFIG, read_json

    path = Path(path)
    if (path / CONFIG).exists() and ((path / "checkpoint.pt").exists() or (path / "model.pt").exists()):
        out = export_run(path, workdir / "model", dtype)
        return out, config_from_dict(read_json(path / CONFIG))
    if (path / "config.json").exists():
        run_cfg = config_from_dict(read_json(path / RUN_CONFIG)) if (path / RUN_CONFIG).exists() else None
        return path, run_cfg
    raise FileNotFoundError(f"{path} is neither a moa run directory nor a transformers model directory")


def run_lm_eval(path, tasks: Sequence[str], limit: Optional[float] = None, include_path: Optional[str] = None,
                batch_size: int = 8, device: str = "cpu", dtype: str = "float32", online: bool = False,
                workdir: Optional[Path] = None) -> dict:
    """lm-eval's ``simple_evaluate`` on a run (exported on the fly) or a transformers directory.

    Offline unless ``online`` (sets the HF offline variables before lm-eval is imported).
    ``moa_val_bpb`` is written into a temporary include path from the run's config.
    """
    if not online:
        os.environ.update(OFFLINE_ENV)
    _require_lm_eval()
    import moa.hf  # noqa: F401  (registers the moa architectures: no trust_remote_code needed)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks = [t for t in tasks if t]
    if not tasks:
        raise ValueError("--tasks is empty; give e.g. --tasks moa_val_bpb")
    with tempfile.TemporaryDirectory(prefix="moa-eval-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        model_dir, run_cfg = model_dir_and_run_config(path, work, dtype)
        include = [include_path] if include_path else []
        if VAL_TASK in tasks:
            if run_cfg is None:
                raise ValueError(f"{VAL_TASK} needs a moa run (RUN_DIR or a directory written by moa export); "
                                 f"{path} has no moa config")
            docs, tok = val_documents(run_cfg)
            include.append(str(write_val_task(work / "tasks", [tok.decode(d) for d in docs]).parent))
        manager = TaskManager(include_path=include or None, include_defaults=False)
        if not all(t in manager.all_tasks for t in tasks):
            manager = TaskManager(include_path=include or None, include_defaults=True)
        unknown = [t for t in tasks if t not in manager.all_tasks]
        if unknown:
            raise ValueError(f"unknown lm-eval task(s) {unknown}; built in: {VAL_TASK}; others come from "
                             "lm-eval's registry or --include-path")
        model_args = {"pretrained": str(model_dir), "dtype": dtype}
        if dtype in ("bfloat16", "float16"):  # log-probs summed over a window need more than 8 bits of mantissa
            model_args["softmax_dtype"] = "float32"
        results = simple_evaluate(model="hf", model_args=model_args,
                                  tasks=list(tasks), task_manager=manager, limit=limit, batch_size=batch_size,
                                  device=device)
    return results
