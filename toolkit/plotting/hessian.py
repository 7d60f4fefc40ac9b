"""Figures for the curvature of the loss (:mod:`toolkit.hessian` results): the Hessian eigenvalue
density, the top eigenvalues with their expected outliers, λ_max along training against 2/η, and
per-class curvature. Functions take ``ax=None`` and return the Axes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .base import axes_or_new

__all__ = ["hessian_density", "top_eigenvalue_gaps", "lambda_max_curve", "class_curvature"]


def hessian_density(density, *, ax=None, log: bool = True, eigenvalues=None,
                    title: str | None = None, floor: float = 1e-6):
    """Hessian eigenvalue density from :func:`toolkit.hessian.spectral_density` (log scale by
    default so that the outliers show next to the bulk), with optional eigenvalue markers.

    On the log scale, values below ``floor`` are drawn at ``floor``; the y label says so."""
    ax = axes_or_new(ax)
    d = np.clip(density.density, floor, None) if log else density.density
    clipped = bool(log and np.any(density.density < floor))
    ax.fill_between(density.grid, d, floor if log else 0, alpha=0.35)
    ax.plot(density.grid, d, lw=1.2)
    if log:
        ax.set_yscale("log")
    if eigenvalues is not None:
        for i, lam in enumerate(np.atleast_1d(eigenvalues)):
            ax.axvline(lam, color="tab:red", lw=0.8, ls="--",
                       label="top eigenvalues (Lanczos)" if i == 0 else None)
        ax.legend(loc="upper right")
    ylabel = f"density (values < {floor:g} drawn at {floor:g})" if clipped else "density"
    ax.set(xlabel="eigenvalue λ", ylabel=ylabel, title=title or "Hessian spectral density")
    return ax


def top_eigenvalue_gaps(eigenvalues, *, n_outliers: int | None = None, ax=None,
                        title: str | None = None, floor: float = 1e-12):
    """The top eigenvalues on a log scale, with the expected number of outliers marked
    (Papyan's class structure: C − 1 for cross-entropy with C classes). Eigenvalues below
    ``floor`` (zero or negative) are drawn at ``floor`` and the y label says so."""
    ax = axes_or_new(ax)
    ev = np.asarray(eigenvalues)
    ax.semilogy(np.arange(1, len(ev) + 1), np.clip(ev, floor, None), "o-")
    if n_outliers is not None:
        ax.axvline(n_outliers + 0.5, color="tab:red", ls="--",
                   label=f"{n_outliers} outliers expected")
        ax.legend()
    ylabel = f"λ_i (values < {floor:g} drawn at {floor:g})" if np.any(ev < floor) else "λ_i"
    ax.set(xlabel="index i", ylabel=ylabel, title=title or "top Hessian eigenvalues")
    return ax


def lambda_max_curve(history: pd.DataFrame | Mapping[str, pd.DataFrame], *,
                     lr: float | Mapping[str, float] | None = None, column: str = "lambda_max",
                     ax=None, title: str | None = None):
    """λ_max against the epoch, with the stability threshold 2/η (Cohen et al. 2021,
    arXiv 2103.00065). ``history`` is one DataFrame or a dict label → DataFrame, ``lr`` one
    learning rate or a dict label → lr."""
    ax = axes_or_new(ax)
    runs = history if isinstance(history, Mapping) else {column: history}
    for i, (label, h) in enumerate(runs.items()):
        h = h[h[column].notna()]
        (line,) = ax.plot(h["epoch"], h[column], "-", label=label)
        eta = lr.get(label) if isinstance(lr, Mapping) else lr
        if eta is not None:
            ax.axhline(2 / eta, color=line.get_color(), ls="--", lw=1,
                       label=f"2/η = {2 / eta:.3g}" if i == 0 or isinstance(lr, Mapping) else None)
    ax.set(xlabel="epoch", ylabel="λ_max", title=title or "sharpness along training")
    ax.legend()
    return ax


def class_curvature(tables: Mapping[str, pd.DataFrame], *, column: str = "lambda_min",
                    counts: Mapping[int, int] | None = None, ax=None, title: str | None = None):
    """Per-class Hessian eigenvalues (``toolkit.hessian.class_hessian`` tables) side by side for
    several runs, classes ordered from largest to smallest."""
    ax = axes_or_new(ax, width=6)
    frames = [t.assign(run=name) for name, t in tables.items()]
    df = pd.concat(frames, ignore_index=True)
    order = df.drop_duplicates("class").sort_values("n_samples", ascending=False)["class"]
    classes = list(order)
    width = 0.8 / len(tables)
    for i, (name, t) in enumerate(tables.items()):
        t = t.set_index("class").loc[classes]
        ax.bar(np.arange(len(classes)) + i * width - 0.4 + width / 2, t[column], width,
               label=name)
    labels = [f"{c}\n{int(df[df['class'] == c]['n_samples'].iloc[0])}" for c in classes]
    ax.set_xticks(np.arange(len(classes)), labels, fontsize="x-small")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="class / number of training samples", ylabel=column,
           title=title or f"per-class Hessian {column}")
    ax.legend()
    return ax
