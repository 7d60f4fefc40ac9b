"""Figures only: each function takes results (tensors, arrays, DataFrames, result dataclasses) and
returns a matplotlib Figure or Axes; nothing here recomputes an experiment or imports from
:mod:`toolkit.widgets`. ``base`` holds the theme and the shared plots; each topic has its own
module (``toolkit.plotting.ntk``, ``.landscape``, ``.hessian``, ``.collapse``, ``.spectra``,
``.pruning``), imported on first use."""

import importlib

from .base import axes_or_new, learning_curves, new_figure, set_theme

_TOPICS = ("ntk", "landscape", "hessian", "collapse", "spectra", "pruning", "features", "curvature",
           "convergence", "sharpness", "pruning_bounds", "base")

__all__ = ["axes_or_new", "learning_curves", "new_figure", "set_theme", *_TOPICS]


def __getattr__(name):
    if name in _TOPICS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
