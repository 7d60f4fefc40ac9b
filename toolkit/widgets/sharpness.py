"""The rescaling panel of notebook 10: a slider over the memorising construction's input/output
scale α, redrawing its measured tr(H) against the closed form and SAM's solutions."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from ..plotting.sharpness import rescaling_curve, trace_parts
from ..sharpness import gauss_newton_trace, memorising_interpolator, optimal_scale
from .panel import Panel, panel

__all__ = ["rescaling_panel"]

_PART_NAMES = {"features.1.weight": "input weights", "features.1.bias": "hidden biases",
               "head.weight": "output weights", "head.bias": "output bias"}


def rescaling_panel(x_train, y_train, *, sam_traces: Sequence[float] = (),
                    n_scales: int = 13) -> Panel:
    """A slider over α (``n_scales`` values, log-spaced over α*/4 … 4α*, α* = (d+1)^{1/4}).
    Each move rebuilds :func:`toolkit.sharpness.memorising_interpolator` at that α (the same
    function: ReLU's rescaling symmetry) and measures its tr(H) exactly
    (:func:`~toolkit.sharpness.gauss_newton_trace`). Left: the measured trace on the closed-form
    curve, with SAM's traces (``sam_traces``) as horizontal lines. Right: each parameter
    group's share of tr(H): the output weights' grows like α², the input weights' and biases'
    fall like 1/α²."""
    d = x_train.shape[1]
    star = optimal_scale(d)
    scales = [float(s) for s in star * np.geomspace(0.25, 4.0, n_scales)]
    options = [(f"{s:.2f}", s) for s in scales]
    reference = min(sam_traces) if len(sam_traces) else None

    def draw(fig: Figure, scale: float) -> None:
        ax_curve, ax_parts = fig.subplots(1, 2)
        net = memorising_interpolator(x_train, y_train, scale=scale)
        parts = gauss_newton_trace(net, (x_train, y_train), by_parameter=True)
        total = sum(parts.values())
        rescaling_curve(d, scales=[scale], measured=[total], sam_traces=sam_traces,
                        current=scale, ax=ax_curve)
        ax_curve.set_title(f"α = {scale:.2f}: tr(H) = {total:.2f}")
        trace_parts({_PART_NAMES.get(k, k): v for k, v in parts.items()}, reference=reference,
                    ax=ax_parts)
        ax_parts.set_title("where the trace comes from")

    middle = options[len(options) // 2][1]
    return panel(draw, figsize=(10, 3.8),
                 scale=widgets.SelectionSlider(options=options, value=middle,
                                               description="α"))
