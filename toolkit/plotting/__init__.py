"""Figures. ``base`` holds the theme and the shared plots; each method has its own module
(``toolkit.plotting.ntk``, ``.landscape``, ``.collapse``, ``.spectra``), imported on first use."""

import importlib

from .base import learning_curves, new_figure, set_theme

_TOPICS = ("ntk", "landscape", "collapse", "spectra", "base")

__all__ = ["learning_curves", "new_figure", "set_theme", *_TOPICS]


def __getattr__(name):
    if name in _TOPICS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
