"""The papers' methods, one module each. Importing this package imports every module in it, so that
their stages (and model families) are registered: a new method is one new file."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
