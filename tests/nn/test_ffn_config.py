"""FFNConfig validation, width rule and presets."""

import pytest

from moa.nn import FFN_PRESETS, FFNConfig, build_ffn, ffn_config

PRESETS = ["relu", "gelu", "relu2", "silu", "swiglu", "geglu", "reglu", "la-mlp", "la-glu", "moa-mlp", "moa-glu"]


def test_presets_exist_and_build():
    assert list(FFN_PRESETS) == PRESETS
    assert ffn_config("swiglu").kind == "glu" and ffn_config("swiglu").activations == ("silu",)
    assert ffn_config("moa-mlp").mixing == "moa" and ffn_config("moa-mlp").kind == "mlp"
    assert ffn_config("la-glu", gate_groups=2).gate_groups == 2


@pytest.mark.parametrize("d, mlp, glu", [(32, 128, 96), (64, 256, 192), (128, 512, 352), (768, 3072, 2048)])
def test_width_rule(d, mlp, glu):
    assert ffn_config("relu").resolve_hidden_dim(d) == mlp
    assert ffn_config("swiglu").resolve_hidden_dim(d) == glu
    assert ffn_config("swiglu").resolve_hidden_dim(d) % 32 == 0


def one_line_error(fn, *needles):
    with pytest.raises(ValueError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_clear_errors():
    one_line_error(lambda: FFNConfig(activations=("relu", "nope"), mixing="la"), "nope", "gelu", "relu2")
    one_line_error(lambda: FFNConfig(mixing="fixed", activations=("relu", "gelu")), "exactly one", "2")
    one_line_error(lambda: FFNConfig(mixing="la", activations=()), "empty")
    one_line_error(lambda: FFNConfig(hidden_dim=0), "hidden_dim=0")
    one_line_error(lambda: FFNConfig(hidden_dim=-8), "hidden_dim=-8")
    one_line_error(lambda: FFNConfig(mixing="moa", activations=("relu", "gelu"), gate_groups=0), "gate_groups=0")
    one_line_error(lambda: FFNConfig(mixing="moa", activations=("relu", "gelu"), hidden_dim=100, gate_groups=3),
                   "100", "gate_groups=3")
    one_line_error(lambda: build_ffn(ffn_config("moa-glu", gate_groups=5), 32), "96", "gate_groups=5")
    one_line_error(lambda: build_ffn(ffn_config("relu"), 0), "d_model=0")
    one_line_error(lambda: FFNConfig(kind="mix"), "kind='mix'", "mlp", "glu")
    one_line_error(lambda: FFNConfig(mixing="soft"), "mixing='soft'", "fixed", "la", "moa")
    one_line_error(lambda: ffn_config("moa-glu", gate_norm="relu"), "gate_norm='relu'", "softmax", "sigmoid", "none")
    one_line_error(lambda: ffn_config("moa-glu", temperature=0.0), "temperature=0.0")
    one_line_error(lambda: ffn_config("la-glu", la_granularity="token"), "la_granularity='token'", "layer", "channel")
    one_line_error(lambda: ffn_config("la-glu", init="tanh"), "init='tanh'", "uniform", "relu2")
    one_line_error(lambda: ffn_config("swishglu"), "swishglu", "moa-glu")
    one_line_error(lambda: ffn_config("swiglu", width=3), "width", "hidden_dim")
    one_line_error(lambda: FFNConfig(mixing="la", activations=("relu", "relu")), "duplicates")
    one_line_error(lambda: FFNConfig(mixing="la", activations=None), "activations=None", "relu2")
    one_line_error(lambda: FFNConfig(mixing="moa", activations=("relu", "gelu"), gate_groups=True), "gate_groups=True")
    for gap in ("a", float("inf"), 0.0):
        one_line_error(lambda: ffn_config("moa-glu", init_logit_gap=gap), f"init_logit_gap={gap!r}", "finite")
