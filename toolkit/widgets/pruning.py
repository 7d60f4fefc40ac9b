"""The pruning slider panel: prune a copy of a model and watch its spectrum and accuracy."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import ipywidgets as widgets
import pandas as pd
from matplotlib.figure import Figure
from torch import nn

from .. import pruning as tk_pruning
from .. import spectra as tk_spectra
from ..plotting.pruning import singular_values_plot
from ..plotting.spectra import esd_plot
from ..train import evaluate
from .panel import Panel, panel

__all__ = ["sparsity_panel"]


def sparsity_panel(model: nn.Module, data, *, layer: str, sweep: pd.DataFrame | None = None,
                   methods: Iterable[str] = tk_pruning.METHODS, scope: str = "global",
                   exclude: Iterable[str] = (), seed: int = 0, sparsity: float = 0.5,
                   max_sparsity: float = 0.95) -> Panel:
    """An ipywidgets panel: a sparsity slider and a method menu prune a copy of ``model`` and redraw
    together (1) the ESD of ``layer`` before/after with fitted tails, (2) its singular values
    before/after and (3) accuracy on ``data`` against sparsity (the curves of ``sweep`` if given,
    with the current model marked). Headless, it shows the figure for the initial values."""
    methods = list(methods)
    dense_layer = tk_spectra.weight_layer(model, layer)
    dense_acc = evaluate(model, data)["acc"]

    def draw(fig: Figure, sparsity: float, method: str) -> None:
        pruned = tk_pruning.prune(copy.deepcopy(model), method=method, amount=sparsity,
                                  scope=scope, seed=seed, exclude=exclude)
        acc = evaluate(pruned, data)["acc"]
        ax_esd, ax_sv, ax_acc = fig.subplots(1, 3)
        esd_plot(tk_spectra.esd(dense_layer), ax=ax_esd, label="dense", color="black")
        w_pruned = tk_spectra.weight_layer(pruned, layer)
        if bool((tk_spectra.effective_weight(w_pruned) != 0).any()):
            esd_plot(tk_spectra.esd(w_pruned), ax=ax_esd, label=f"{method} {sparsity:.0%}")
        ax_esd.set_title(f"ESD of {layer}")
        ax_esd.legend(fontsize="xx-small")
        singular_values_plot(dense_layer, {f"{method} {sparsity:.0%}": w_pruned}, ax=ax_sv)
        ax_sv.set_title("singular values")
        if sweep is not None:
            for m, grp in sweep.groupby("method", sort=False):
                grp = grp.sort_values("sparsity")
                ax_acc.plot(grp["sparsity"], grp["acc"], alpha=0.35 if m != method else 1.0,
                            label=m)
        ax_acc.axhline(dense_acc, color="0.5", linestyle=":")
        ax_acc.plot([float(tk_pruning.sparsity(pruned, exclude)["global"])], [acc], "k*",
                    markersize=14, label="this model")
        ax_acc.set(xlabel="sparsity", ylabel="accuracy", ylim=(0, 1.02),
                   title=f"accuracy {acc:.3f}")
        ax_acc.legend(fontsize="xx-small")

    return panel(
        draw, figsize=(12, 3.6),
        sparsity=widgets.FloatSlider(value=sparsity, min=0.0, max=max_sparsity, step=0.05,
                                     description="sparsity"),
        method=widgets.Dropdown(options=methods, value=methods[0], description="method"),
    )
