"""Figures for notebook 09 (loss-landscape convergence, Kiselev & Grabovoy 2024, arXiv
2409.11995): |L_{k+1} − L_k| and the paper's bound against k, the top Hessian eigenvalue against
k, and the difference on the plane for one k."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from toolkit.utils import loglog_slope

from .base import new_figure

__all__ = ["differences_axes", "eigenvalues_axes", "convergence", "subset_surfaces",
           "difference_map_axes"]


def differences_axes(ax, diffs, bound=None, *, k_min: int = 10, marker_k: int | None = None,
                     label: str = "") -> None:
    """On ``ax`` (log–log): the plane mean and maximum of |L_{k+1} − L_k| from a
    :class:`~toolkit.landscape_convergence.Differences`, a 1/k guide through the mean at the
    middle k, and the Lemma 2 bound (``bound``: a
    :class:`~toolkit.landscape_convergence.LossDifferenceBound`) if given."""
    k = np.asarray(diffs.k)
    keep = k >= 1
    slope = loglog_slope(k[k >= k_min], diffs.mean[k >= k_min])
    ax.plot(k[keep], diffs.mean[keep], color="C0", lw=1.2,
            label=f"{label}mean over the plane (slope {slope:.2f})")
    ax.plot(k[keep], diffs.max[keep], color="C1", lw=0.8, alpha=0.8, label="max over the plane")
    mid = int(np.sqrt(k.min() * k.max()))
    j = int(np.argmin(np.abs(k - mid)))
    ax.plot(k, diffs.mean[j] * k[j] / k, color="k", ls="--", lw=0.8, label=r"$\propto 1/k$")
    if bound is not None:
        values = bound.at(k)
        ax.plot(k, values, color="C3", lw=1.2, label="Lemma 2 bound")
        ratio = float(np.min(values / np.maximum(diffs.max, 1e-300)))
        ax.text(0.03, 0.62, f"bound ≥ {ratio:.1e} × max", transform=ax.transAxes, fontsize=8,
                color="C3")
    if marker_k is not None:
        ax.axvline(marker_k, color="0.4", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="sample size k",
           ylabel=r"$|L_{k+1} - L_k|$")
    ax.legend(fontsize=7, loc="center right")


def eigenvalues_axes(ax, ks, eigenvalues) -> None:
    """λ_max of the Hessian of L_k against k (log k axis). ``eigenvalues``: one array per k, or
    an array (orderings, len(ks)): each ordering a thin grey line, their mean in colour."""
    lam = np.atleast_2d(np.asarray(eigenvalues, dtype=float))
    if lam.shape[0] > 1:
        for row in lam:
            ax.plot(ks, row, color="0.6", lw=0.6, alpha=0.7)
        ax.plot([], [], color="0.6", lw=0.6, label=f"{lam.shape[0]} orderings")
    ax.plot(ks, lam.mean(axis=0), marker="o", color="C2", label="mean over orderings")
    ax.set(xscale="log", xlabel="sample size k", ylabel=r"$\lambda_{\max}(\nabla^2 L_k)$")
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7)


def convergence(diffs, bound, ks, eigenvalues, *, k_min: int = 10) -> Figure:
    """Two panels: :func:`differences_axes` (with the bound) and :func:`eigenvalues_axes`."""
    fig, (ax_d, ax_e) = new_figure(ncols=2, width=4.8)
    differences_axes(ax_d, diffs, bound, k_min=k_min)
    ax_d.set_title("surfaces of nested subsets converge like 1/k")
    eigenvalues_axes(ax_e, ks, eigenvalues)
    ax_e.set_title("top Hessian eigenvalue of $L_k$")
    return fig


def subset_surfaces(surface, means: Mapping[int, np.ndarray]) -> Figure:
    """Contours of L_k on the plane of a :class:`~toolkit.landscape_convergence.PlaneLosses`,
    one panel per ``k`` (``means[k]``: the grid, e.g. a row of ``running_means``), shared
    levels so the panels compare at a glance."""
    ks = list(means)
    fig, axes = new_figure(ncols=len(ks), width=2.6, height=2.6, sharey=True)
    axes = np.atleast_1d(axes)
    stack = np.stack([means[k] for k in ks])
    levels = np.linspace(stack.min(), np.quantile(stack, 0.95), 14)
    for ax, k in zip(axes, ks):
        ax.contour(surface.x, surface.y, means[k], levels=levels, cmap="viridis", linewidths=1)
        ax.plot(0, 0, "k+", ms=8)
        ax.set(title=f"$L_{{{k}}}$", xlabel="direction 1", aspect="equal")
    axes[0].set_ylabel("direction 2")
    fig.suptitle("loss surfaces of nested subsets (same plane, same levels)")
    return fig


def difference_map_axes(ax, surface, diff: np.ndarray, k: int):
    """|L_{k+1} − L_k| (``diff``, grid layout of ``surface``) as a filled contour on the plane
    of a :class:`~toolkit.landscape_convergence.PlaneLosses`, log colour scale; returns the
    contour set (for a colour bar, e.g. with ``format=LogFormatterSciNotation()``). Four
    decades below the maximum are shown; smaller values take the lowest colour."""
    from matplotlib.colors import LogNorm

    positive = diff[diff > 0]
    top = float(diff.max()) if positive.size else 1.0
    low = max(float(positive.min()) if positive.size else 1e-12, top * 1e-4)  # 4 decades
    levels = 10.0 ** np.arange(np.floor(np.log10(low)), np.ceil(np.log10(top)) + 0.25, 0.5)
    cs = ax.contourf(surface.x, surface.y, np.clip(diff, low, None), levels=levels,
                     norm=LogNorm(), cmap="viridis")
    ax.plot(0, 0, "w+", ms=10)
    ax.set(xlabel="direction 1", ylabel="direction 2", aspect="equal",
           title=f"$|L_{{{k + 1}}} - L_{{{k}}}|$ on the plane")
    return cs
