"""Figures for loss landscapes and curvature: contours with trajectories, 3-D surfaces, 1-D cuts,
Hessian eigenvalue densities, λ_max along training, and the notebook's surface panel.

Functions that draw one panel take ``ax=None`` and return the Axes; multi-panel ones return the
Figure. Inputs are the result objects of :mod:`toolkit.landscape` and :mod:`toolkit.hessian`.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .base import new_figure


def _axes(ax, **kwargs):
    if ax is not None:
        return ax
    _, ax = new_figure(**kwargs)
    return ax


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
    ax = _axes(ax)
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
               title: str | None = None, cmap: str = "viridis"):
    """3-D view of a surface (optionally of log10 of the metric). Returns the 3-D Axes."""
    if ax is None:
        fig = plt.figure(figsize=(5, 4), layout="constrained")
        ax = fig.add_subplot(projection="3d")
    gx, gy = np.meshgrid(surface.x, surface.y)
    z = surface.metrics[metric]
    z = np.log10(np.clip(z, 1e-12, None)) if log else z
    ax.plot_surface(gx, gy, z, cmap=cmap, linewidth=0, antialiased=True, rcount=len(surface.y),
                    ccount=len(surface.x))
    ax.set(xlabel="direction 1", ylabel="direction 2",
           zlabel=f"log10 {metric}" if log else metric, title=title or f"{metric} surface")
    return ax


def interpolation(result, *, ax=None, title: str | None = None, label: str | None = None,
                  mark: tuple[float, ...] = (0.0, 1.0)):
    """A 1-D cut: loss against α (log scale) and, when available, accuracy on a twin axis."""
    ax = _axes(ax)
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


def esd(density, *, ax=None, log: bool = True, eigenvalues=None, title: str | None = None,
        floor: float = 1e-6):
    """Hessian eigenvalue density from :func:`toolkit.hessian.spectral_density` (log scale by
    default so that the outliers show next to the bulk), with optional eigenvalue markers."""
    ax = _axes(ax)
    d = np.clip(density.density, floor, None) if log else density.density
    ax.fill_between(density.grid, d, floor if log else 0, alpha=0.35)
    ax.plot(density.grid, d, lw=1.2)
    if log:
        ax.set_yscale("log")
    if eigenvalues is not None:
        for i, lam in enumerate(np.atleast_1d(eigenvalues)):
            ax.axvline(lam, color="tab:red", lw=0.8, ls="--",
                       label="top eigenvalues (Lanczos)" if i == 0 else None)
        ax.legend(loc="upper right")
    ax.set(xlabel="eigenvalue λ", ylabel="density", title=title or "Hessian spectral density")
    return ax


def top_eigenvalue_gaps(eigenvalues, *, n_outliers: int | None = None, ax=None,
                        title: str | None = None):
    """The top eigenvalues on a log scale, with the expected number of outliers marked
    (Papyan's class structure: C − 1 for cross-entropy with C classes)."""
    ax = _axes(ax)
    ev = np.asarray(eigenvalues)
    ax.semilogy(np.arange(1, len(ev) + 1), np.clip(ev, 1e-12, None), "o-")
    if n_outliers is not None:
        ax.axvline(n_outliers + 0.5, color="tab:red", ls="--",
                   label=f"{n_outliers} outliers expected")
        ax.legend()
    ax.set(xlabel="index i", ylabel="λ_i", title=title or "top Hessian eigenvalues")
    return ax


def lambda_max_curve(history: pd.DataFrame | Mapping[str, pd.DataFrame], *,
                     lr: float | Mapping[str, float] | None = None, column: str = "lambda_max",
                     ax=None, title: str | None = None):
    """λ_max against the epoch, with the stability threshold 2/η (Cohen et al. 2021,
    arXiv 2103.00065). ``history`` is one DataFrame or a dict label → DataFrame, ``lr`` one
    learning rate or a dict label → lr."""
    ax = _axes(ax)
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
    ax = _axes(ax, width=6)
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


def surface_panel(model, loss_fn, data, trajectory, *, epochs=None, steps: int = 15,
                  span: float = 1.0, seed: int = 0, batch_size: int | None = None):
    """An ipywidgets panel: an epoch slider shows the loss surface around that iterate (along two
    filter-normalised random directions, fixed seed), with span and resolution sliders.

    ``trajectory`` is a list of parameter dicts (``TrajectoryRecorder.trajectory``) and ``epochs``
    their epoch numbers. Headless, it draws the figure for the initial slider values once.
    """
    import ipywidgets as widgets

    from .. import landscape
    from ..widgets import panel

    traj = list(getattr(trajectory, "trajectory", trajectory))
    epochs = list(getattr(trajectory, "epochs", epochs) or range(len(traj)))
    cache: dict = {}

    def draw(fig, index: int, span: float, steps: int):
        key = (index, round(span, 6), steps)
        if key not in cache:
            at = landscape.with_parameters(model, traj[index])
            d1 = landscape.random_direction(at, seed=seed)
            d2 = landscape.random_direction(at, seed=seed + 1)
            cache[key] = landscape.surface_2d(at, loss_fn, data, d1, d2, xrange=(-span, span),
                                              yrange=(-span, span), steps=steps,
                                              batch_size=batch_size, progress=False)
        surf = cache[key]
        ax1, ax2 = fig.subplots(1, 2)
        contour(surf, ax=ax1, title=f"epoch {epochs[index]}: loss {surf.center_loss:.3g}")
        mid = np.abs(surf.y).argmin()
        ax2.semilogy(surf.x, surf.loss[mid])
        title = "cut along direction 1"
        if surf.accuracy is not None:
            title += f" (accuracy {surf.accuracy[mid, np.abs(surf.x).argmin()]:.3f} at 0)"
        ax2.set(xlabel="direction 1", ylabel="loss along direction 1", title=title)

    return panel(
        draw, figsize=(10, 3.8),
        index=widgets.IntSlider(value=len(traj) - 1, min=0, max=len(traj) - 1,
                                description="checkpoint"),
        span=widgets.FloatSlider(value=span, min=0.1, max=3.0, step=0.1, description="span"),
        steps=widgets.IntSlider(value=steps, min=5, max=41, step=2, description="resolution"),
    )
