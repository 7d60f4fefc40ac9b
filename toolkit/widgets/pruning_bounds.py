"""The sparsity slider of notebook 11: prune a copy of a trained net and redraw the compression
bound's two terms and each training point's margin against the deviation pruning caused."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import ipywidgets as widgets
from matplotlib.figure import Figure
from torch import nn

from .. import pruning as tk_pruning
from .. import pruning_bounds as tk_bounds
from ..plotting.pruning_bounds import bound_bars, margin_scatter
from ..train import evaluate
from .panel import Panel, panel

__all__ = ["bound_panel"]


def bound_panel(model: nn.Module, train_data, test_data, *, method: str = "magnitude",
                exclude: Iterable[str] = ("head",), scope: str = "layer", seed: int = 0,
                c: float = 1.0, sparsity: float = 0.7, max_sparsity: float = 0.99) -> Panel:
    """A sparsity slider: prune a copy of ``model`` with ``method`` and redraw (1) every training
    point's dense margin against twice the (centred) deviation of its logits
    (:func:`~toolkit.plotting.pruning_bounds.margin_scatter`; points below the diagonal make up the
    margin term) and (2) the bound's margin and complexity terms for the dense, sparse and sketch
    encodings, next to the pruned net's test error
    (:func:`~toolkit.plotting.pruning_bounds.bound_bars`). One pruning and a few forward passes
    per redraw."""
    x, y = train_data.tensors[:2]
    dense_margins = tk_bounds.margins(model, x, y)

    def draw(fig: Figure, sparsity: float) -> None:
        pruned = tk_pruning.prune(copy.deepcopy(model), method=method, amount=sparsity,
                                  scope=scope, seed=seed, exclude=exclude)
        table = tk_bounds.bound_table(model, pruned, train_data, exclude=exclude, c=c)
        deviation = tk_bounds.output_deviation(model, pruned, x, center=True)
        wrong = tk_bounds.margins(pruned, x, y) <= 0
        ax_scatter, ax_bars = fig.subplots(1, 2)
        margin_scatter(dense_margins, deviation, wrong, ax=ax_scatter)
        bound_bars(table, 1 - evaluate(pruned, test_data)["acc"], ax=ax_bars)
        ax_bars.set_title(f"{method} {sparsity:.0%}: the bound's two terms")

    return panel(draw, figsize=(10, 3.8),
                 sparsity=widgets.FloatSlider(value=sparsity, min=0.0, max=max_sparsity,
                                              step=0.01, description="sparsity"))
