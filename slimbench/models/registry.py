"""The model registry: a family name -> how to build it, its tokenizer, and what to persist to rebuild it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import nn

from slimbench.data import DatasetInfo
from slimbench.registry import Registry

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelFamily:
    """``build(info, pretrained, download, **options)``; ``describe(model)`` returns options that let
    ``build`` recreate the architecture later without files or network (e.g. a Hugging Face config)."""

    name: str
    build: Builder
    tokenizer: Optional[Callable[..., Any]] = None
    describe: Optional[Callable[[nn.Module], dict]] = None


MODELS: Registry[ModelFamily] = Registry("model family")


def family(name: str, tokenizer: Optional[Callable[..., Any]] = None,
           describe: Optional[Callable[[nn.Module], dict]] = None) -> Callable[[Builder], Builder]:
    def decorator(build: Builder) -> Builder:
        MODELS.add(name, ModelFamily(name, build, tokenizer, describe))
        return build

    return decorator


def build_model(spec: dict[str, Any], info: DatasetInfo, pretrained: bool, download: bool) -> nn.Module:
    options = dict(spec)
    return MODELS.get(options.pop("family")).build(info, pretrained, download, **options)


def tokenizer_for(spec: dict[str, Any], download: bool) -> Any:
    """The family's tokenizer for this spec, or None for models that take tensors."""
    options = dict(spec)
    found = MODELS.get(options.pop("family"))
    return found.tokenizer(download=download, **options) if found.tokenizer else None


def describe_model(spec: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """The spec plus whatever the family needs to rebuild this architecture offline."""
    found = MODELS.get(spec["family"])
    return {**spec, **(found.describe(model) if found.describe else {})}
