"""Modules imported on first use: reading a config or printing a plan should not pay for pandas (0.4 s) or
networkx, which only tables, figures and the order studies' verdicts need (issue 17: `slimbench plan` < 3 s).

The standard library's recipe (``importlib.util.LazyLoader``): the module object exists at once, and its code
runs when an attribute is first read. An ``isinstance`` check or a ``pd.DataFrame`` call loads it; an
annotation (``from __future__ import annotations``) does not.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name`` itself if already imported, else a module that imports itself on first attribute access."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named '{name}'", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
