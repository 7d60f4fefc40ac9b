"""Pruning slider panels: prune a copy of a model and watch its spectrum and accuracy (notebook
04); its path-norms and operator-norm product (notebook 08)."""

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

__all__ = ["sparsity_panel", "path_norm_panel"]


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


def path_norm_panel(model: nn.Module, train_data, test_data, *, input_shape: tuple[int, ...],
                    exclude: Iterable[str] = ("head",), scope: str = "layer",
                    sparsity: float = 0.5, max_sparsity: float = 0.95) -> Panel:
    """A sparsity slider (notebook 08): magnitude-prune a copy of ``model`` and redraw (1) its
    :math:`L^1`, :math:`L^2` path-norms and product of layer operator norms, each divided by the
    dense model's value (bars, log axis), and (2) train and test accuracy of the pruned copy next
    to the dense ones. Cheap: one pruning, two path-norm passes, two evaluations per redraw."""
    dense = tk_spectra.PathNormCallback(input_shape)(0, model, [])
    dense_acc = (evaluate(model, train_data)["acc"], evaluate(model, test_data)["acc"])
    names = list(dense)

    def draw(fig: Figure, sparsity: float) -> None:
        pruned = tk_pruning.prune(copy.deepcopy(model), method="magnitude", amount=sparsity,
                                  scope=scope, exclude=exclude)
        now = tk_spectra.PathNormCallback(input_shape)(0, pruned, [])
        acc = (evaluate(pruned, train_data)["acc"], evaluate(pruned, test_data)["acc"])
        ax_norm, ax_acc = fig.subplots(1, 2)
        ratios = [now[k] / dense[k] for k in names]
        ax_norm.bar(range(len(names)), ratios, color=["C0", "C1", "C2"][:len(names)])
        ax_norm.axhline(1.0, color="0.5", linestyle=":")
        ax_norm.set_xticks(range(len(names)))
        ax_norm.set_xticklabels([k.replace("_", " ") for k in names], fontsize=8)
        ax_norm.set(yscale="log", ylabel="pruned / dense",
                    ylim=(0.5 * min(min(ratios), 1.0), 2.0 * max(max(ratios), 1.0)),
                    title=f"magnitude pruning {sparsity:.0%}: capacity terms")
        for i, r in enumerate(ratios):
            ax_norm.text(i, r, f"{r:.2g}", ha="center", va="bottom", fontsize=8)
        x = [0, 1]
        ax_acc.bar([i - 0.2 for i in x], dense_acc, width=0.4, color="0.6", label="dense")
        ax_acc.bar([i + 0.2 for i in x], acc, width=0.4, color="C3", label=f"{sparsity:.0%} pruned")
        ax_acc.set_xticks(x)
        ax_acc.set_xticklabels(["train", "test"])
        ax_acc.set(ylim=(0, 1.05), ylabel="accuracy",
                   title=f"gap {acc[0] - acc[1]:+.3f} (dense {dense_acc[0] - dense_acc[1]:+.3f})")
        ax_acc.legend(fontsize="x-small", loc="lower right")

    return panel(draw, figsize=(9, 3.6),
                 sparsity=widgets.FloatSlider(value=sparsity, min=0.0, max=max_sparsity, step=0.05,
                                              description="sparsity"))
