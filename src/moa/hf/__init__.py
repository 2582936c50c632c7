"""Hugging Face interoperability (docs/DESIGN.md §11).

* :func:`export_run` — a moa run directory → a ``transformers`` model directory
  (``LlamaForCausalLM`` for dense fixed-σ GLU runs, else ``MoaForCausalLM`` with its
  ``trust_remote_code`` files), tokenizer and generation config (:mod:`moa.hf.export`).
* :func:`upcycle` — a pretrained Llama/Mistral/Qwen2 model's MLPs → LA/MoA MLPs computing
  exactly the same function, trainable from the first step (:mod:`moa.hf.upcycle`).
* :func:`import_hf_model` — a local Llama/Mistral checkpoint → moa's ``Transformer``
  (``moa train --init-from``; :mod:`moa.hf.importer`).
* :mod:`moa.hf.lm_eval` — lm-evaluation-harness on a run or an export (``moa eval``).

Importing this package registers the moa architectures (``moa_llama``, ``moa_mistral``,
``moa_qwen2``) with ``AutoConfig`` and ``AutoModelForCausalLM``, so exports load without
``trust_remote_code``. Needs the ``hf`` extra: ``pip install -e ".[hf]"``.
"""

try:
    import transformers  # noqa: F401
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError('moa.hf needs transformers and safetensors: pip install -e ".[hf]"') from None

from transformers import AutoConfig, AutoModelForCausalLM

from moa.hf.configuration_moa import MoaConfig, MoaMistralConfig, MoaQwen2Config
from moa.hf.modeling_moa import MoaForCausalLM, MoaMistralForCausalLM, MoaMLP, MoaQwen2ForCausalLM, MoaSparseMoE

ARCHITECTURES = ((MoaConfig, MoaForCausalLM), (MoaMistralConfig, MoaMistralForCausalLM),
                 (MoaQwen2Config, MoaQwen2ForCausalLM))


def _register() -> None:
    for config_cls, model_cls in ARCHITECTURES:
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)


_register()

from moa.hf.export import export_model, export_run, hf_config, hf_state_dict  # noqa: E402
from moa.hf.importer import import_hf_model  # noqa: E402
from moa.hf.tokenizer import to_hf_tokenizer  # noqa: E402
from moa.hf.upcycle import upcycle  # noqa: E402

__all__ = [
    "MoaConfig", "MoaMistralConfig", "MoaQwen2Config", "MoaForCausalLM", "MoaMistralForCausalLM",
    "MoaQwen2ForCausalLM", "MoaMLP", "MoaSparseMoE",
    "export_run", "export_model", "hf_config", "hf_state_dict", "import_hf_model", "to_hf_tokenizer", "upcycle",
]
