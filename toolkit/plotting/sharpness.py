"""Figures for notebook 10 (sharpness and generalisation): tr(H) against test accuracy per
training method and hand-built net, the rescaling curve of the memorising construction, and how
many points each hidden neuron fires on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .base import axes_or_new, new_figure

__all__ = ["trace_vs_accuracy", "flatness_vs_generalisation", "rescaling_curve",
           "trace_parts", "firing_counts", "search_paths"]

_MARKERS = {"GD": "s", "SAM": "o", "memoriser": "X", "lookup": "P", "flattest found": "*",
            "parity features": "D"}
_COLOURS = {"GD": "C0", "SAM": "C1", "memoriser": "C2", "lookup": "C3", "flattest found": "C4",
            "parity features": "C5"}


def _plain_log(axis) -> None:
    """Log-axis ticks at 1, 2, 5 × 10^k written as plain numbers, no minor labels."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def trace_vs_accuracy(table: pd.DataFrame, *, bound: float | None = None, ax=None,
                      title: str | None = None):
    """``table``: one row per net, columns ``method``, ``trace`` and ``test_accuracy``. Draws
    test accuracy against tr(H) (log scale), one marker and colour per method, the chance level
    ½ and, if given, a lower bound on the tr(H) of interpolators (``bound``) as a vertical
    line."""
    ax = axes_or_new(ax)
    for i, (name, rows) in enumerate(table.groupby("method", sort=False)):
        ax.scatter(rows["trace"], rows["test_accuracy"], s=110 if name == "flattest found" else 60,
                   color=_COLOURS.get(name, f"C{i}"),
                   marker=_MARKERS.get(name, "o"), label=name, edgecolor="k", lw=0.5, zorder=3)
    ax.axhline(0.5, color="0.5", ls=":", lw=1, label="chance")
    if bound is not None:
        ax.axvline(bound, color="C3", ls="--", lw=1, label=f"lower bound {bound:.1f}")
    ax.set(xscale="log", xlabel="tr(H) of the training loss (sharpness)",
           ylabel="test accuracy (unseen points)", ylim=(0.4, 1.05))
    _plain_log(ax.xaxis)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, loc="center right")
    return ax


def flatness_vs_generalisation(tables: Mapping[str, pd.DataFrame],
                               bounds: Mapping[str, float] | None = None) -> Figure:
    """One :func:`trace_vs_accuracy` panel per entry of ``tables`` (e.g. with and without
    biases), titled by its key."""
    bounds = bounds or {}
    fig, axes = new_figure(ncols=len(tables), width=4.6)
    axes = np.atleast_1d(axes)
    for ax, (name, table) in zip(axes, tables.items()):
        trace_vs_accuracy(table, bound=bounds.get(name), ax=ax, title=name)
    return fig


def rescaling_curve(d: int, *, scales: Sequence[float] | None = None,
                    measured: Sequence[float] | None = None,
                    sam_traces: Sequence[float] = (), current: float | None = None, ax=None):
    """tr(H) of the memorising construction against its input/output scale α: the closed form
    2(α² + (d+1)/α²) + 2 (line), ``measured`` traces at ``scales`` (points), its minimum at
    α* = (d+1)^{1/4} (the least tr(H) of any interpolator with zero output bias), and SAM's
    traces as horizontal lines.
    ``current`` circles one α (the panel's slider)."""
    ax = axes_or_new(ax)
    alpha_star = (d + 1) ** 0.25
    grid = np.geomspace(alpha_star / 4, alpha_star * 4, 200)
    ax.plot(grid, 2 * (grid**2 + (d + 1) / grid**2) + 2, color="C2",
            label=r"closed form $2(\alpha^2 + (d+1)/\alpha^2) + 2$")
    if measured is not None and scales is not None:
        ax.plot(scales, measured, "X", color="C2", mec="k", ms=8, label="measured tr(H)")
    best = 4 * np.sqrt(d + 1) + 2
    ax.plot([alpha_star], [best], "*", color="C3", ms=14,
            label=fr"$\alpha^*=(d+1)^{{1/4}}$: tr(H) = {best:.2f}")
    for i, t in enumerate(sam_traces):
        ax.axhline(t, color="C1", lw=1, alpha=0.8, label="SAM's solutions" if i == 0 else None)
    if current is not None:
        ax.plot([current], [2 * (current**2 + (d + 1) / current**2) + 2], "o", ms=14,
                mfc="none", mec="k", mew=2)
    ax.set(xscale="log", yscale="log", xlabel=r"scale $\alpha$ (hidden weights ×α, output ÷α)",
           ylabel="tr(H)")
    _plain_log(ax.xaxis)
    _plain_log(ax.yaxis)
    ax.legend(fontsize=7)
    return ax


def trace_parts(parts: Mapping[str, float], *, reference: float | None = None, ax=None):
    """A bar per parameter group's share of tr(H) (``parts``: name → trace), with the total and
    an optional ``reference`` trace (e.g. SAM's smallest) as horizontal lines."""
    ax = axes_or_new(ax)
    names, values = list(parts), [float(v) for v in parts.values()]
    ax.bar(names, values, color=[f"C{i}" for i in range(len(names))])
    ax.axhline(sum(values), color="k", lw=1, label=f"total {sum(values):.2f}")
    if reference is not None:
        ax.axhline(reference, color="C1", ls="--", lw=1, label=f"SAM (smallest) {reference:.2f}")
    ax.set(ylabel="share of tr(H)")
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)
    return ax


def firing_counts(counts: Mapping[str, np.ndarray], *, n_points: int, ax=None):
    """For each net (``counts``: name → per-neuron count of points it fires on, neurons that
    never fire left out), the sorted counts on log axes; ``n_points`` (the cube's size) and half
    of it as guides. The memoriser's neurons fire on exactly one point."""
    ax = axes_or_new(ax)
    for i, (name, c) in enumerate(counts.items()):
        c = np.sort(np.asarray(c))[::-1]
        c = c[c > 0]
        ax.plot(np.arange(1, len(c) + 1), c, marker=".", ls="-", color=f"C{i}", label=name)
    ax.axhline(n_points / 2, color="0.5", ls=":", lw=1, label="half the cube")
    ax.axhline(1, color="0.3", ls="--", lw=0.8, label="one point")
    ax.set(yscale="log", xlabel="hidden neuron (sorted)", ylabel="points of the cube it fires on",
           ylim=(0.5, n_points * 1.5))
    ax.legend(fontsize=7)
    return ax


def search_paths(histories: Mapping[str, Sequence[pd.DataFrame]], *,
                 bounds: Mapping[str, float] | None = None, ax=None):
    """The flatness search (:func:`toolkit.sharpness.minimise_sharpness`) step by step: the
    penalty, i.e. tr(H) for two-layer ReLU nets (solid), and the training loss (dotted, same log
    axis), one colour per architecture (``histories``: name → one history per initialisation),
    with each architecture's lower bound on the tr(H) of interpolators (``bounds``) dashed."""
    ax = axes_or_new(ax)
    bounds = bounds or {}
    for i, (name, runs) in enumerate(histories.items()):
        for j, h in enumerate(runs):
            ax.plot(h["step"], h["penalty"], color=f"C{i}", lw=1.2,
                    label=f"{name}: tr(H)" if j == 0 else None)
            ax.plot(h["step"], h["train_loss"], color=f"C{i}", lw=0.8, ls=":",
                    label=f"{name}: train loss" if j == 0 else None)
        if name in bounds:
            ax.axhline(bounds[name], color=f"C{i}", ls="--", lw=0.8,
                       label=f"{name}: bound {bounds[name]:.2f}")
    ax.set(yscale="log", xlabel="step (fit, then penalty weight lowered)",
           ylabel="tr(H) (solid) / train loss (dotted)")
    ax.legend(fontsize=7)
    return ax
