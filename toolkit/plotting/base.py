"""One seaborn theme for every figure, and the plots all notebooks share."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

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


def training_panel(train, test, *, epochs: int = 15, batch_size: int = 64, seed: int = 0,
                   device="cpu", width: int = 32, lr: float = 0.05):
    """The tour's panel: width and learning-rate sliders retrain a one-hidden-layer MLP and redraw
    its learning curves, so a student sees under- and over-sized models and step sizes at work."""
    import ipywidgets as widgets

    from .. import data as tk_data
    from .. import models
    from .. import train as tk_train
    from ..widgets import panel

    in_dim, n_out = train.tensors[0][0].numel(), tk_data.n_classes(train)

    def draw(fig, width: int, lr: float):
        model = models.MLP(in_dim, [width], n_out)
        hist = tk_train.fit(model, train, test=test, epochs=epochs, batch_size=batch_size, lr=lr,
                            momentum=0.9, seed=seed, device=device, progress=False)
        ax_loss, ax_acc = fig.subplots(1, 2)
        for split in ("train", "test"):
            ax_loss.plot(hist["epoch"], hist[f"{split}_loss"], label=split)
            ax_acc.plot(hist["epoch"], hist[f"{split}_acc"], label=split)
        ax_loss.set(yscale="log", xlabel="epoch", ylabel="loss", title=f"width {width}, lr {lr:.3g}")
        ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02),
                   title=f"final test accuracy {hist['test_acc'].iloc[-1]:.3f}")
        ax_acc.legend(loc="lower right")

    return panel(
        draw,
        width=widgets.IntSlider(value=width, min=2, max=256, step=2, description="width"),
        lr=widgets.FloatLogSlider(value=lr, base=10, min=-3, max=0, step=0.25, description="lr"),
    )
