"""Figures for notebook 01 (NTK equivalence).

Every function takes DataFrames or tensors (the notebook's tables, network and kernel
predictions) and returns a matplotlib Figure; nothing is computed here beyond summaries for
display. The interactive explorer is :func:`toolkit.widgets.ntk.equivalence_panel`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from toolkit._deprecated import moved
from toolkit.utils import loglog_slope

from .base import new_figure

__all__ = ["convergence", "draw_predictions", "drift", "equivalence", "gated", "spectral_bias"]

# Moved to the widgets layer (plotting never imports widgets; this resolves by name, lazily).
__getattr__ = moved(__name__, {"equivalence_panel": "toolkit.widgets.ntk:equivalence_panel"})


def _loglog_fit(ax, x, y, label_prefix: str, color=None, ref_slope: float | None = None):
    """A line with markers, labelled with its least-squares log-log slope (and a reference)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope = loglog_slope(x, y)
    line = ax.plot(x, y, marker="o", color=color, label=f"{label_prefix} (slope {slope:+.2f})")[0]
    if ref_slope is not None:
        ax.plot(x, y[0] * (x / x[0]) ** ref_slope, ls="--", color="grey",
                label=f"slope {ref_slope:+g}")
    ax.set(xscale="log", yscale="log")
    return line


def _scatter_with_mean(ax, table: pd.DataFrame, column: str) -> None:
    """Every seed as a dot, the mean over seeds as a fitted line with a slope -1/2 reference."""
    ax.scatter(table["width"], table[column], s=12, alpha=0.4, color="C0")
    mean = table.groupby("width")[column].mean()
    _loglog_fit(ax, mean.index, mean.values, "mean over seeds", color="C0", ref_slope=-0.5)


def convergence(table: pd.DataFrame) -> Figure:
    """Empirical-vs-analytic NTK error against width: a table ``width, seed, rel_error``."""
    fig, ax = new_figure()
    _scatter_with_mean(ax, table, "rel_error")
    ax.set(xlabel="width n", ylabel=r"$\|\hat\Theta_n - \Theta_\infty\|_F / \|\Theta_\infty\|_F$",
           title="NTK at initialisation")
    ax.legend()
    return fig


def drift(table: pd.DataFrame) -> Figure:
    """Relative kernel change after training against width: ``width, scaling, drift``."""
    fig, ax = new_figure()
    for i, (scaling, group) in enumerate(table.groupby("scaling", sort=False)):
        _loglog_fit(ax, group["width"], group["drift"], scaling, color=f"C{i}")
    ax.set(xlabel="width n", ylabel=r"$\|K_T - K_0\|_F / \|K_0\|_F$",
           title="Kernel drift during training")
    ax.legend()
    return fig


def draw_predictions(ax: Axes, x_train, y_train, x_test, y_test, net: torch.Tensor,
                     kernel: torch.Tensor, title: str = "") -> Axes:
    """On ``ax``: targets, training points, a network's and its kernel's predictions on 1-D
    inputs (``net``, ``kernel``: (M, 1) on ``x_test``)."""
    order = torch.argsort(x_test[:, 0])
    xt = x_test[order, 0]
    ax.plot(xt, y_test[order, 0], color="black", lw=1, alpha=0.5, label="target")
    ax.scatter(x_train[:, 0], y_train[:, 0], color="black", s=18, zorder=3, label="train")
    ax.plot(xt, net[order, 0], color="C0", lw=2, label="network")
    ax.plot(xt, kernel[order, 0], color="C3", ls="--", lw=2, label="kernel regression")
    ax.set(xlabel="x", ylabel="f(x)", title=title)
    return ax


def equivalence(gaps: pd.DataFrame, x_test, net: torch.Tensor, kernel: torch.Tensor,
                steps: Sequence[int], x_train, y_train, *, width: int | None = None,
                show: Sequence[int] | None = None) -> Figure:
    """Left: one network's (T, M, 1) predictions ``net`` on ``x_test`` and its kernel's
    ``kernel`` at a few of the recorded ``steps`` (``show``; default three).
    Right: the table ``width, seed, gap`` (RMS network - kernel) against width."""
    fig, (ax_pred, ax_gap) = new_figure(2, width=5.2)
    steps = list(steps)
    show = show or [steps[1], steps[len(steps) // 4], steps[-1]]
    order = torch.argsort(x_test[:, 0])
    for i, step in enumerate(show):
        k = steps.index(step)
        ax_pred.plot(x_test[order, 0], net[k, order, 0], color=f"C{i}", lw=2,
                     label=f"net, step {step}")
        ax_pred.plot(x_test[order, 0], kernel[k, order, 0], color="black", ls=":", lw=1.5)
    ax_pred.plot([], [], color="black", ls=":", label="kernel regression")
    ax_pred.scatter(x_train[:, 0], y_train[:, 0], color="black", s=18, zorder=3, label="train")
    ax_pred.set(xlabel="x", ylabel="f(x)", title="" if width is None else f"width {width}")
    ax_pred.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    _scatter_with_mean(ax_gap, gaps, "gap")
    ax_gap.set(xlabel="width n", ylabel="RMS(network - kernel)", title="Gap to kernel regression")
    ax_gap.legend()
    return fig


def spectral_bias(table: pd.DataFrame) -> Figure:
    """Residual along NTK eigenvectors (``ntk.residual_modes``): measured |ratio| (solid) vs
    |1 - eta' lambda|^t (dashed)."""
    fig, ax = new_figure(width=5.5)
    floor = 1e-8
    for i, (mode, group) in enumerate(table.groupby("mode")):
        lam = group["eigenvalue"].iloc[0]
        ax.plot(group["step"], group["measured"].abs().clip(lower=floor), color=f"C{i}",
                label=f"mode {mode}: $\\lambda$ = {lam:.3g}")
        ax.plot(group["step"], group["predicted"].abs().clip(lower=floor), color=f"C{i}", ls="--")
    ax.plot([], [], color="grey", ls="--", label=r"$(1-\eta'\lambda)^t$")
    ax.set(yscale="log", ylim=(1e-4, 1.5), xlabel="GD step t",
           ylabel=r"$|v_i^\top r_t| / |v_i^\top r_0|$", title="Spectral bias")
    ax.legend(fontsize="small")
    return fig


def gated(histories: Mapping[str, pd.DataFrame], bound: torch.Tensor | None = None,
          drift: Mapping[str, float] | None = None) -> Figure:
    """Training losses (``train.fit`` histories by label, log axis), with the linear-rate bound
    :math:`(1-\\eta'\\lambda_{min})^{2t} L_0` dashed and each run's kernel drift in its label."""
    fig, ax = new_figure(width=5.5)
    for i, (label, hist) in enumerate(histories.items()):
        text = label if drift is None else f"{label} (drift {drift[label]:.1e})"
        ax.plot(hist["epoch"], hist["train_loss"], lw=2 if i == 0 else 1.5, label=text)
    if bound is not None:
        steps = np.arange(len(bound))
        ax.plot(steps, np.asarray(bound, float), ls="--", color="grey",
                label=r"$(1-\eta'\lambda_{min})^{2t} L_0$")
    ax.set(yscale="log", xlabel="GD step", ylabel="train MSE", title="Fixed activation patterns")
    ax.legend(fontsize="small")
    return fig
