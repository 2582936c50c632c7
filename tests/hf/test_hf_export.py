"""moa → transformers export: logits parity for every FFN preset, the pitfalls the export
pins (RoPE θ spellings, eps, tokenizer class, context length, tied weights), negative
controls, loading without moa installed, tokenizer ids, and ``moa export`` on a trained
run with greedy ``generate()`` (KV cache) equal to ``moa sample --temperature 0``."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

import moa.hf
from moa.cli import main
from moa.data import ByteTokenizer, HFTokenizer
from moa.data.tokenizer import train_bpe
from moa.hf.export import REMOTE_FILES, export_model
from moa.hf.tokenizer import to_hf_tokenizer
from moa.nn import FFN_PRESETS, MoEConfig

from conftest import tiny_model

TOL = 1e-5
SEQ = 32
# one architecture variant per preset, cycling through GQA/MHA, tied/untied, θ and eps
VARIANTS = [
    dict(n_kv_heads=2, tie_embeddings=True, rope_theta=500.0, norm_eps=1e-6),
    dict(n_kv_heads=None, tie_embeddings=False, rope_theta=10000.0, norm_eps=1e-3),
    dict(n_kv_heads=1, tie_embeddings=False, rope_theta=2500.0, norm_eps=1e-5),
]
CASES = [(ffn, VARIANTS[i % len(VARIANTS)]) for i, ffn in enumerate(FFN_PRESETS)] + [
    ("moa-glu", dict(gate_groups=2, gate_norm="sigmoid", gate_temperature=0.5)),
    ("la-glu", dict(la_granularity="channel", n_kv_heads=2)),
    ("moa-glu", dict(moe=MoEConfig(num_experts=4, top_k=2, expert_hidden=32, shared_experts=1, balance="bias"))),
    ("swiglu", dict(moe=MoEConfig(num_experts=3, top_k=1, expert_hidden=32, renormalize=False))),
    # the RMS-scaled dictionary (σ_k / its Gaussian RMS) and a dictionary other than the preset's
    ("moa-glu", dict(dictionary_scale="rms", activations="relu,relu2,tanh")),
    ("la-mlp", dict(dictionary_scale="rms", la_granularity="channel")),
]
TOKENS = torch.randint(0, 256, (2, SEQ), generator=torch.Generator().manual_seed(1))


def max_diff(model, hf) -> float:
    with torch.no_grad():
        return (model(TOKENS) - hf(TOKENS).logits).abs().max().item()


def export(model, path, tokenizer=ByteTokenizer()):
    return export_model(model, tokenizer, SEQ, path)


@pytest.mark.parametrize("ffn,changes", CASES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(CASES)])
def test_logits_equal_moa_for_every_preset(tmp_path, ffn, changes):
    model = tiny_model(ffn=ffn, **changes)
    out = export(model, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    plain = ffn in ("swiglu", "geglu", "reglu") and "moe" not in changes
    assert type(hf).__name__ == ("LlamaForCausalLM" if plain else "MoaForCausalLM")
    assert (out / "modeling_moa.py").exists() != plain
    assert max_diff(model, hf) <= TOL


def test_export_pins_the_pitfalls(tmp_path):
    """Both RoPE spellings, PreTrainedTokenizerFast, context = train.seq_len, tied weights once."""
    model = tiny_model(ffn="la-glu", rope_theta=777.0, norm_eps=1e-4, tie_embeddings=True)
    out = export(model, tmp_path / "tied")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_theta"] == 777.0 and cfg["rope_parameters"]["rope_theta"] == 777.0
    assert cfg["rms_norm_eps"] == 1e-4 and cfg["max_position_embeddings"] == SEQ and cfg["tie_word_embeddings"]
    assert cfg["auto_map"] == {"AutoConfig": "configuration_moa.MoaConfig",
                               "AutoModelForCausalLM": "modeling_moa.MoaForCausalLM"}
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and tok_cfg["model_max_length"] == SEQ
    assert AutoTokenizer.from_pretrained(out).model_max_length == SEQ
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 255
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys() and "model.embed_tokens.weight" in f.keys()
    untied = export(tiny_model(ffn="la-glu", tie_embeddings=False), tmp_path / "untied")
    with safe_open(str(untied / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" in f.keys()
    bf16 = export_model(model, ByteTokenizer(), SEQ, tmp_path / "bf16", dtype="bfloat16")
    assert AutoModelForCausalLM.from_pretrained(bf16).dtype == torch.bfloat16


@pytest.mark.parametrize("key,wrong", [("rope_theta", 10000.0), ("rms_norm_eps", 1e-6)])
def test_negative_control_wrong_theta_or_eps_breaks_parity(tmp_path, key, wrong):
    """The parity check detects a wrong RoPE θ or norm eps (so it would catch the 4.57 θ fallback)."""
    model = tiny_model(ffn="swiglu", rope_theta=200.0, norm_eps=1e-2)
    out = export(model, tmp_path / "hf")
    assert max_diff(model, AutoModelForCausalLM.from_pretrained(out)) <= TOL
    cfg = json.loads((out / "config.json").read_text())
    cfg[key] = wrong
    if key == "rope_theta":
        cfg["rope_parameters"]["rope_theta"] = wrong
    (out / "config.json").write_text(json.dumps(cfg))
    assert max_diff(model, AutoModelForCausalLM.from_pretrained(out)) > 10 * TOL  # the parity check fails


def test_remote_code_imports_only_torch_and_transformers():
    for name in REMOTE_FILES:
        tree = ast.parse((moa.hf.export.Path(moa.hf.__file__).parent / name).read_text())
        tops = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        tops |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert tops <= {"torch", "transformers"}, (name, tops)


def test_loads_without_moa_installed(tmp_path):
    """A fresh interpreter where ``import moa`` fails loads, with trust_remote_code, an MoE
    export and an upcycled Mistral (``moa upcycle``), each equal to its reference logits."""
    from transformers import MistralConfig, MistralForCausalLM

    model = tiny_model(ffn="moa-mlp", moe=MoEConfig(num_experts=3, top_k=2, expert_hidden=32, shared_experts=1))
    out = export(model, tmp_path / "hf")
    torch.manual_seed(0)
    mistral = MistralForCausalLM(MistralConfig(vocab_size=256, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               rope_theta=321.0)).eval()
    mistral.save_pretrained(str(tmp_path / "mistral"))
    assert main(["upcycle", str(tmp_path / "mistral"), "--ffn", "la-glu", "--out", str(tmp_path / "up")]) == 0
    with torch.no_grad():
        torch.save({"x": TOKENS, "logits": model(TOKENS)}, tmp_path / "ref.pt")
        torch.save({"x": TOKENS, "logits": mistral(TOKENS).logits}, tmp_path / "ref_up.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["moa"] = None  # moa is not importable in this process
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        try:
            import moa
            raise SystemExit("moa is importable")
        except ImportError:
            pass
        m = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
        t = AutoTokenizer.from_pretrained({str(out)!r})
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        up = AutoModelForCausalLM.from_pretrained({str(tmp_path / "up")!r}, trust_remote_code=True).eval()
        ref_up = torch.load({str(tmp_path / "ref_up.pt")!r})
        with torch.no_grad():
            diff = (m(ref["x"]).logits - ref["logits"]).abs().max().item()
            same = torch.equal(up(ref_up["x"]).logits, ref_up["logits"])
        print(type(m).__name__, diff, t.encode("déf") == list("déf".encode()), type(up).__name__, same)
    """)
    env = {**__import__("os").environ, "HF_HOME": str(tmp_path / "hf-home")}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    name, diff, ids_ok, up_name, up_same = res.stdout.split()[-5:]
    assert name == "MoaForCausalLM" and float(diff) <= TOL and ids_ok == "True"
    assert up_name == "MoaMistralForCausalLM" and up_same == "True"


TEXTS = ["def f(x):\n    return x  # ok\n\n", "héllo wörld ÿ 😀 ", "a <|endoftext|> b", "\t\n  spaces   end"]


def test_byte_tokenizer_ids_are_utf8_bytes():
    hf = to_hf_tokenizer(ByteTokenizer(), SEQ)
    assert hf.eos_token_id == ByteTokenizer.eos_id == 255 and hf.bos_token_id is None
    for text in TEXTS:
        assert hf.encode(text) == ByteTokenizer().encode(text) == list(text.encode("utf-8"))
        assert hf.decode(hf.encode(text)) == text


def test_bpe_tokenizer_ids_equal_moa(tmp_path):
    docs = [(moa.hf.export.Path(__file__).parent / "conftest.py").read_text()] * 3 + TEXTS
    tok = HFTokenizer(train_bpe(docs, 320), "bpe:320", vocab_size=320)
    hf = to_hf_tokenizer(tok, SEQ)
    hf.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert loaded.eos_token_id == tok.eos_id == 0
    for text in TEXTS + docs[:1]:
        assert loaded.encode(text) == tok.encode(text)


def test_a_local_tokenizer_that_adds_bos_is_exported_without_it(tmp_path):
    """Llama-style tokenizer.json files add BOS in their post-processor; moa encodes without
    special tokens, so the exported tokenizer must give moa's ids under AutoTokenizer's
    default add_special_tokens=True (which lm-eval uses)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from moa.data.tokenizer import load_hf_tokenizer

    vocab = {"<s>": 0, "</s>": 1, **{chr(c): i + 2 for i, c in enumerate(range(32, 127))}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    backend.add_special_tokens(["<s>", "</s>"])
    backend.save(str(tmp_path / "tokenizer.json"))
    tok = load_hf_tokenizer(str(tmp_path / "tokenizer.json"), "hf:tok")
    assert backend.encode("abc").ids[0] == 0 and tok.encode("abc") == [vocab[c] for c in "abc"]
    to_hf_tokenizer(tok, SEQ).save_pretrained(str(tmp_path / "out"))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    for text in ("abc", "x = 1 + 2", "hello world"):
        assert loaded.encode(text) == loaded(text).input_ids == tok.encode(text)
    # the run's own tokenizer object (the one exported) is left as it was
    assert tok.backend.post_processor is not None and tok.backend.encode("abc").ids[0] == 0


def test_moa_export_cli_and_greedy_generate_equals_moa_sample(tmp_path, corpus):
    """A real (tiny) trained BPE run: ``moa export``, then HF greedy generate with a KV
    cache gives the same tokens as ``moa sample --temperature 0``."""
    run = tmp_path / "run"
    args = ["train", "--preset", "debug", "--out", str(run), "--no-progress", f"data.source=text:{corpus}",
            "data.tokenizer=bpe:320", "model.ffn=moa-glu", "train.batch_size=8", "train.seq_len=32",
            "train.tokens=2560", "train.eval_tokens=512", "train.log_every=5"]
    assert main(args) == 0
    out = tmp_path / "hf"
    assert main(["export", str(run), "--out", str(out)]) == 0
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    prompt, n = "def ", 12
    ids = tok(prompt, return_tensors="pt").input_ids
    gen = hf.generate(ids, max_new_tokens=n, do_sample=False, use_cache=True, eos_token_id=None, pad_token_id=0)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["sample", str(run), "--prompt", prompt, "--tokens", str(n), "--temperature", "0"]) == 0
    assert stdout.getvalue().rstrip("\n") == prompt + tok.decode(gen[0, ids.shape[1]:])
    from moa.cli.sample import generate
    from moa.train.runs import load_run

    model, moa_tok, cfg = load_run(run)
    want = generate(model, moa_tok.encode(prompt), n, 0.0, None, cfg.train.seq_len, torch.Generator())
    assert gen[0, ids.shape[1]:].tolist() == want
    assert main(["export", str(run), "--out", str(out)]) == 2  # not empty: one-line error


def test_export_of_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moa: error:") and len(err.strip().splitlines()) == 1


def test_plain_llama_needs_no_custom_code(tmp_path):
    out = export(tiny_model(ffn="geglu"), tmp_path / "hf")
    assert not any((out / n).exists() for n in REMOTE_FILES)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["hidden_act"] == "gelu" and "auto_map" not in cfg
    assert isinstance(LlamaForCausalLM.from_pretrained(out), LlamaForCausalLM)
