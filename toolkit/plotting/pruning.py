"""Figures for pruning: singular values before/after pruning, accuracy and spectral error against
sparsity, tail exponents against sparsity, and lottery-ticket curves (inputs: tensors, layers and
the DataFrames of :mod:`toolkit.pruning`). Every function returns a matplotlib Figure or Axes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from .. import spectra as tk_spectra
from .base import axes_or_new, new_figure

__all__ = ["singular_values_plot", "pruning_curves", "alpha_curves", "lottery_plot",
           "norms_and_gap", "retraining_plot"]


def singular_values_plot(weight, pruned: Mapping[str, torch.Tensor], *, ax: Axes | None = None,
                         top: int | None = None) -> Axes:
    """Singular values (sorted, log scale) of a weight before pruning and of each pruned version
    (``pruned``: label → tensor or layer). Conv weights are read as ``(out, in·k·k)`` matrices.
    Zero singular values are not drawn; a curve that stops early shows the rank the pruning lost."""
    ax = axes_or_new(ax)

    def svals(w):
        w = tk_spectra.effective_weight(w) if isinstance(w, nn.Module) else w
        w = w.detach().double().reshape(w.shape[0], -1)
        return torch.linalg.svdvals(w).cpu().numpy()

    s0 = svals(weight)
    n = top or len(s0)
    ax.plot(np.arange(1, n + 1), s0[:n], color="black", linewidth=2, label="dense")
    for label, w in pruned.items():
        s = svals(w)[:n]
        rank = int((s > 1e-10 * max(s0[0], 1e-300)).sum())  # zero singular values: rank lost
        ax.plot(np.arange(1, rank + 1), s[:rank], label=f"{label} (rank {rank})"
                if rank < len(s) else label)
    ax.set(yscale="log", xlabel="index i", ylabel=r"singular value $\sigma_i$")
    ax.legend(fontsize="x-small")
    return ax


def pruning_curves(sweep: pd.DataFrame, *, error: str = "operator",
                   dense_acc: float | None = None) -> Figure:
    """Two panels from :func:`toolkit.pruning.sparsity_sweep`: accuracy against sparsity for each
    method, and the spectral error (``error``: ``operator``, ``operator_max``, ``frobenius``,
    ``sv_drift`` or ``angle``) against sparsity, on a log axis (linear for the angle, in degrees).
    On the log axis the unpruned point (error 0 up to rounding) is left out, not drawn at a
    floor, and the panel says so. Compare methods at the same sparsity (a vertical slice): both
    panels change with sparsity whatever the method."""
    for col in ("method", "sparsity", "acc", error):
        if col not in sweep:
            raise ValueError(f"sweep has no column {col!r}; pass the output of "
                             "toolkit.pruning.sparsity_sweep.")
    fig, (ax_acc, ax_err) = new_figure(2)
    log = error != "angle"  # degrees in [0, 90] read best on a linear axis
    # The unpruned point's error is zero up to rounding (an SVD gives ~1e-7 degrees, not 0): on a
    # log axis it would sit at an arbitrary floor, so it is left out, and the panel says so.
    hidden = ((sweep["sparsity"] == 0) | (sweep[error] <= 0)) if log else sweep[error].isna()
    for method, grp in sweep.groupby("method", sort=False):
        grp = grp.sort_values("sparsity")
        ax_acc.plot(grp["sparsity"], grp["acc"], marker="o", label=method)
        shown = grp[~hidden.loc[grp.index]]
        ax_err.plot(shown["sparsity"], shown[error], marker="o", label=method)
    if dense_acc is not None:
        ax_acc.axhline(dense_acc, color="0.5", linestyle=":", label="dense")
    labels = {"operator": r"$\|W-W_s\|_2/\|W\|_2$ (mean over layers)",
              "operator_max": r"worst layer's $\|W-W_s\|_2/\|W\|_2$", "frobenius": r"$\|W-W_s\|_F/\|W\|_F$",
              "sv_drift": "singular-value drift", "angle": "top-k subspace angle (deg)"}
    ax_acc.set(xlabel="sparsity", ylabel="test accuracy", title="accuracy")
    ax_err.set(xlabel="sparsity", ylabel=labels.get(error, error), title="spectral error")
    if log:
        ax_err.set_yscale("log", nonpositive="mask")
    if bool(hidden.any()):
        ax_err.text(0.98, 0.02, "sparsity 0 (error 0) not drawn: log axis", fontsize="x-small",
                    color="0.35", ha="right", va="bottom", transform=ax_err.transAxes)
    ax_acc.legend(fontsize="small")
    return fig


def alpha_curves(sweep: pd.DataFrame) -> Figure:
    """Power-law exponent α of every layer (``alpha:<layer>`` columns of a sweep) against
    sparsity, one panel per layer, one line per method."""
    cols = [c for c in sweep.columns if c.startswith("alpha:")]
    if not cols:
        raise ValueError("sweep has no alpha:<layer> columns; run sparsity_sweep(alphas=True).")
    fig, axes = new_figure(len(cols), width=3.6)
    axes = np.atleast_1d(axes)
    for ax, col in zip(axes, cols):
        for method, grp in sweep.groupby("method", sort=False):
            grp = grp.sort_values("sparsity")
            ax.plot(grp["sparsity"], grp[col], marker=".", label=method)
        ax.set(title=col.split(":", 1)[1], xlabel="sparsity", ylabel=r"$\alpha$")
    axes[0].legend(fontsize="x-small")
    return fig


def lottery_plot(results: Mapping[str, pd.DataFrame], *, metric: str = "") -> Figure:
    """Ticket vs random-reinit control accuracy against the fraction of weights remaining (log
    axis), one panel per entry of ``results`` (label → ``LotteryResult.history``). The panels
    share their y-axis, so gaps and levels compare across panels (learning rates, rewinding)."""
    if not results:
        raise ValueError("results is empty: pass e.g. {'lr 0.05': result.history}.")
    suffix = f"_{metric}" if metric else ""
    fig, axes = new_figure(len(results), width=4.2, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (label, hist) in zip(axes, results.items()):
        remaining = 1 - hist["sparsity"]
        ax.plot(remaining, hist[f"ticket{suffix}"], marker="o", label="IMP ticket (rewound)")
        if f"control{suffix}" in hist:
            ax.plot(remaining, hist[f"control{suffix}"], marker="s",
                    label="same mask, random re-init")
        ax.axhline(hist[f"ticket{suffix}"].iloc[0], color="0.5", linestyle=":", label="dense")
        ax.set(xscale="log", xlabel="fraction of weights remaining", title=label)
        ax.invert_xaxis()
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize="x-small")
    return fig


def norms_and_gap(frame: pd.DataFrame, x: str, *, norms=("path_norm_1", "path_norm_2",
                                                       "operator_product"),
                  gap: str = "gap", xlabel: str | None = None, ax: Axes | None = None):
    """Capacity measures (log scale, each divided by its first value so they share an axis) and
    the generalisation gap (right axis) against ``x`` (epoch or sparsity)."""
    if ax is None:
        fig, ax = new_figure(width=4.8, height=3.4)
    else:
        fig = ax.figure
    for name in norms:
        values = frame[name].to_numpy(dtype=float)
        ax.plot(frame[x], values / values[0], marker="o", ms=3, label=name.replace("_", " "))
    ax.set_yscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("value / first value")
    right = ax.twinx()
    right.plot(frame[x], frame[gap], color="black", ls="--", marker="s", ms=3,
               label="train - test acc")
    right.set_ylabel("generalisation gap (acc)")
    right.grid(False)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="best")
    return fig


_MODE_LABELS = {"rewind_0": "ticket (rewind to θ0)", "rewind_k": "rewind to θk",
                "reinit": "same mask, re-initialised", "finetune": "fine-tune (small lr)",
                "lr_rewind": "learning-rate rewinding"}
_MODE_STYLE = {"rewind_0": ("C0", "o", "-"), "rewind_k": ("C1", "^", "-"),
               "reinit": ("C3", "s", "--"), "finetune": ("C2", "v", ":"),
               "lr_rewind": ("C4", "D", "-.")}


def retraining_plot(tables: Mapping[str, pd.DataFrame], *, metric: str = "test_acc") -> Figure:
    """Test accuracy against the fraction of weights remaining (log axis, thinning to the right),
    one line per retraining mode of :func:`toolkit.pruning.retraining_modes`, one panel per entry
    of ``tables`` (label → its DataFrame, e.g. one per learning rate), shared y-axis; the dense
    accuracy dotted."""
    if not tables:
        raise ValueError("tables is empty: pass e.g. {'lr 0.5': retraining_modes(...)}.")
    fig, axes = new_figure(len(tables), width=4.6, height=3.6, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (label, table) in zip(axes, tables.items()):
        dense = table[table["mode"] == "dense"]
        for mode, grp in table[table["mode"] != "dense"].groupby("mode", sort=False):
            grp = pd.concat([dense, grp]).sort_values("round")
            color, marker, ls = _MODE_STYLE.get(mode, (None, "o", "-"))
            ax.plot(1 - grp["sparsity"], grp[metric], color=color, marker=marker, ls=ls, ms=4,
                    label=_MODE_LABELS.get(mode, mode))
        ax.axhline(float(dense[metric].iloc[0]), color="0.5", linestyle=":", label="dense")
        ax.set(xscale="log", xlabel="fraction of weights remaining", title=label)
        ax.invert_xaxis()
    axes[0].set_ylabel(metric.replace("_", " "))
    axes[0].legend(fontsize="x-small")
    return fig
