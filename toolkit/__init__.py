"""The hands-on toolkit for deep learning theory.

Core: :mod:`toolkit.data`, :mod:`toolkit.models`, :mod:`toolkit.train`, :mod:`toolkit.presets`.
Methods: :mod:`toolkit.ntk`, :mod:`toolkit.landscape`, :mod:`toolkit.hessian`,
:mod:`toolkit.collapse`, :mod:`toolkit.pruning`, :mod:`toolkit.spectra`.
Figures: :mod:`toolkit.plotting` (draws results, never recomputes); slider panels:
:mod:`toolkit.widgets` (the one presentation layer that recomputes). Running every notebook:
``python -m toolkit.run_notebooks``.
Method modules are imported on first use (``toolkit.ntk`` works after ``import toolkit``).
"""

import importlib

from . import data, models, presets, train, utils
from .utils import get_device, seed_everything

__version__ = "0.1.0"

_LAZY = ("ntk", "landscape", "hessian", "collapse", "pruning", "spectra", "plotting", "widgets",
         "cli", "distributed", "batches", "claims", "exercises", "landscape_convergence",
         "pruning_bounds", "sharpness", "publish")

__all__ = ["data", "models", "presets", "train", "utils", "get_device", "seed_everything",
           *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
