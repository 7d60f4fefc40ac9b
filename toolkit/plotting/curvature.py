"""Figures for notebook 06 (curvature scaling): Hessian rank against parameter count, and one
Hessian's singular values against the rank tolerance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from toolkit.utils import loglog_slope

from .base import axes_or_new, new_figure

__all__ = ["rank_scaling", "rank_scaling_axes", "singular_values"]


def rank_scaling_axes(ax, table: pd.DataFrame, *, last: int = 2) -> None:
    """Draw ``table`` (columns ``model, n_params, rank``; one row per net) on ``ax``: rank against
    parameter count on log–log axes, one line per model with the slope over its ``last`` largest
    nets, the line rank = count (full rank) and a √count guide through the largest first model."""
    for i, (name, rows) in enumerate(table.groupby("model", sort=False)):
        rows = rows.sort_values("n_params")
        slope = loglog_slope(rows["n_params"].iloc[-last:], rows["rank"].iloc[-last:])
        ax.plot(rows["n_params"], rows["rank"], marker="o", color=f"C{i}",
                label=f"{name} (slope {slope:.2f})")
    p = np.geomspace(table["n_params"].min(), table["n_params"].max(), 20)
    ax.plot(p, p, color="0.5", ls=":", label="rank = #params")
    first = table[table["model"] == table["model"].iloc[0]].sort_values("n_params").iloc[-1]
    ax.plot(p, first["rank"] * np.sqrt(p / first["n_params"]), color="k", ls="--", lw=0.8,
            label=r"$\propto\sqrt{\#\mathrm{params}}$")
    ax.set(xscale="log", yscale="log", xlabel="number of parameters", ylabel="rank of the Hessian")
    ax.legend(fontsize=7)


def rank_scaling(table: pd.DataFrame, *, last: int = 2) -> Figure:
    """One panel of :func:`rank_scaling_axes`."""
    fig, ax = new_figure(width=5.0)
    rank_scaling_axes(ax, table, last=last)
    ax.set_title("Hessian rank grows like √#params, not like #params")
    return fig


def singular_values(sv: torch.Tensor, tol: float, *, ax=None, label: str | None = None):
    """A Hessian's singular values in decreasing order (log scale) with the rank tolerance τ as a
    horizontal line: the rank is the number of points above it."""
    ax = axes_or_new(ax)
    sv = torch.as_tensor(sv, dtype=torch.float64).clamp_min(1e-300).cpu().numpy()
    ax.semilogy(np.arange(1, len(sv) + 1), sv, ".", ms=3, label=label)
    ax.axhline(tol, color="C3", ls="--", lw=1, label=f"tolerance τ = {tol:.1e}")
    ax.axvline(int((sv > tol).sum()), color="0.5", ls=":", lw=1)
    ax.set(xlabel="index", ylabel="singular value")
    ax.legend(fontsize=7)
    return ax
