"""Old public names kept for one release: they still work and say where the name went.

A module that renamed or moved a public name installs ``__getattr__ = moved(__name__, {...})``; the
old name then resolves (lazily, by import path, so no import cycle appears) with a
``DeprecationWarning`` that names the new place.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping

__all__ = ["moved", "warn_renamed"]


def warn_renamed(old: str, new: str) -> None:
    """Emit the one deprecation message: ``old`` is now ``new``."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}.",
                  DeprecationWarning, stacklevel=3)


def moved(module: str, names: Mapping[str, str],
          fallback: Callable[[str], object] | None = None) -> Callable[[str], object]:
    """A module ``__getattr__`` serving ``names``: old name -> ``"package.module:new_name"``.

    ``fallback(name)`` handles other names (a package's lazy submodules); without it they raise
    ``AttributeError``.
    """
    def __getattr__(name: str):
        if name in names:
            target_module, _, target = names[name].partition(":")
            if target.startswith("_"):  # made private: there is no public name to point to
                warnings.warn(f"{module}.{name} is internal now and will be removed in the next "
                              "release.", DeprecationWarning, stacklevel=2)
            else:
                warn_renamed(f"{module}.{name}", f"{target_module}.{target}")
            return getattr(importlib.import_module(target_module), target)
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return __getattr__
