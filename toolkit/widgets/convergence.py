"""The landscape-convergence panel of notebook 09: a k slider redrawing |L_{k+1} − L_k| on the
plane (eq. (1) of Kiselev & Grabovoy 2024, arXiv 2409.11995) next to the curve against k."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation

from ..landscape_convergence import Differences, PlaneLosses, difference_map
from ..plotting.convergence import difference_map_axes, differences_axes
from .panel import Panel, panel

__all__ = ["difference_panel"]


def difference_panel(surface: PlaneLosses, diffs: Differences, *, bound=None,
                     ks: Sequence[int] | None = None, order=None) -> Panel:
    """A ``k`` slider (``ks``, default about 12 log-spaced sizes). Left: |L_{k+1} − L_k| on the
    plane for one ordering ``order`` (default the stored one), from eq. (1), with a colour bar.
    Right: the mean and maximum over the plane against k (``diffs``), the bound if given, the
    chosen k marked. Each redraw is one mean over k objects on the grid."""
    if ks is None:
        ks = np.unique(np.geomspace(1, surface.n - 1, 12).astype(int))
    options = [int(k) for k in ks if 1 <= int(k) <= surface.n - 1]
    if not options:
        raise ValueError(f"ks has no size in [1, {surface.n - 1}]; give subset sizes k with "
                         "k + 1 <= the number of objects.")

    def draw(fig: Figure, k: int) -> None:
        ax_map, ax_curve = fig.subplots(1, 2)
        cs = difference_map_axes(ax_map, surface, difference_map(surface, k, order), k)
        fig.colorbar(cs, ax=ax_map, shrink=0.8, format=LogFormatterSciNotation())
        differences_axes(ax_curve, diffs, bound, marker_k=k)
        ax_curve.set_title("over the plane, against k")

    return panel(draw, figsize=(10, 3.8),
                 k=widgets.SelectionSlider(options=options, value=options[len(options) // 2],
                                           description="k"))
