"""moa tokenizers as ``transformers.PreTrainedTokenizerFast`` with identical ids.

* ``bytes``: a byte-level BPE without merges whose vocabulary maps GPT-2's byte-to-unicode
  character of byte b to id b, so ``encode(text)`` is the text's UTF-8 bytes. Id 255 (byte
  0xFF, which never occurs in UTF-8, moa's end of document) is renamed ``<|endoftext|>``
  and is the EOS token.
* ``bpe:N`` / ``hf:PATH``: the run's own ``tokenizers`` JSON, wrapped.

As in moa (:mod:`moa.data.tokenizer`), special-token text inside a document is plain text
(``split_special_tokens=True``) and encoding adds no BOS/EOS. There is no BOS token, so
lm-evaluation-harness conditions the first token on the EOS, as moa's token stream does.
``tokenizer_config.json`` names ``PreTrainedTokenizerFast``, the class every
transformers ≥ 4.57 resolves (5.x would otherwise write its own new class name).
"""

from __future__ import annotations

import json
from pathlib import Path

from moa.data.tokenizer import BYTES_EOS, EOS_TEXT, ByteTokenizer

TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable unicode character map (Radford et al., 2019)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def byte_backend():
    """The ``tokenizers.Tokenizer`` whose ids are UTF-8 bytes, EOS ``<|endoftext|>`` = 255."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    vocab = {(EOS_TEXT if b == BYTES_EOS else ch): b for ch, b in vocab.items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS_TEXT, special=True, normalized=False)])
    return tok


def to_hf_tokenizer(tok, model_max_length: int):
    """A ``PreTrainedTokenizerFast`` computing the same ids as the moa tokenizer ``tok``."""
    from transformers import PreTrainedTokenizerFast

    if isinstance(tok, ByteTokenizer):
        backend, eos = byte_backend(), EOS_TEXT
    else:
        backend = tok.backend
        eos = None if tok.eos_id is None else backend.id_to_token(tok.eos_id)
    # a copy: the wrapper toggles flags on its backend, which is the run's tokenizer otherwise
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(backend.to_str())
    probe = "a b"
    if backend.encode(probe, add_special_tokens=True).ids != backend.encode(probe, add_special_tokens=False).ids:
        # a post-processor that adds BOS (Llama, Mistral files): moa never adds it, and
        # `add_bos_token=False` does not reach a fast tokenizer's post-processor
        backend.post_processor = None
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, model_max_length=model_max_length,
                                 split_special_tokens=True, clean_up_tokenization_spaces=False)
    return hf


def save_hf_tokenizer(tok, out: Path, model_max_length: int):
    """Write the tokenizer files into ``out``; returns the ``PreTrainedTokenizerFast``."""
    hf = to_hf_tokenizer(tok, model_max_length)
    hf.save_pretrained(str(out))
    path = Path(out) / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(tokenizer_class=TOKENIZER_CLASS, model_max_length=model_max_length, split_special_tokens=True,
               add_bos_token=False, add_eos_token=False)
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return hf
