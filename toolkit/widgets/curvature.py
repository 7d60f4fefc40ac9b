"""The Hessian-rank panel of notebook 06: a channel slider over precomputed Hessian spectra."""

from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as widgets
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..plotting.curvature import rank_scaling_axes, singular_values
from .panel import Panel, panel

__all__ = ["rank_panel"]


def rank_panel(table: pd.DataFrame, spectra: Mapping[int, tuple[torch.Tensor, float]], *,
               model: str | None = None) -> Panel:
    """A channel-count slider. ``table``: columns ``model, channels, n_params, rank``;
    ``spectra[channels] = (singular values, tolerance)`` of the Hessian of ``model`` (default:
    the table's first model). Left: that Hessian's singular values and the tolerance (the rank is
    the count above the red line). Right: rank against parameter count for every model, the
    chosen net circled. Nothing is recomputed."""
    if not spectra:
        raise ValueError("spectra is empty; pass {channels: (singular values, tolerance)}")
    model = table["model"].iloc[0] if model is None else model
    options = sorted(spectra)

    def draw(fig: Figure, channels: int) -> None:
        ax_sv, ax_rank = fig.subplots(1, 2)
        sv, tol = spectra[channels]
        row = table[(table["model"] == model) & (table["channels"] == channels)].iloc[0]
        singular_values(sv, tol, ax=ax_sv, label=f"{model}, {channels} channels")
        ax_sv.set_title(f"rank {int(row['rank'])} of {int(row['n_params'])} parameters")
        rank_scaling_axes(ax_rank, table)
        ax_rank.plot(row["n_params"], row["rank"], "o", ms=14, mfc="none", mec="C3", mew=2)
        ax_rank.set_title("rank vs #params")

    return panel(draw, figsize=(10, 3.8),
                 channels=widgets.SelectionSlider(options=options, value=options[-1],
                                                  description="channels"))
