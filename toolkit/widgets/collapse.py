"""Slider panels for neural collapse (notebook 03): watch the features collapse epoch by epoch."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import pandas as pd

from ..plotting import collapse as nc_plots
from ..plotting.base import set_theme
from .panel import panel

__all__ = ["epoch_panel"]


def epoch_panel(snapshots: Sequence[dict], history: pd.DataFrame | None = None, *,
                dims: int = 2, metric: str = "nc1"):
    """An ipywidgets panel (:func:`toolkit.widgets.panel`) with an epoch slider over the snapshots
    of a :class:`toolkit.collapse.CollapseCallback` (``snapshot=n``): left, the sampled features and
    class means on the class-mean plane at that epoch; right, the ``metric`` curve with the
    chosen epoch marked. Headless it shows the last epoch once."""
    if not snapshots:
        raise ValueError("no snapshots: train with CollapseCallback(..., snapshot=n) first")
    epochs = [int(s["epoch"]) for s in snapshots]

    def draw(fig, epoch: int):
        i = int(np.argmin([abs(e - epoch) for e in epochs]))
        snap = snapshots[i]
        if history is not None and metric in history:
            ax_feat = fig.add_subplot(1, 2, 1, projection="3d" if dims == 3 else None)
            ax_curve = fig.add_subplot(1, 2, 2)
        else:
            ax_feat, ax_curve = fig.add_subplot(1, 1, 1), None
        nc_plots.class_means_view(snap["features"], snap["labels"], dims=dims,
                                  weight=snap.get("weight"), ax=ax_feat,
                                  title=f"epoch {epochs[i]}: features and class means")
        if ax_curve is not None:
            rows = history[["epoch", metric]].dropna()
            ax_curve.plot(rows["epoch"], rows[metric], marker=".")
            value = rows.loc[rows["epoch"] == epochs[i], metric]
            if len(value):
                ax_curve.plot([epochs[i]], [value.iloc[0]], "ro", ms=8)
            ax_curve.set(yscale="log", xlabel="epoch", ylabel=nc_plots.LABELS.get(metric, metric))
            ax_curve.set_title(f"{metric} at epoch {epochs[i]}", fontsize=9)

    set_theme()
    step = max(1, int(np.min(np.diff(epochs)))) if len(epochs) > 1 else 1
    slider = widgets.IntSlider(value=epochs[-1], min=epochs[0], max=epochs[-1], step=step,
                               description="epoch")
    return panel(draw, figsize=(9, 4), epoch=slider)
