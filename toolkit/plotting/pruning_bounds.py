"""Figures for compression bounds of pruned networks (notebook 11): the per-layer operator-norm
errors, the three parameter counts, the bound's two terms next to the test error against sparsity,
and, for one pruned model, each training point's dense margin against twice its deviation.

Inputs are the DataFrames of :mod:`toolkit.pruning_bounds` (``layer_table`` rows with ``method`` and
``amount`` columns added; the notebook's long ``sweep``) and tensors. Every function returns a
matplotlib Axes or Figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .base import axes_or_new, new_figure

__all__ = ["layer_errors_plot", "counts_plot", "bound_plot", "bound_figure", "margin_scatter",
           "bound_bars"]

_ENCODING_COLORS = {"dense": "C7", "sparse": "C0", "sketch": "C2"}
_FLOOR = 1e-3  # log axes: zero terms are drawn at this floor


def layer_errors_plot(layers: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Per-layer :math:`\\|W - W_s\\|_2` against sparsity, one line per (method, layer).

    ``layers``: rows of :func:`toolkit.pruning_bounds.layer_table` with ``method`` and ``amount``
    columns added."""
    ax = axes_or_new(ax)
    styles = ["-", "--", ":", "-."]
    for i, (method, grp) in enumerate(layers.groupby("method", sort=False)):
        for j, (name, rows) in enumerate(grp.groupby("name", sort=False)):
            rows = rows.sort_values("amount")
            ax.plot(rows["amount"], rows["op_error"], styles[j % len(styles)], color=f"C{i}",
                    marker="o", markersize=3, label=f"{method} · {name}")
    ax.set(xlabel="sparsity", ylabel=r"$\|W - W_s\|_2$", title="what pruning changes, per layer")
    ax.legend(fontsize="xx-small")
    return ax


def counts_plot(sweep: pd.DataFrame, *, method: str = "magnitude", ax: Axes | None = None) -> Axes:
    """The parameter count ``q`` of each encoding against sparsity (log axis)."""
    ax = axes_or_new(ax)
    rows = sweep[(sweep["method"] == method) & (sweep["deviation"] == sweep["deviation"].iloc[0])]
    for enc, grp in rows.groupby("encoding", sort=False):
        grp = grp.sort_values("amount")
        ax.plot(grp["amount"], grp["q"], marker="o", markersize=3,
                linewidth=3.5 if enc == "dense" else 1.5, color=_ENCODING_COLORS.get(enc),
                label=enc)
    ax.set(yscale="log", xlabel="sparsity", ylabel="numbers stored (q)",
           title="parameter count of the compressed net")
    ax.legend(fontsize="x-small")
    return ax


def bound_plot(sweep: pd.DataFrame, *, method: str = "magnitude", ax: Axes | None = None) -> Axes:
    """The bound of each encoding, its margin term (measured and from layer norms) and the test
    error against sparsity, on a log axis with the vacuous line at 1 (zeros drawn at 1e-3)."""
    ax = axes_or_new(ax)
    rows = sweep[sweep["method"] == method]
    measured = rows[rows["deviation"] == "measured"]
    for enc, grp in measured.groupby("encoding", sort=False):
        grp = grp.sort_values("amount")
        ax.plot(grp["amount"], grp["bound"], marker="o", markersize=3,
                linewidth=3.5 if enc == "dense" else 1.5, color=_ENCODING_COLORS.get(enc),
                label=f"bound ({enc} q)")
    one = measured[measured["encoding"] == measured["encoding"].iloc[0]].sort_values("amount")
    ax.plot(one["amount"], np.maximum(one["margin_loss"], _FLOOR), "k--", marker="s",
            markersize=3, label="margin term (measured)")
    norms = rows[rows["deviation"] == "norms"]
    if len(norms):
        norms = norms[norms["encoding"] == norms["encoding"].iloc[0]].sort_values("amount")
        ax.plot(norms["amount"], np.maximum(norms["margin_loss"], _FLOOR), ":", color="0.4",
                label=r"margin term (from $\|W-W_s\|_2$)")
    ax.plot(one["amount"], np.maximum(one["test_err"], _FLOOR), color="C3", linewidth=2.5,
            label="test error (measured)")
    ax.axhline(1.0, color="0.6", linewidth=0.8)
    ax.text(one["amount"].min(), 1.05, "vacuous above 1", fontsize=7, color="0.4", va="bottom")
    ax.set(yscale="log", xlabel="sparsity", ylabel="error / bound",
           title=f"{method} pruning: bound vs test error")
    ax.legend(fontsize="xx-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ax


def bound_figure(layers: pd.DataFrame, sweep: pd.DataFrame, *, method: str = "magnitude"
                 ) -> Figure:
    """Three panels: :func:`layer_errors_plot`, :func:`counts_plot`, :func:`bound_plot`."""
    fig, axes = new_figure(3, width=4.8, height=3.6)
    layer_errors_plot(layers, ax=axes[0])
    counts_plot(sweep, method=method, ax=axes[1])
    bound_plot(sweep, method=method, ax=axes[2])
    return fig


def margin_scatter(margins: torch.Tensor, deviation: torch.Tensor, wrong: torch.Tensor | None = None,
                   *, ax: Axes | None = None) -> Axes:
    """Each training point's dense margin against twice its deviation (log–log where positive).

    Points on or below the diagonal (margin ≤ 2·deviation) count in the bound's margin term;
    ``wrong`` (bool per point) marks those the pruned net actually misclassifies."""
    ax = axes_or_new(ax)
    m = np.asarray(torch.as_tensor(margins, dtype=torch.float64))
    d = 2 * np.asarray(torch.as_tensor(deviation, dtype=torch.float64))
    bad = np.zeros_like(m, dtype=bool) if wrong is None else np.asarray(wrong, dtype=bool)
    lo = max(min(m[m > 0].min(initial=1.0), d[d > 0].min(initial=1.0)), 1e-3)
    hi = max(m.max(initial=1.0), d.max(initial=1.0)) * 1.5
    m_c, d_c = np.clip(m, lo, None), np.clip(d, lo, None)
    ax.scatter(d_c[~bad], m_c[~bad], s=5, alpha=0.4, color="C0", label="pruned net still right")
    ax.scatter(d_c[bad], m_c[bad], s=7, alpha=0.7, color="C3", label="pruned net wrong")
    ax.plot([lo, hi], [lo, hi], color="0.3", linewidth=1)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
           xlabel="2 × deviation of the logits", ylabel="dense margin",
           title=f"below the line: {np.mean(m <= d):.1%} of training points")
    ax.legend(fontsize="xx-small", loc="upper left")
    return ax


def bound_bars(table: pd.DataFrame, test_err: float, *, ax: Axes | None = None) -> Axes:
    """The bound's terms for one pruned model as bars on a log axis: the pruned net's training and
    test error, the margin term (shared by every count), then the complexity term of each count,
    labelled with its total bound (margin + complexity). ``table``:
    :func:`toolkit.pruning_bounds.bound_table`."""
    ax = axes_or_new(ax)
    encodings = list(table["encoding"])
    heights = [float(table["train_error"].iloc[0]), test_err, float(table["margin_loss"].iloc[0]),
               *table["complexity"].astype(float)]
    labels = ["train error\n(pruned)", "test error\n(pruned)", "margin\nterm",
              *[f"complexity\n{e}\nq={q}" for e, q in zip(encodings, table["q"])]]
    colors = ["C1", "C3", "0.3", *[_ENCODING_COLORS.get(e, "C0") for e in encodings]]
    x = np.arange(len(heights))
    ax.bar(x, np.maximum(heights, _FLOOR), color=colors)
    for i, b in enumerate(table["bound"].astype(float)):
        ax.text(3 + i, max(heights[3 + i], _FLOOR) * 1.1, f"bound\n{b:.2f}", ha="center",
                va="bottom", fontsize=7)
    for i in range(3):
        ax.text(i, max(heights[i], _FLOOR) * 1.1, f"{heights[i]:.3f}", ha="center", va="bottom",
                fontsize=7)
    ax.axhline(1.0, color="0.6", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set(yscale="log", ylim=(_FLOOR / 2, 8 * max(heights)), ylabel="error / term",
           title="the bound's two terms")
    return ax
