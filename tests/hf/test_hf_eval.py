"""``moa eval`` / lm-evaluation-harness: bits per byte of ``moa_val_bpb`` computed by lm-eval
on the exported model equals moa's own computation on the same windows (≤ 1e-6 relative)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moa.cli import main
from moa.data import ByteTokenizer, DataConfig, HFTokenizer
from moa.data.tokenizer import train_bpe
from moa.hf.lm_eval import VAL_TASK, moa_bits_per_byte, rolling_windows, run_lm_eval, val_documents

from conftest import tiny_model, write_run

SEQ = 32


def test_rolling_windows_match_lm_eval():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    for n in (1, 5, 31, 32, 33, 64, 100):
        ids = list(range(1000, 1000 + n))
        x = [7] + ids
        theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(ids, 7, SEQ, 1)]
        ours = rolling_windows(n, SEQ)
        assert len(ours) == len(theirs)
        for (s, e, k), (context, continuation) in zip(ours, theirs):
            full = (context + continuation)[-(SEQ + 1):]
            assert x[s:e] == full[:-1] and x[e - k + 1:e + 1] == continuation


def _run(tmp_path, corpus, tokenizer, ffn="moa-glu"):
    data = DataConfig(source=f"text:{corpus}", tokenizer="bytes", val_fraction=0.3)
    if tokenizer.spec != "bytes":
        data = data.replace(tokenizer=f"hf:{tmp_path / 'tok.json'}")
        tokenizer.backend.save(str(tmp_path / "tok.json"))
    model = tiny_model(ffn=ffn, vocab_size=tokenizer.vocab_size)
    return model, write_run(tmp_path / "run", model, tokenizer, data=data, seq_len=SEQ, eval_tokens=8000)


def test_lm_eval_bits_per_byte_equals_moa(tmp_path, corpus):
    model, run = _run(tmp_path, corpus, ByteTokenizer())
    results = run_lm_eval(run, [VAL_TASK], batch_size=16)
    theirs = results["results"][VAL_TASK]["bits_per_byte,none"]
    from moa.config import config_from_dict
    from moa.train.records import read_json

    cfg = config_from_dict(read_json(run / "config.json"))
    docs, tok = val_documents(cfg)
    assert len(docs) == results["n-samples"][VAL_TASK]["effective"] >= 2
    # whole documents only: the split may begin mid-document, so they start after its first EOS
    from moa.data import prepare_data

    val = np.asarray(prepare_data(cfg.data).val_tokens)
    eos = np.flatnonzero(val == tok.eos_id)
    assert eos[0] > 0 and np.array_equal(docs[0], val[eos[0] + 1:eos[1]])
    ours = moa_bits_per_byte(model, docs, tok, SEQ)
    assert abs(theirs - ours) <= 1e-6 * ours
    assert 6.0 < ours < 9.0  # an untrained byte model: about log2(256) = 8 bits per byte

    # bf16 weights: the log-probs are still taken and summed in fp32 (softmax_dtype), so the
    # bits per byte stay within bf16's rounding of the logits, not of 2000-nat window sums
    low = run_lm_eval(run, [VAL_TASK], batch_size=16, dtype="bfloat16")
    assert "softmax_dtype" not in str(results["config"]["model_args"])
    assert "'softmax_dtype': 'float32'" in str(low["config"]["model_args"])
    bf16 = low["results"][VAL_TASK]["bits_per_byte,none"]
    assert bf16 != theirs and abs(bf16 - theirs) <= 1e-3 * theirs


@pytest.mark.slow
def test_moa_eval_cli_bpe_run_and_include_path(tmp_path, corpus):
    """``moa eval`` on a BPE run with a task from --include-path, results.json written."""
    texts = [p.read_text() for p in sorted(corpus.iterdir())]
    tok = HFTokenizer(train_bpe(texts, 400), "bpe:400", vocab_size=400)
    model, run = _run(tmp_path, corpus, tok, ffn="la-mlp")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "docs.jsonl").write_text("".join(json.dumps({"text": t[:300]}) + "\n" for t in texts[:3]))
    (tasks / "local.yaml").write_text(json.dumps({
        "task": "local_ppl", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(tasks / "docs.jsonl")}},
        "output_type": "loglikelihood_rolling", "test_split": "test", "doc_to_text": "", "doc_to_target": "text",
        "metric_list": [{"metric": "bits_per_byte"}]}))
    out = tmp_path / "out"
    assert main(["eval", str(run), "--tasks", f"{VAL_TASK},local_ppl", "--include-path", str(tasks),
                 "--out", str(out), "--limit", "2"]) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    from moa.config import config_from_dict
    from moa.train.records import read_json

    docs, moa_tok = val_documents(config_from_dict(read_json(run / "config.json")))
    ours = moa_bits_per_byte(model, docs[:2], moa_tok, SEQ)
    assert abs(results[VAL_TASK]["bits_per_byte,none"] - ours) <= 1e-6 * ours
    # the --include-path task scores its own documents (the first 2 under --limit), as moa would
    local = [np.asarray(moa_tok.encode(t[:300])) for t in texts[:2]]
    ours_local = moa_bits_per_byte(model, local, moa_tok, SEQ)
    assert abs(results["local_ppl"]["bits_per_byte,none"] - ours_local) <= 1e-6 * ours_local
    assert abs(ours_local - ours) > 1e-3 * ours  # other documents, another number
    assert main(["eval", str(run), "--tasks", "no_such_task"]) == 2


def test_moa_eval_needs_a_run_for_val_bpb(tmp_path, llama_dir, capsys):
    assert main(["eval", str(llama_dir), "--tasks", VAL_TASK]) == 2
    assert "needs a moa run" in capsys.readouterr().err


def test_eval_sets_offline_variables(tmp_path, corpus, monkeypatch):
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    assert main(["eval", str(tmp_path / "missing"), "--tasks", VAL_TASK]) == 2
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
