"""Figures for notebook 05 (feature learning, μP): the coordinate check, learning-rate transfer
and kernel drift. Each function takes the notebook's tables and returns a matplotlib Figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from toolkit.utils import loglog_slope

from .base import new_figure

__all__ = ["coordinate_check", "kernel_drift", "lr_transfer"]


def coordinate_check(table: pd.DataFrame) -> Figure:
    """RMS pre-activation change against width, one panel per parameterisation, one line per
    layer: a table ``parameterization, width, layer, rms_change`` (mean over seeds)."""
    pars = list(dict.fromkeys(table["parameterization"]))
    fig, axes = new_figure(ncols=len(pars), width=3.6, sharey=False)
    axes = np.atleast_1d(axes)
    for ax, par in zip(axes, pars):
        sub = table[table["parameterization"] == par]
        for layer, rows in sub.groupby("layer", sort=False):
            rows = rows.sort_values("width")
            finite = np.isfinite(rows["rms_change"]) & (rows["rms_change"] < 1e6)
            slope = (loglog_slope(rows["width"][finite], rows["rms_change"][finite])
                     if finite.sum() > 1 else float("nan"))
            ax.plot(rows["width"][finite], rows["rms_change"][finite], marker="o",
                    label=f"{layer} ({slope:+.2f})")
        ax.set(xscale="log", yscale="log", xlabel="width n", title=par)
        ax.legend(fontsize=7, title="layer (slope)", title_fontsize=7)
    axes[0].set_ylabel("RMS change of pre-activations")
    fig.suptitle("Coordinate check: flat = feature learning at every width")
    return fig


def lr_transfer(table: pd.DataFrame) -> Figure:
    """Training loss against learning rate, one line per width, one panel per parameterisation;
    the best rate of each width is a star. A table ``parameterization, width, lr, loss``."""
    pars = list(dict.fromkeys(table["parameterization"]))
    fig, axes = new_figure(ncols=len(pars), width=4.0, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, par in zip(axes, pars):
        sub = table[table["parameterization"] == par]
        for i, (width, rows) in enumerate(sub.groupby("width")):
            rows = rows.sort_values("lr")
            loss = rows["loss"].where(np.isfinite(rows["loss"]))
            ax.plot(rows["lr"], loss, marker="o", ms=3, color=f"C{i}", label=f"n = {width}")
            best = loss.idxmin()
            ax.plot(rows["lr"][best], loss[best], marker="*", ms=14, color=f"C{i}")
        ax.set(xscale="log", xlabel="learning rate", title=par)
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("training loss")
    top = np.nanquantile(table["loss"].where(np.isfinite(table["loss"])), 0.9)
    axes[0].set_ylim(None, top)
    fig.suptitle("Learning-rate transfer: under μP the best rate (star) stays put")
    return fig


def kernel_drift(table: pd.DataFrame) -> Figure:
    """Relative NTK change after training against width: ``parameterization, width, drift``."""
    fig, ax = new_figure()
    for par, rows in table.groupby("parameterization", sort=False):
        mean = rows.groupby("width")["drift"].mean()
        ax.scatter(rows["width"], rows["drift"], s=10, alpha=0.4)
        ax.plot(mean.index, mean.values, marker="o",
                label=f"{par} (slope {loglog_slope(mean.index, mean.values):+.2f})")
    ax.set(xscale="log", yscale="log", xlabel="width n",
           ylabel=r"$\|\Theta_T-\Theta_0\|_F/\|\Theta_0\|_F$", title="Kernel drift, deep MLPs")
    ax.legend()
    return fig
