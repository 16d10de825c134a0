"""Modules that are also the function they are named after, and packages whose names are
imported on first use (one home for both tricks).

``neurondb.extract`` and ``neurondb.tune`` are packages and functions; so are the modules
``neurondb.query.predictivity`` and ``neurondb.query.attribution``, whose names the package
``neurondb.query`` exports as functions but imports only on first use (a light import): once
the module is loaded under that name, calling it still calls the function.
"""

from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, target: str) -> None:
    """Calling module ``module_name`` calls ``target`` (``"package.module:function"``),
    imported on the first call."""

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            mod, _, fn = target.partition(":")
            return getattr(importlib.import_module(mod), fn)(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule


def lazy_exports(module_name: str, exports: dict[str, str]) -> None:
    """Give module ``module_name`` the attributes ``exports`` names (``{name: module}``),
    each imported from its module on first use (so importing the package stays light)."""
    module = sys.modules[module_name]

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    module.__getattr__ = __getattr__
    module.__all__ = sorted(exports)
