"""Figures for loss landscapes: contours with trajectories, 3-D surfaces and 1-D cuts.

Functions that draw one panel take ``ax=None`` and return the Axes; multi-panel ones return the
Figure. Inputs are the result objects of :mod:`toolkit.landscape` (``Surface``,
``Interpolation``). Hessian figures are in :mod:`toolkit.plotting.hessian`, the slider panel in
:mod:`toolkit.widgets.landscape`.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .._deprecated import moved
from .base import axes_or_new, new_figure

__all__ = ["log_levels", "contour", "compare_contours", "surface_3d", "interpolation"]


def log_levels(values: np.ndarray, n: int = 20) -> np.ndarray:
    """``n`` log-spaced contour levels from the smallest to the largest finite value.

    Loss surfaces are steep away from the minimum and flat near it; log spacing shows both the
    basin and the walls. Non-positive values are clipped to a small fraction of the maximum."""
    finite = np.asarray(values)[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("the surface has no finite values to draw.")
    hi = float(finite.max())
    lo = float(finite[finite > 0].min()) if np.any(finite > 0) else hi * 1e-3
    if hi <= lo:
        hi = lo * (1 + 1e-6)
    return np.geomspace(lo, hi, n)


def contour(surface, *, metric: str = "loss", trajectory: np.ndarray | None = None,
            levels: int | np.ndarray = 20, log: bool = True, ax=None, title: str | None = None,
            cmap: str = "viridis", colorbar: bool = True, label_trajectory: str = "trajectory"):
    """Contour plot of a :class:`toolkit.landscape.Surface` (log-spaced levels by default), with an
    optional trajectory (T×2 coordinates, e.g. ``PCAPlane.coords``) drawn on top."""
    ax = axes_or_new(ax)
    z = surface.metrics[metric]
    if isinstance(levels, int):
        levels = log_levels(z, levels) if log else np.linspace(np.nanmin(z), np.nanmax(z), levels)
    zz = np.clip(z, levels[0], None) if log else z
    cs = ax.contourf(surface.x, surface.y, zz, levels=levels, cmap=cmap,
                     norm=LogNorm(levels[0], levels[-1]) if log else None, extend="both")
    ax.contour(surface.x, surface.y, zz, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    if np.isnan(z).any():
        ax.contourf(surface.x, surface.y, np.isnan(z).astype(float), levels=[0.5, 1.5],
                    colors="none", hatches=["xx"])
    if trajectory is not None:
        traj = np.asarray(trajectory)
        ax.plot(traj[:, 0], traj[:, 1], "-o", color="w", ms=3, lw=1.2, mec="k", mew=0.5,
                label=label_trajectory)
        ax.plot(*traj[0], "s", color="tab:red", ms=6, label="start")
        ax.plot(*traj[-1], "*", color="tab:orange", ms=11, mec="k", label="end")
        ax.legend(loc="upper right", fontsize="small", frameon=True)
    else:
        ax.plot(0, 0, "*", color="tab:orange", ms=11, mec="k")
    if colorbar:
        ax.figure.colorbar(cs, ax=ax, label=metric, format="%.3g")
    ax.set(xlabel="direction 1", ylabel="direction 2", title=title or f"{metric} surface")
    ax.set_aspect("auto")
    return ax


def compare_contours(surfaces: Mapping[str, object], *, metric: str = "loss",
                     n_levels: int = 20, shared_levels: bool = True, width: float = 4.2) -> Figure:
    """Side-by-side contour plots (one per entry of ``surfaces``) with shared log levels, so that
    equal colours mean equal losses — the way Li et al. (arXiv 1712.09913) compare networks."""
    if not surfaces:
        raise ValueError("surfaces is empty.")
    fig, axes = new_figure(len(surfaces), width=width)
    axes = np.atleast_1d(axes)
    levels = n_levels
    if shared_levels:
        levels = log_levels(np.concatenate([s.metrics[metric].ravel() for s in surfaces.values()]),
                            n_levels)
    for ax, (name, surf) in zip(axes, surfaces.items()):
        contour(surf, metric=metric, levels=levels, ax=ax, title=name,
                colorbar=ax is axes[-1])
    return fig


def surface_3d(surface, *, metric: str = "loss", log: bool = False, ax=None,
               title: str | None = None, cmap: str = "viridis", floor: float = 1e-12):
    """3-D view of a surface (optionally of log10 of the metric; values below ``floor`` are then
    drawn at ``floor`` and the z label says so). Returns the 3-D Axes."""
    if ax is None:
        fig = plt.figure(figsize=(5, 4), layout="constrained")
        ax = fig.add_subplot(projection="3d")
    gx, gy = np.meshgrid(surface.x, surface.y)
    z = surface.metrics[metric]
    clipped = bool(log and np.any(z < floor))
    z = np.log10(np.clip(z, floor, None)) if log else z
    ax.plot_surface(gx, gy, z, cmap=cmap, linewidth=0, antialiased=True, rcount=len(surface.y),
                    ccount=len(surface.x))
    ax.set(xlabel="direction 1", ylabel="direction 2",
           zlabel=(f"log10 {metric}" + (f" (< {floor:g} drawn at {floor:g})" if clipped else "")
                   if log else metric), title=title or f"{metric} surface")
    return ax


def interpolation(result, *, ax=None, title: str | None = None, label: str | None = None,
                  mark: tuple[float, ...] = (0.0, 1.0)):
    """A 1-D cut: loss against α (log scale) and, when available, accuracy on a twin axis."""
    ax = axes_or_new(ax)
    ax.plot(result.alphas, result.loss, "-", lw=2, label=label or "loss")
    ax.set_yscale("log")
    ax.set(xlabel="α", ylabel="loss", title=title or "1-D interpolation")
    for a in mark:
        ax.axvline(a, color="0.6", ls=":", lw=1)
    if result.accuracy is not None and label is None:
        twin = ax.twinx()
        twin.plot(result.alphas, result.accuracy, "--", color="tab:orange", label="accuracy")
        twin.set_ylabel("accuracy")
        twin.set_ylim(0, 1.02)
        twin.grid(False)
        lines = ax.get_lines()[:1] + twin.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    return ax


# Old names kept for one release: the Hessian figures and the slider panel moved out.
__getattr__ = moved(__name__, {
    "esd": "toolkit.plotting.hessian:hessian_density",
    "top_eigenvalue_gaps": "toolkit.plotting.hessian:top_eigenvalue_gaps",
    "lambda_max_curve": "toolkit.plotting.hessian:lambda_max_curve",
    "class_curvature": "toolkit.plotting.hessian:class_curvature",
    "surface_panel": "toolkit.widgets.landscape:surface_panel",
})
