"""Slider panels for neural collapse: watch the features collapse epoch by epoch (notebook 03);
random vs bound SCL mini-batches at a chosen batch size (notebook 07)."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import pandas as pd

from ..plotting import collapse as nc_plots
from ..plotting.base import set_theme
from .panel import panel

__all__ = ["epoch_panel", "binding_panel"]


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


def binding_panel(labels, *, dim: int, epochs: int, lr: float, temperature: float = 1.0,
                  optimizer: str = "adam", batch_size: int = 8, seed: int = 0,
                  device="cpu", step: int = 4, max_batch: int = 32):
    """A batch-size slider (notebook 07): for each value, train free embeddings (one trainable
    vector per sample, then a ReLU, non-negative start) with SCL on random and on bound
    mini-batches (:class:`toolkit.collapse.BatchBindingSampler`, same seed, same epochs) and redraw
    the two class-mean cosine heatmaps side by side (identity = orthogonal frame). Each redraw
    trains two small runs (about a second each at the toy preset)."""
    import torch
    from torch import nn

    from .. import collapse as tk_collapse
    from ..train import fit

    labels = torch.as_tensor(labels).long().reshape(-1)
    indices = torch.arange(len(labels))
    n = len(labels)

    def geometry(size: int, bind: bool):
        torch.manual_seed(seed)
        embeddings = nn.Embedding(n, dim)
        with torch.no_grad():
            embeddings.weight.abs_()
        model = nn.Sequential(embeddings, nn.ReLU())
        sampler = tk_collapse.BatchBindingSampler(labels, size, bind=bind, seed=seed)
        fit(model, (indices, labels), loss=tk_collapse.supcon_loss, metrics=("loss",),
            loss_kwargs={"temperature": temperature}, optimizer=optimizer, lr=lr,
            epochs=epochs, batch_sampler=sampler, device=device, seed=seed, progress=False)
        with torch.no_grad():
            feats = model(indices.to(next(model.parameters()).device)).cpu()
        return tk_collapse.mean_geometry(feats, labels, normalize=True)

    def draw(fig, batch_size: int):
        size = int(batch_size)
        axes = fig.subplots(1, 2)
        for ax, bind in zip(axes, (False, True)):
            geo = geometry(size, bind)
            name = "bound batches" if bind else "random batches"
            nc_plots.cosine_heatmap(geo, ax=ax, title=f"{name} of {size}: max |cos| "
                                                      f"{geo.as_dict()['max_abs_cos']:.2f}")

    set_theme()
    top = min(n, max_batch)
    slider = widgets.IntSlider(value=min(batch_size, top), min=min(step, top), max=top, step=step,
                               description="batch size")
    return panel(draw, figsize=(8, 3.8), batch_size=slider)
