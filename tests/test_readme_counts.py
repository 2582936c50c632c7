"""The parameter counts README.md states for the presets, recomputed from the models."""

import functools
import re
from pathlib import Path

import pytest

from moa.nn import ffn_cost, moe_cost
from moa.presets import get_preset
from moa.train.runs import describe

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@functools.lru_cache(maxsize=None)
def _counts(name):
    return describe(get_preset(name))


def test_debug_preset_size_as_stated():
    (stated,) = re.findall(r"`debug` \((\d+)k parameters\)", README)
    assert round(_counts("debug")["total"] / 1000) == int(stated)


def _gpu_names():
    return sorted(set(re.findall(r"`(gpu-\d+(?:\.\d+)?[mb])`", README)))


def test_gpu_preset_names_state_their_size():
    """`gpu-125m` … `gpu-2b`: the paper's sizes; ours within 15% (a different vocabulary)."""
    assert {"gpu-125m", "gpu-2b"} <= set(_gpu_names())
    for name in _gpu_names():
        number, unit = re.fullmatch(r"gpu-(\d+(?:\.\d+)?)([mb])", name).groups()
        stated = float(number) * (1e6 if unit == "m" else 1e9)
        assert _counts(name)["total"] == pytest.approx(stated, rel=0.15), name


def _moe_presets_stated_to_match():
    (sentence,) = [s for s in re.split(r"(?<=\.)\s", README.replace("\n", " "))
                   if "match their dense presets' active parameters" in s]
    names = re.findall(r"`([\w.-]+-moe)`", sentence)
    assert len(names) >= 5, sentence
    return names


def _moe_active(name):
    """Active parameters of an MoE preset: its dense preset with each FFN's parameters
    replaced by the MoE layer's active ones (building the big models would take seconds)."""
    m = get_preset(name).model
    ffn = m.ffn_config()
    per_layer = moe_cost(m.moe, ffn, m.d_model).params_active - ffn_cost(ffn, m.d_model).params
    return _counts(name[:-len("-moe")])["total"] + m.n_layers * per_layer


def test_moe_active_arithmetic_equals_the_built_model():
    assert _moe_active("debug-moe") == _counts("debug-moe")["active"]


@pytest.mark.parametrize("name", _moe_presets_stated_to_match())
def test_moe_presets_match_dense_active_parameters(name):
    """Active experts' widths add up to the dense FFN width exactly; active parameters
    match the dense preset's up to the router and the extra experts' gates (< 2%)."""
    moe_cfg, dense_cfg = get_preset(name).model, get_preset(name[:-len("-moe")]).model
    moe = moe_cfg.moe
    dense_hidden = dense_cfg.ffn_config().resolve_hidden_dim(dense_cfg.d_model)
    assert (moe.top_k + moe.shared_experts) * moe.expert_hidden == dense_hidden
    active, dense = _moe_active(name), _counts(name[:-len("-moe")])["total"]
    assert active == pytest.approx(dense, rel=0.02)
    assert active > dense  # plus the router
