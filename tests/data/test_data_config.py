"""DataConfig validation: every bad value gives a one-line ValueError naming it."""

from __future__ import annotations

import dataclasses
import math

import pytest

from moa.data import DataConfig, DataError, parse_source, parse_tokenizer


@pytest.mark.parametrize("field, value", [
    ("source", "nope:x"),
    ("source", ""),
    ("source", "text:"),
    ("source", "stdlib:extra"),
    ("source", "tokens:shards/*.bin@int8"),
    ("tokenizer", "bpe:100"),
    ("tokenizer", "bpe:lots"),
    ("tokenizer", "wordpiece"),
    ("tokenizer", "hf:"),
    ("text_field", ""),
    ("val_fraction", 0.0),
    ("val_fraction", 1.0),
    ("val_fraction", -0.1),
    ("val_fraction", math.nan),
    ("val_fraction", True),
    ("val_fraction", "0.1"),
    ("cache_dir", ""),
    ("max_chars", 0),
    ("max_chars", -5),
    ("max_chars", 1.5),
])
def test_bad_value_is_a_one_line_error_naming_it(field, value):
    with pytest.raises(ValueError) as info:
        DataConfig(**{field: value})
    message = str(info.value)
    assert "\n" not in message
    assert repr(value) in message
    assert isinstance(info.value, DataError)


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid schemes: stdlib, text:PATH, jsonl:PATH, parquet:PATH, prepared:DIR, tokens:GLOB"):
        DataConfig(source="s3:bucket/key")


def test_cross_field_errors_name_the_value():
    with pytest.raises(ValueError, match="'bpe:512'"):
        DataConfig(source="tokens:x/*.bin", tokenizer="bpe:512")
    with pytest.raises(ValueError, match="max_chars=1000"):
        DataConfig(source="tokens:x/*.bin", max_chars=1000)


def test_keyword_only_frozen_and_defaults():
    config = DataConfig()
    assert (config.source, config.tokenizer, config.val_fraction) == ("stdlib", "bytes", 0.05)
    with pytest.raises(TypeError):
        DataConfig("stdlib")  # keyword-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.source = "text:x"  # frozen
    assert config.replace(tokenizer="bpe:512").tokenizer_spec.vocab == 512


def test_spec_parsing():
    assert parse_source("tokens:data/*.bin@uint32") == ("tokens", "data/*.bin", "uint32")
    assert parse_source("tokens:data/*.bin") == ("tokens", "data/*.bin", None)
    # "@" inside a path is not a dtype suffix.
    assert parse_source("tokens:/home/me@host/shard.bin") == ("tokens", "/home/me@host/shard.bin", None)
    assert parse_source("hf:roneneldan/TinyStories") == ("hf", "roneneldan/TinyStories", None)
    assert parse_source("text:C:/corpus") == ("text", "C:/corpus", None)
    assert parse_tokenizer("bpe:8192") == ("bpe", 8192, "")
    assert parse_tokenizer("hf:~/tok/tokenizer.json") == ("hf", None, "~/tok/tokenizer.json")
