"""Figures for notebook 01 (NTK equivalence) and its interactive panel.

Every function takes the tables/tensors returned by :mod:`toolkit.ntk` and returns a matplotlib
Figure; nothing is computed here beyond summaries for display.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .base import new_figure


def _loglog_fit(ax, x, y, label_prefix: str, color=None, ref_slope: float | None = None):
    """A line with markers, labelled with its least-squares log-log slope (and a reference)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    line = ax.plot(x, y, marker="o", color=color, label=f"{label_prefix} (slope {slope:+.2f})")[0]
    if ref_slope is not None:
        ax.plot(x, y[0] * (x / x[0]) ** ref_slope, ls="--", color="grey",
                label=f"slope {ref_slope:+g}")
    ax.set(xscale="log", yscale="log")
    return line


def convergence(table: pd.DataFrame) -> Figure:
    """Empirical-vs-analytic NTK error against width (``ntk.width_convergence`` output)."""
    fig, ax = new_figure()
    ax.scatter(table["width"], table["rel_error"], s=12, alpha=0.4, color="C0")
    mean = table.groupby("width")["rel_error"].mean()
    _loglog_fit(ax, mean.index, mean.values, "mean over seeds", color="C0", ref_slope=-0.5)
    ax.set(xlabel="width n", ylabel=r"$\|\hat\Theta_n - \Theta_\infty\|_F / \|\Theta_\infty\|_F$",
           title="NTK at initialisation")
    ax.legend()
    return fig


def drift(table: pd.DataFrame) -> Figure:
    """Relative kernel change after training against width, one line per scaling."""
    fig, ax = new_figure()
    for i, (scaling, group) in enumerate(table.groupby("scaling", sort=False)):
        _loglog_fit(ax, group["width"], group["drift"], scaling, color=f"C{i}")
    ax.set(xlabel="width n", ylabel=r"$\|K_T - K_0\|_F / \|K_0\|_F$",
           title="Kernel drift during training")
    ax.legend()
    return fig


def _predictions(ax, run, x_train, y_train, x_test, y_test, step_index: int) -> None:
    order = torch.argsort(x_test[:, 0])
    xt = x_test[order, 0]
    ax.plot(xt, y_test[order, 0], color="black", lw=1, alpha=0.5, label="target")
    ax.scatter(x_train[:, 0], y_train[:, 0], color="black", s=18, zorder=3, label="train")
    ax.plot(xt, run.net_test[step_index, order, 0], color="C0", lw=2, label="network")
    ax.plot(xt, run.kernel_test[step_index, order, 0], color="C3", ls="--", lw=2,
            label="kernel regression")
    ax.set(xlabel="x", ylabel="f(x)",
           title=f"width {run.width}, step {run.epochs[step_index]}")


def equivalence(runs: Sequence, x_train, y_train, x_test, y_test, *,
                steps: Sequence[int] | None = None) -> Figure:
    """Left: the widest network and its kernel prediction at a few times (first seed).
    Right: RMS gap between network and kernel against width (``ntk.ntk_equivalence``)."""
    fig, (ax_pred, ax_gap) = new_figure(2, width=5.2)
    first_seed = runs[0].seed
    widest = max((r for r in runs if r.seed == first_seed), key=lambda r: r.width)
    steps = steps or [widest.epochs[1], widest.epochs[len(widest.epochs) // 4], widest.epochs[-1]]
    for i, step in enumerate(steps):
        k = widest.epochs.index(step)
        ax_pred.plot(x_test[:, 0], widest.net_test[k, :, 0], color=f"C{i}", lw=2,
                     label=f"net, step {step}")
        ax_pred.plot(x_test[:, 0], widest.kernel_test[k, :, 0], color="black", ls=":", lw=1.5)
    ax_pred.plot([], [], color="black", ls=":", label="kernel regression")
    ax_pred.scatter(x_train[:, 0], y_train[:, 0], color="black", s=18, zorder=3, label="train")
    ax_pred.set(xlabel="x", ylabel="f(x)", title=f"width {widest.width}")
    ax_pred.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    table = pd.DataFrame([{"width": r.width, "gap": r.gap} for r in runs])
    ax_gap.scatter(table["width"], table["gap"], s=12, alpha=0.4, color="C0")
    mean = table.groupby("width")["gap"].mean()
    _loglog_fit(ax_gap, mean.index, mean.values, "mean over seeds", color="C0", ref_slope=-0.5)
    ax_gap.set(xlabel="width n", ylabel="RMS(network - kernel)", title="Gap to kernel regression")
    ax_gap.legend()
    return fig


def spectral_bias(table: pd.DataFrame) -> Figure:
    """Residual along NTK eigenvectors: measured (solid) vs (1 - eta lambda)^t (dashed)."""
    fig, ax = new_figure(width=5.5)
    floor = 1e-8
    for i, (mode, group) in enumerate(table.groupby("mode")):
        lam = group["eigenvalue"].iloc[0]
        ax.plot(group["epoch"], group["measured"].clip(lower=floor), color=f"C{i}",
                label=f"mode {mode}: $\\lambda$ = {lam:.3g}")
        ax.plot(group["epoch"], group["predicted"].clip(lower=floor), color=f"C{i}", ls="--")
    ax.plot([], [], color="grey", ls="--", label=r"$(1-\eta\lambda)^t$")
    ax.set(yscale="log", ylim=(1e-4, 1.5), xlabel="GD step t",
           ylabel=r"$|v_i^\top r_t| / |v_i^\top r_0|$", title="Spectral bias")
    ax.legend(fontsize="small")
    return fig


def gated(run, deep_run=None) -> Figure:
    """Loss of the fixed-activation surrogate (log axis) with the linear-rate bound, next to the
    ReLU net from the same initialisation (``ntk.gated_training``)."""
    fig, ax = new_figure(width=5.5)
    hist = run.history
    ax.plot(hist["epoch"], hist["train_loss"], lw=2, label=f"gated (drift {run.drift:.1e})")
    ax.plot(hist["epoch"], run.bound.numpy(), ls="--", color="grey",
            label=r"$(1-\eta\lambda_{min})^{2t} L_0$")
    ax.plot(run.relu_history["epoch"], run.relu_history["train_loss"], lw=1.5,
            label=f"ReLU, same init (drift {run.relu_drift:.1e})")
    if deep_run is not None:
        ax.plot(deep_run.history["epoch"], deep_run.history["train_loss"], lw=1.5,
                label=f"gated, {len(deep_run.model.hidden)} layers (drift {deep_run.drift:.1e})")
    ax.set(yscale="log", xlabel="GD step", ylabel="train MSE", title="Fixed activation patterns")
    ax.legend(fontsize="small")
    return fig


def equivalence_panel(runs: Sequence, x_train, y_train, x_test, y_test):
    """ipywidgets panel: width and training-time sliders; the network's and the kernel's
    predictions on 1-D data at that width and time (first seed of ``ntk.ntk_equivalence``)."""
    import ipywidgets as widgets

    from ..widgets import panel

    by_width = {r.width: r for r in runs if r.seed == runs[0].seed}
    widths = sorted(by_width)
    epochs = list(by_width[widths[0]].epochs)

    def draw(fig, width: int, step: int):
        run = by_width[width]
        ax_f, ax_gap = fig.subplots(1, 2)
        k = run.epochs.index(step)
        _predictions(ax_f, run, x_train, y_train, x_test, y_test, k)
        ax_f.legend(fontsize="small", loc="lower right")
        gaps = (run.net_test - run.kernel_test).pow(2).mean(dim=(1, 2)).sqrt()
        ax_gap.plot(run.epochs, gaps, color="C0")
        ax_gap.axvline(step, color="C3", ls=":")
        ax_gap.set(xlabel="GD step", ylabel="RMS(network - kernel)",
                   title="gap over training", ylim=(0, None))

    return panel(
        draw,
        width=widgets.SelectionSlider(options=widths, value=widths[-1], description="width"),
        step=widgets.SelectionSlider(options=epochs, value=epochs[len(epochs) // 4],
                                     description="GD step"),
    )
