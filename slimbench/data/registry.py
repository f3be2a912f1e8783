"""The dataset registry: name -> loader(root, download, cache, **options) -> Splits."""

from __future__ import annotations

from typing import Callable

from slimbench.data.base import Splits
from slimbench.registry import Registry

DATASETS: Registry[Callable[..., Splits]] = Registry("dataset")
