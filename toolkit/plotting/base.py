"""One seaborn theme for every figure, and the plots all notebooks share."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .._deprecated import moved

__all__ = ["set_theme", "new_figure", "axes_or_new", "learning_curves"]

_THEME_SET = False


def set_theme() -> None:
    """Apply the toolkit's seaborn theme (idempotent)."""
    global _THEME_SET
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind",
                  rc={"figure.dpi": 100, "axes.titleweight": "bold", "legend.frameon": False})
    _THEME_SET = True


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.5, height: float = 3.4,
               **kwargs) -> tuple[Figure, object]:
    """A figure with ``nrows × ncols`` axes of a readable default size, in the toolkit theme."""
    if not _THEME_SET:
        set_theme()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             layout="constrained", squeeze=True, **kwargs)
    return fig, axes


def axes_or_new(ax=None, **kwargs):
    """``ax`` itself, or the Axes of a new one-panel figure (``kwargs`` go to :func:`new_figure`)."""
    if ax is not None:
        return ax
    _, ax = new_figure(**kwargs)
    return ax


def learning_curves(history: pd.DataFrame, metrics: Sequence[str] = ("loss", "acc"), *,
                    title: str | None = None, logy_loss: bool = True) -> Figure:
    """Train/test curves for each metric in ``metrics`` against the epoch (one panel each)."""
    metrics = [m for m in metrics if f"train_{m}" in history or f"test_{m}" in history]
    if not metrics:
        raise ValueError("history has none of the requested metrics; columns are "
                         f"{list(history.columns)}.")
    fig, axes = new_figure(len(metrics))
    axes = [axes] if len(metrics) == 1 else list(axes)
    for ax, metric in zip(axes, metrics):
        for split in ("train", "test"):
            col = f"{split}_{metric}"
            if col in history:
                ax.plot(history["epoch"], history[col], label=split, marker=".")
        ax.set_xlabel("epoch")
        ax.set_ylabel({"loss": "loss", "acc": "accuracy"}.get(metric, metric))
        if metric == "loss" and logy_loss:
            ax.set_yscale("log")
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


# The tour's slider panel moved to the presentation layer that may recompute; the old name
# works for one release (resolved lazily by name: plotting imports nothing from widgets).
__getattr__ = moved(__name__, {"training_panel": "toolkit.widgets.tour:training_panel"})
