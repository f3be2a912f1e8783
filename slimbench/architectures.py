"""What a model spec is made of, known without building it: the structures compression stages need.

A study's grid is enumerated at config time (by the Snakefile for every job, by ``slimbench plan``), before any
weights exist, so whether a stage applies to a model is decided from the spec alone. The table below says which
prunable structures each architecture of the built-in families has; ``tests/test_crossbench.py`` builds every
offline model of the catalog and checks each entry against :mod:`slimbench.surgery` on the real modules.

Structures:

- ``mlp_neurons``: transformer MLPs that :func:`slimbench.surgery.find_mlps` shrinks (timm ``Mlp`` fc1/fc2, BERT
  ``intermediate``/``output``, Llama's gated ``gate/up/down_proj``).
- ``attention_heads``: multi-head attention whose heads :func:`slimbench.surgery.keep_heads` removes (timm ViT
  ``Attention``, BERT self-attention, Llama attention). Swin's ``WindowAttention`` is not: it carries a per-head
  relative-position bias table that head removal would have to slice, and ``find_attentions`` skips it.
- ``linear_compute``: most of the FLOPs are in ``nn.Linear`` layers, which is what int8 (torchao) quantizes; a
  CNN's convolutions would stay in float.
- ``token_features``: final token features readable for feature distillation (timm ``forward_features``, or
  Hugging Face hidden states).

A family or architecture not listed here has unknown structures (None): a stage that needs any structure is then
reported as not known to apply, with the fix (add the architecture here).
"""

from __future__ import annotations

from typing import Any, Optional

STRUCTURES = {
    "mlp_neurons": "transformer MLP hidden neurons (slimbench.surgery.find_mlps)",
    "attention_heads": "attention heads that slimbench.surgery.keep_heads can remove; not Swin's window attention",
    "linear_compute": "compute mostly in nn.Linear layers (what int8 quantizes)",
    "token_features": "final token features for feature distillation",
}
TRANSFORMER = frozenset(STRUCTURES)
WINDOWED = TRANSFORMER - {"attention_heads"}
# timm architecture name prefixes (longest match first) -> structures.
HYBRID = TRANSFORMER - {"linear_compute"}  # MobileViT: transformer blocks, but most FLOPs in convolutions
TIMM = (("mobilevit", HYBRID), ("deit", TRANSFORMER), ("vit", TRANSFORMER), ("swin", WINDOWED),
        ("resnet", frozenset({"token_features"})))
# Hugging Face model_type -> structures (module names as slimbench.surgery spells them).
HF = {"distilbert": frozenset({"linear_compute", "token_features"}),  # q_lin/lin1: names surgery does not know
      "bert": TRANSFORMER, "roberta": TRANSFORMER, "llama": TRANSFORMER, "mistral": TRANSFORMER,
      "qwen2": TRANSFORMER}
# Hugging Face sources by name when the spec has no inline config: substring -> model_type (first match wins).
HF_SOURCES = (("distilbert", "distilbert"), ("roberta", "roberta"), ("minilm", "bert"), ("bert", "bert"),
              ("llama", "llama"), ("mistral", "mistral"), ("qwen2", "qwen2"))
FAMILIES = {"cifar_resnet": frozenset(),
            # UPerNet on MobileViT (slimbench/models/segmentation.py): 28% of its FLOPs in Linear at 480x360.
            "upernet_mobilevit": frozenset({"mlp_neurons", "attention_heads"}),
            # the authors' UPerNet on torchvision's Swin-V2-T: 68% of its FLOPs in Linear at 480x360; surgery finds
            # neither torchvision's MLP blocks nor its window attention.
            "upernet_swin_tv": frozenset({"linear_compute"})}
# UPerNet on a transformers Swin: its attention is found by surgery but keep_heads fails on it (relative-position
# bias), so no heads. Linear share at 480x360: 73% under a 96-wide head, 11% under the standard 512-wide one.
UPERNET_SWIN_NARROW_HEAD = 128


def hf_model_type(spec: dict[str, Any]) -> Optional[str]:
    """The model_type of a Hugging Face spec: its inline ``config``, else guessed from the source's name."""
    inline = spec.get("config")
    if isinstance(inline, dict) and inline.get("model_type"):
        return str(inline["model_type"])
    source = str(spec.get("source", "minilm" if spec.get("family") == "hf_classifier" else "")).lower()
    return next((kind for key, kind in HF_SOURCES if key in source), None)


def structures(spec: dict[str, Any]) -> Optional[frozenset[str]]:
    """The structures of a model spec (a config's ``models`` entry), or None when its architecture is unknown."""
    family = spec.get("family")
    if family == "timm":
        arch = str(spec.get("arch", ""))
        return next((found for prefix, found in TIMM if arch.startswith(prefix)), None)
    if family in ("hf_classifier", "hf_causal_lm"):
        return HF.get(hf_model_type(spec) or "")
    if family == "upernet_swin":
        narrow = spec.get("hidden_size", 512) <= UPERNET_SWIN_NARROW_HEAD
        return frozenset({"mlp_neurons"} | ({"linear_compute"} if narrow else set()))
    return FAMILIES.get(family)
