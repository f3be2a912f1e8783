"""Model families (one per file, as in timm) behind one registry."""

from slimbench.models import cnn, segmentation, text, vision  # noqa: F401  (register the families)
from slimbench.models.registry import MODELS, ModelFamily, build_model, describe_model, family, tokenizer_for  # noqa: F401
