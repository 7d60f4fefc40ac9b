"""Interactive panels: the one presentation layer allowed to recompute.

:class:`Panel` (``widgets.panel``) wires sliders to a drawing function and keeps a static figure
when run headless. Each topic's slider panels live in their own module
(``toolkit.widgets.tour``, ``.ntk``, ``.landscape``, ``.collapse``, ``.pruning``,
``.features``, ``.curvature``), imported on
first use. Widgets import from the analysis modules and from :mod:`toolkit.plotting`; nothing
imports from widgets except notebooks.
"""

import importlib

from .panel import Panel, panel

_TOPICS = ("tour", "ntk", "landscape", "collapse", "pruning", "features", "curvature", "convergence",
           "sharpness", "pruning_bounds")

__all__ = ["Panel", "panel", *_TOPICS]


def __getattr__(name):
    if name in _TOPICS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
