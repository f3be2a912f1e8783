"""Shared fixtures: tiny models of each family and the offline data root."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from slimbench.data import DatasetInfo
from slimbench.models import build_model

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SLIMBENCH_DATA_ROOT", REPO.parent / "shared" / "data"))

IMAGE_INFO = DatasetInfo("tiny", "image_classification", "accuracy", 10, 1, 8, (0.5,), (0.5,))
TEXT_INFO = DatasetInfo("tiny", "text_classification", "accuracy", 2)
LM_INFO = DatasetInfo("tiny", "language_modeling", "perplexity")


def load_file_module(relative: str) -> ModuleType:
    """A script or benchmark of the repository (not a package), imported from its file, with its folder on the path
    while it loads, as when it runs as a script (benchmarks import gpu_time beside them)."""
    spec = importlib.util.spec_from_file_location(Path(relative).stem, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str((REPO / relative).parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str((REPO / relative).parent))
    return module


TINY_VIT = {"family": "timm", "arch": "vit_tiny_patch16_224", "patch_size": 4, "embed_dim": 32, "depth": 2,
            "num_heads": 2}
TINY_BERT = {"family": "hf_classifier", "config": {
    "model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64, "max_position_embeddings": 64, "num_labels": 2}}
TINY_LLAMA = {"family": "hf_causal_lm", "config": {
    "model_type": "llama", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64}}


def needs_shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"offline data {path} not present (set SLIMBENCH_DATA_ROOT)")
    return SHARED_DATA


@pytest.fixture
def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY_VIT, IMAGE_INFO, pretrained=False, download=False).eval()


@pytest.fixture
def tiny_bert() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY_BERT, TEXT_INFO, pretrained=False, download=False).eval()


@pytest.fixture
def tiny_llama() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY_LLAMA, LM_INFO, pretrained=False, download=False).eval()
