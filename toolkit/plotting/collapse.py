"""Figures for neural collapse (``toolkit.collapse``): metric curves through the terminal phase,
class-mean Gram matrices against the simplex ETF, 2-D/3-D views of class means, minority collapse,
and per-layer tables. The epoch-slider panel is in :mod:`toolkit.widgets.collapse`.

Every function returns a matplotlib Figure (or draws into ``ax`` and returns it); none computes
anything the analysis module does not already provide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .. import collapse
from .._deprecated import moved
from .base import new_figure

__all__ = ["DEFAULT_METRICS", "LABELS", "metrics_vs_epoch", "gram_heatmap", "cosine_heatmap",
           "cosine_heatmaps", "class_means_view", "minority_collapse_plot", "layerwise_plot",
           "compare_bars"]

DEFAULT_METRICS = ("nc1", "equinorm_means", "equiangularity", "etf_error", "self_duality",
                   "ncc_mismatch")
LABELS = {
    "nc1": r"NC1  Tr$(\Sigma_W\Sigma_B^+)/C$",
    "equinorm_means": "NC2 equinorm (means)",
    "equinorm_weights": "NC2 equinorm (weights)",
    "equiangularity": "NC2 equiangularity",
    "equiangularity_weights": "NC2 equiangularity (W)",
    "etf_error": "NC2 distance to ETF",
    "self_duality": "NC3 self-duality",
    "ncc_mismatch": "NC4 NCC mismatch",
    "cdnv": "CDNV",
}


def _to_numpy(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def metrics_vs_epoch(history: pd.DataFrame, metrics: Sequence[str] | None = None, *,
                     x: str = "epoch", ax=None, mark_zero_error: bool = True,
                     floor: float = 1e-6, title: str | None = None):
    """NC metrics against ``x`` (epoch or step) on a log y-axis, with a dashed line at the epoch
    where the training error first reaches zero (``train_acc == 1``), the start of Papyan et al.'s
    terminal phase (arXiv:2008.08186). Values below ``floor`` (e.g. an NCC mismatch of exactly 0)
    are drawn at ``floor``. Rows without metrics (epochs the callback skipped) are dropped."""
    if x not in history:
        raise ValueError(f"history has no column {x!r}; columns are {list(history.columns)}")
    metrics = [m for m in (metrics or DEFAULT_METRICS) if m in history]
    if not metrics:
        raise ValueError("history holds none of the NC metrics; record them with "
                         "toolkit.collapse.CollapseCallback")
    if ax is None:
        fig, ax = new_figure(width=6.0, height=3.8)
    else:
        fig = ax.figure
    for m in metrics:
        rows = history[[x, m]].dropna()
        ax.plot(rows[x], np.maximum(rows[m].to_numpy(dtype=float), floor), marker=".",
                label=LABELS.get(m, m))
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("metric (log scale)")
    if mark_zero_error and "train_acc" in history:
        info = collapse.terminal_phase(history)
        if info["zero_error_epoch"] is not None:
            ax.axvline(info["zero_error_epoch"], color="k", ls="--", lw=1,
                       label=f"zero training error (epoch {info['zero_error_epoch']})")
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    return fig


def gram_heatmap(features, labels, *, global_mean: str = "class_means", weight=None,
                 title: str | None = None) -> Figure:
    """Normalised Gram matrix ``G/||G||_F`` of the centred class means next to the simplex-ETF
    target ``(I - 11^T/C)/sqrt(C-1)`` (and of the classifier rows if ``weight`` is given), on one
    colour scale; the titles carry the ETF error (Papyan et al. 2020, arXiv:2008.08186)."""
    geo = collapse.mean_geometry(torch.as_tensor(features).double(), labels, center=global_mean)
    c = geo.means.shape[0]
    gram = _to_numpy(geo.means @ geo.means.T)
    gram /= np.linalg.norm(gram)
    target = (np.eye(c) - 1.0 / c) / np.sqrt(c - 1)
    panels = [(gram, f"class means  (ETF error {np.linalg.norm(gram - target):.3f})"),
              (target, "simplex ETF target")]
    if weight is not None:
        w = _to_numpy(weight)
        gw = w @ w.T
        gw /= np.linalg.norm(gw)
        panels.append((gw, "classifier rows  W W$^T$"))
    fig, axes = new_figure(len(panels), width=3.6, height=3.3)
    vmax = max(np.abs(p).max() for p, _ in panels)
    for ax, (mat, name) in zip(np.atleast_1d(axes), panels):
        im = ax.imshow(mat, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.grid(False)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        ax.tick_params(labelsize=7)
    fig.colorbar(im, ax=list(np.atleast_1d(axes)), shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def cosine_heatmap(geometry: collapse.MeanGeometry, *, ax=None, title: str | None = None):
    """Cosines between class means (a :class:`toolkit.collapse.MeanGeometry`), annotated; an
    orthogonal frame is the identity, a simplex ETF has -1/(C-1) off the diagonal."""
    if ax is None:
        fig, ax = new_figure(width=3.8, height=3.4)
    else:
        fig = ax.figure
    cos = _to_numpy(geometry.cosines)
    c = cos.shape[0]
    ax.imshow(cos, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.grid(False)
    if c <= 10:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{cos[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(cos[i, j]) > 0.6 else "black")
    labels = [f"{k}\n(n={int(n)})" for k, n in enumerate(_to_numpy(geometry.counts))]
    ax.set_xticks(range(c))
    ax.set_xticklabels(labels, fontsize=6)
    ax.set_yticks(range(c))
    ax.set_yticklabels(range(c), fontsize=7)
    summary = geometry.as_dict()
    ax.set_title(title or f"cos(mu_c, mu_c'): max |off-diag| {summary['max_abs_cos']:.2f}",
                 fontsize=9)
    return fig


def cosine_heatmaps(geometries: Mapping[str, collapse.MeanGeometry], *,
                    title: str | None = None) -> Figure:
    """Several :func:`cosine_heatmap` panels side by side, one per named geometry."""
    fig, axes = new_figure(len(geometries), width=4.4, height=4.0)
    for ax, (name, geo) in zip(np.atleast_1d(axes), geometries.items()):
        s = geo.as_dict()
        cosine_heatmap(geo, ax=ax, title=f"{name}: max |cos| {s['max_abs_cos']:.2f}, "
                                         f"spread {s['std_cos']:.2f}")
    if title:
        fig.suptitle(title)
    return fig


def _projection_basis(means: torch.Tensor, dims: int) -> torch.Tensor:
    _, _, vh = torch.linalg.svd(means, full_matrices=False)
    basis = vh[:dims].T
    if basis.shape[1] < dims:  # pad (e.g. C = 2 in 2-D)
        basis = torch.cat([basis, torch.zeros(basis.shape[0], dims - basis.shape[1],
                                              dtype=basis.dtype)], 1)
    return basis


def class_means_view(features, labels, *, dims: int = 2, weight=None,
                     global_mean: str = "class_means", max_points: int = 400, ax=None,
                     seed: int = 0, title: str | None = None):
    """Features and class means projected on the top ``dims`` (2 or 3) principal directions of
    the centred class means. With C = 3 (2-D) or C = 4 (3-D) the projection is exact and a
    collapsed network shows the simplex itself: points on the vertices of a triangle or a
    tetrahedron (Papyan et al. 2020, arXiv:2008.08186). ``weight`` adds the classifier rows as
    arrows, rescaled to the mean norm of the class means (NC3 makes them point at the means)."""
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    h = torch.as_tensor(features).detach().double().cpu()
    y = torch.as_tensor(labels).cpu()
    means, g, _ = collapse.class_means(h, y, global_mean=global_mean)
    centred = means - g
    basis = _projection_basis(centred, dims)
    gen = np.random.default_rng(seed)
    keep = gen.permutation(len(h))[:max_points]
    pts = _to_numpy((h[keep] - g) @ basis)
    mpts = _to_numpy(centred @ basis)
    if ax is None:
        fig = plt.figure(figsize=(4.6, 4.2), layout="constrained")
        ax = fig.add_subplot(projection="3d" if dims == 3 else None)
    else:
        fig = ax.figure
    palette = plt.get_cmap("tab10")
    yk = _to_numpy(y[keep]).astype(int)
    for k in range(len(mpts)):
        sel = yk == k
        ax.scatter(*pts[sel].T, s=8, alpha=0.35, color=palette(k % 10))
        ax.scatter(*mpts[k], s=120, marker="*", color=palette(k % 10), edgecolor="k",
                   label=f"class {k}")
    small = len(mpts) <= dims + 1  # the projection is exact: draw the simplex's edges
    if small:
        for i in range(len(mpts)):
            for j in range(i + 1, len(mpts)):
                ax.plot(*np.stack([mpts[i], mpts[j]]).T, color="grey", lw=0.8, alpha=0.7)
    if weight is not None:
        w = _to_numpy(torch.as_tensor(weight).detach().double().cpu() @ basis)
        scale = np.linalg.norm(mpts, axis=1).mean() / max(np.linalg.norm(w, axis=1).mean(), 1e-12)
        for k, row in enumerate(w * scale):
            ax.plot(*np.stack([np.zeros(dims), row]).T, color=palette(k % 10), lw=2, alpha=0.9)
    if dims == 2:
        ax.set_aspect("equal", adjustable="datalim")
    else:
        ax.set_box_aspect((1, 1, 1))
        half = np.abs(np.concatenate([pts, mpts])).max()
        ax.set(xlim=(-half, half), ylim=(-half, half), zlim=(-half, half))
    ax.set_title(title or f"features on the class-mean plane ({dims}-D)", fontsize=9)
    if small:
        ax.legend(fontsize=7, loc="best")
    return fig


def minority_collapse_plot(curve: pd.DataFrame) -> Figure:
    """Minority collapse (Fang et al. 2021, arXiv:2101.12699) from a table with one row per
    imbalance ratio: columns ``ratio``, ``minority_cos`` and ``minority_distance`` (and optionally
    ``majority_cos``, ``minority_norm``), as :func:`toolkit.collapse.minority_collapse` returns
    them per ratio. Left, the mean cosine between minority (and majority) classifier rows;
    right, the distance between minority rows relative to the mean row norm, on a log scale,
    falling to 0 as the rows merge. x: imbalance ratio."""
    fig, (ax_cos, ax_dist) = new_figure(2, width=4.6, height=3.4)
    ax_cos.plot(curve["ratio"], curve["minority_cos"], marker="o", label="minority classes")
    if "majority_cos" in curve:
        ax_cos.plot(curve["ratio"], curve["majority_cos"], marker="s", label="majority classes")
    ax_cos.axhline(1.0, color="k", lw=0.8, ls=":")
    ax_cos.set(xscale="log", xlabel="imbalance ratio  n_major / n_minor",
               ylabel="mean cosine between classifier rows")
    ax_cos.legend(fontsize=8)
    ax_dist.plot(curve["ratio"], np.maximum(curve["minority_distance"].to_numpy(float), 1e-8),
                 marker="o", label="minority rows: mean distance")
    if "minority_norm" in curve:
        ax_dist.plot(curve["ratio"], curve["minority_norm"], marker="^",
                     label="minority rows: mean norm")
    ax_dist.set(xscale="log", yscale="log", xlabel="imbalance ratio  n_major / n_minor",
                ylabel="relative to the mean row norm")
    ax_dist.legend(fontsize=8)
    fig.suptitle("minority collapse in the unconstrained-features model")
    return fig


def layerwise_plot(table: pd.DataFrame, metrics: Sequence[str] = ("nc1", "max_abs_cos",
                                                                   "etf_error"), *, ax=None):
    """Per-layer collapse (a :func:`toolkit.collapse.layerwise_metrics` table) on a log scale:
    NC1 and the orthogonal-frame error (max |cos| between raw class means) in every layer
    (Dang et al. 2023, arXiv:2301.00437)."""
    if ax is None:
        fig, ax = new_figure(width=5.0, height=3.4)
    else:
        fig = ax.figure
    for m in metrics:
        if m in table:
            ax.plot(table["depth"], np.maximum(table[m].to_numpy(dtype=float), 1e-12),
                    marker="o", label=m)
    ax.set_yscale("log")
    ax.set_xticks(table["depth"])
    ax.set_xticklabels(table["layer"], fontsize=8)
    ax.set_xlabel("layer (input of)")
    ax.legend(fontsize=8)
    return fig


def compare_bars(results: Mapping[str, Mapping[str, float]], metric: str = "nc1", *, ax=None,
                 title: str | None = None):
    """Bar chart of one metric across runs, e.g. ``{"label smoothing": metrics.as_dict(), ...}``."""
    if ax is None:
        fig, ax = new_figure(width=4.4, height=3.2)
    else:
        fig = ax.figure
    names = list(results)
    values = [float(results[n][metric]) for n in names]
    ax.bar(names, values, color=[plt.get_cmap("tab10")(i) for i in range(len(names))])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(LABELS.get(metric, metric))
    if title:
        ax.set_title(title, fontsize=10)
    return fig


# epoch_panel moved to the widgets layer (plotting never imports widgets; resolved by name)
__getattr__ = moved(__name__, {"epoch_panel": "toolkit.widgets.collapse:epoch_panel"})
