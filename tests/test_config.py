"""Run config: dotted overrides, types, unknown keys, round trip through JSON."""

import json
import re

import pytest

from moa.config import RunConfig, apply_overrides, config_from_dict, diff_configs, dumps, parse_overrides, valid_keys


def test_overrides_typed():
    cfg = apply_overrides(RunConfig(), ["model.ffn=swiglu", "train.tokens=2M", "optim.lr=1e-3", "seed=3",
                                        "model.n_kv_heads=2", "model.tie_embeddings=false", "train.micro_batch_size=none"])
    assert (cfg.model.ffn, cfg.train.tokens, cfg.optim.lr, cfg.seed) == ("swiglu", 2_000_000, 1e-3, 3)
    assert cfg.model.n_kv_heads == 2 and cfg.model.tie_embeddings is False and cfg.train.micro_batch_size is None
    assert parse_overrides(["train.tokens=1_500k"])["train.tokens"] == 1_500_000
    # exact decimal arithmetic: no float rounding rejects a whole count
    for text, value in [("2.01k", 2010), ("7M", 7_000_000), ("1e3", 1000), ("2.5G", 2_500_000_000), ("65536", 65536)]:
        assert parse_overrides([f"train.tokens={text}"])["train.tokens"] == value, text


@pytest.mark.parametrize("pair, needle", [
    ("model.fnn=swiglu", "did you mean 'model.ffn'"),
    ("trian.tokens=5", "did you mean 'train.tokens'"),
    ("train.tokens=1.5", "not a valid int"),
    ("model.tie_embeddings=maybe", "not a valid bool (true/false, yes/no, on/off, 1/0)"),
    ("optim.lr=fast", "not a valid float"),
    ("train.tokens=infk", "not a valid int"),  # was an OverflowError traceback
    ("train.tokens=nan", "not a valid int"),
])
def test_override_errors(pair, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        parse_overrides([pair])


def test_required_keys_exist():
    keys = set(valid_keys())
    for k in ["model.ffn", "model.d_model", "model.n_layers", "train.tokens", "train.batch_size", "train.seq_len",
              "train.eval_every", "train.ckpt_every", "optim.name", "optim.lr", "schedule.name", "data.source",
              "data.tokenizer", "seed"]:
        assert k in keys


def test_json_round_trip_and_diff():
    cfg = apply_overrides(RunConfig(), ["model.ffn=relu", "optim.name=muon"])
    back = config_from_dict(json.loads(dumps(cfg)))
    assert back == cfg
    assert diff_configs(RunConfig(), cfg) == ["model.ffn: 'moa-glu' → 'relu'", "optim.name: 'adamw' → 'muon'"]
    broken = json.loads(dumps(cfg))
    broken["model"]["moe"] = None  # a hand-edited config.json: a one-line error, not an AttributeError
    with pytest.raises(ValueError, match="config section MoEConfig is NoneType None, not an object"):
        config_from_dict(broken)


@pytest.mark.parametrize("pair", ["model.rope_theta=0", "model.norm_eps=-1", "model.init_std=-0.02",
                                  "model.rope_theta=inf", "optim.lr=inf", "optim.lr=nan"])
def test_values_that_would_fail_late_are_refused_up_front(pair):
    key, value = pair.split("=")
    with pytest.raises(ValueError, match=f"{key.split('.')[-1]}=") as exc:
        apply_overrides(RunConfig(), [pair])
    assert "\n" not in str(exc.value) and value in str(exc.value)


def test_validation_errors():
    with pytest.raises(ValueError, match="micro_batch_size=3"):
        apply_overrides(RunConfig(), ["train.batch_size=32", "train.micro_batch_size=3"])
    with pytest.raises(ValueError, match="less than one step"):
        apply_overrides(RunConfig(), ["train.tokens=100"])
    with pytest.raises(ValueError, match="seq_len=4096 exceeds"):
        apply_overrides(RunConfig(), ["train.seq_len=4096", "train.tokens=100M"])


def test_model_activations_replaces_the_dictionary():
    from moa.model import Transformer
    from moa.presets import get_preset

    cfg = apply_overrides(get_preset("debug"), ["model.ffn=moa-glu", "model.activations=relu, gelu,tanh",
                                                "model.vocab_size=256"])
    assert cfg.model.ffn_config().activations == ("relu", "gelu", "tanh")
    assert cfg.model.activations == "relu,gelu,tanh"  # one spelling, so equal dictionaries give equal configs
    assert cfg == apply_overrides(get_preset("debug"), ["model.ffn=moa-glu", "model.activations=relu,gelu,tanh",
                                                        "model.vocab_size=256"])
    model = Transformer(cfg.model)
    assert model.blocks[0].ffn.config.activations == ("relu", "gelu", "tanh")
    assert model.blocks[0].ffn.gate.out_features == 3
    swiglu = apply_overrides(get_preset("debug"), ["model.ffn=swiglu", "model.activations=gelu"])
    assert swiglu.model.ffn_config().activations == ("gelu",)
    for ffn, bad, needle in [("moa-glu", "relu,nope", "unknown activation 'nope'"),
                             ("swiglu", "relu,gelu", "exactly one activation"),
                             ("la-glu", "relu,relu", "duplicates")]:
        with pytest.raises(ValueError, match=needle) as e:
            apply_overrides(get_preset("debug"), [f"model.ffn={ffn}", f"model.activations={bad}"])
        assert str(e.value).startswith(f"model.activations={bad!r}") and "\n" not in str(e.value)
