"""Figures for weight spectra and pruning: ESDs with power-law tails and the Marchenko–Pastur bulk,
singular values before/after pruning, accuracy and spectral error against sparsity, lottery-ticket
curves, and the sparsity-slider panel. Every function returns a matplotlib Figure or Axes."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from .. import pruning as tk_pruning
from .. import spectra as tk_spectra
from .base import new_figure, set_theme

__all__ = ["esd_plot", "layer_esds", "singular_values_plot", "pruning_curves", "alpha_curves",
           "lottery_plot", "sparsity_panel"]


def _axes(ax: Axes | None) -> Axes:
    if ax is None:
        _, ax = new_figure()
    return ax


def _layer(model: nn.Module, name: str) -> nn.Module:
    layers = dict(tk_spectra.weight_layers(model))
    if name not in layers:
        raise ValueError(f"layer {name!r} not found; the model's weight layers are {list(layers)}.")
    return layers[name]


def esd_plot(eigenvalues, *, fit: tk_spectra.PowerLawFit | bool | None = True,
             mp: tuple[int, int, float] | None = None, ax: Axes | None = None, bins: int = 40,
             label: str | None = None, color=None) -> Axes:
    r"""Histogram of an ESD on log-log axes (log-spaced bins, density), with the fitted power-law
    tail :math:`p(\lambda) = \frac{n_{tail}}{n}\frac{\alpha-1}{x_{\min}}(\lambda/x_{\min})^{-\alpha}`
    (``fit=True`` fits it with :func:`toolkit.spectra.powerlaw_alpha`) and, with
    ``mp=(n_rows, n_cols, sigma2)``, the Marchenko–Pastur density of a random layer."""
    ax = _axes(ax)
    ev = np.asarray(torch.as_tensor(eigenvalues).detach().cpu().double())
    ev = ev[ev > 0]
    if len(ev) == 0:
        raise ValueError("no positive eigenvalues to plot.")
    edges = np.geomspace(ev.min(), ev.max() * (1 + 1e-9), bins + 1)
    dens, _ = np.histogram(ev, bins=edges, density=True)
    centers = np.sqrt(edges[:-1] * edges[1:])
    shown = dens > 0  # empty bins cannot be drawn on a log axis
    (line,) = ax.plot(centers[shown], dens[shown], drawstyle="steps-mid", label=label,
                      color=color, linewidth=1.5)
    color = line.get_color()
    if fit is True:
        try:
            fit = tk_spectra.powerlaw_alpha(ev)
        except ValueError:
            fit = None
    if isinstance(fit, tk_spectra.PowerLawFit):
        x = np.geomspace(fit.xmin, ev.max(), 50)
        p = fit.n_tail / len(ev) * (fit.alpha - 1) / fit.xmin * (x / fit.xmin) ** (-fit.alpha)
        ax.plot(x, p, "--", color=color, linewidth=1.5,
                label=rf"{label + ' ' if label else ''}tail fit, $\alpha$={fit.alpha:.2f}")
    if mp is not None:
        lo, hi = tk_spectra.marchenko_pastur_edges(*mp)
        x = np.geomspace(max(lo, ev.min()), hi, 400)
        ax.plot(x, tk_spectra.marchenko_pastur_density(x, *mp), color="0.4", linewidth=1,
                label="Marchenko–Pastur")
        ax.axvline(hi, color="0.4", linestyle=":", linewidth=1.2, label="MP bulk edge")
    ax.set(xscale="log", yscale="log", xlabel=r"eigenvalue $\lambda$ of $W^\top W$",
           ylabel="density")
    return ax


def layer_esds(models: Mapping[str, nn.Module], layers: Iterable[str] | None = None, *,
               conv: str = "slices", mp: bool = True, bins: int = 20) -> Figure:
    """One panel per layer, the ESD of that layer in each model of ``models`` (label → model)
    overlaid, each with its fitted tail; ``mp=True`` adds the Marchenko–Pastur density and bulk
    edge of the first model's layer (its entry variance and shape). Ticks at the bottom mark each
    model's eigenvalues above its own bulk edge (the spikes counted by ``layer_report``)."""
    if not models:
        raise ValueError("models is empty: pass e.g. {'init': model0, 'trained': model}.")
    first = next(iter(models.values()))
    layers = list(layers) if layers is not None else [n for n, _ in
                                                      tk_spectra.weight_layers(first)]
    fig, axes = new_figure(len(layers), width=4.2)
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, layers):
        for i, (label, model) in enumerate(models.items()):
            w = tk_spectra.effective_weight(_layer(model, name)).double()
            shape_var = (*tk_spectra.esd_matrix_shape(w, conv), float(w.var(unbiased=False)))
            ev = tk_spectra.esd(w, conv=conv)
            n_before = len(ax.get_lines())
            esd_plot(ev, ax=ax, label=label, mp=shape_var if mp and i == 0 else None, bins=bins)
            color = ax.get_lines()[n_before].get_color()
            spikes = ev[ev > tk_spectra.marchenko_pastur_edges(*shape_var)[1]].numpy()
            if len(spikes):  # eigenvalues above the layer's own bulk edge, as a rug
                ax.plot(spikes, np.full(len(spikes), 0.03 + 0.04 * i), "|", markersize=10,
                        markeredgewidth=2, color=color, transform=ax.get_xaxis_transform())
        ax.set_title(f"{name} {tuple(w.shape)}")
        ax.legend(fontsize="xx-small", loc="lower left")
    return fig


def singular_values_plot(weight, pruned: Mapping[str, torch.Tensor], *, ax: Axes | None = None,
                         top: int | None = None) -> Axes:
    """Singular values (sorted, log scale) of a weight before pruning and of each pruned version
    (``pruned``: label → tensor or layer). Conv weights are read as ``(out, in·k·k)`` matrices.
    Zero singular values are not drawn; a curve that stops early shows the rank the pruning lost."""
    ax = _axes(ax)

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
    method, and the spectral error (``error``: ``operator``, ``operator_max``, ``frobenius``, ``sv_drift`` or
    ``angle``) against sparsity. Methods that keep the spectrum should keep the accuracy."""
    for col in ("method", "sparsity", "acc", error):
        if col not in sweep:
            raise ValueError(f"sweep has no column {col!r}; pass the output of "
                             "toolkit.pruning.sparsity_sweep.")
    fig, (ax_acc, ax_err) = new_figure(2)
    for method, grp in sweep.groupby("method", sort=False):
        grp = grp.sort_values("sparsity")
        ax_acc.plot(grp["sparsity"], grp["acc"], marker="o", label=method)
        ax_err.plot(grp["sparsity"], grp[error], marker="o", label=method)
    if dense_acc is not None:
        ax_acc.axhline(dense_acc, color="0.5", linestyle=":", label="dense")
    labels = {"operator": r"$\|W-W_s\|_2/\|W\|_2$ (mean over layers)",
              "operator_max": r"worst layer's $\|W-W_s\|_2/\|W\|_2$", "frobenius": r"$\|W-W_s\|_F/\|W\|_F$",
              "sv_drift": "singular-value drift", "angle": "top-k subspace angle (deg)"}
    ax_acc.set(xlabel="sparsity", ylabel="test accuracy", title="accuracy")
    ax_err.set(xlabel="sparsity", ylabel=labels.get(error, error), title="spectral error")
    ax_err.set_yscale("log", nonpositive="mask")  # the dense point (error 0) is left out
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
    axis), one panel per entry of ``results`` (label → ``LotteryResult.history``)."""
    if not results:
        raise ValueError("results is empty: pass e.g. {'lr 0.05': result.history}.")
    suffix = f"_{metric}" if metric else ""
    fig, axes = new_figure(len(results), width=4.2)
    axes = np.atleast_1d(axes)
    for ax, (label, hist) in zip(axes, results.items()):
        remaining = 1 - hist["sparsity"]
        ax.plot(remaining, hist[f"ticket{suffix}"], marker="o", label="IMP ticket (rewound)")
        if f"control{suffix}" in hist:
            ax.plot(remaining, hist[f"control{suffix}"], marker="s",
                    label="same mask, random re-init")
        ax.axhline(hist[f"ticket{suffix}"].iloc[0], color="0.5", linestyle=":", label="dense")
        ax.set(xscale="log", xlabel="fraction of weights remaining", ylabel="test accuracy",
               title=label)
        ax.invert_xaxis()
    axes[0].legend(fontsize="x-small")
    return fig


def sparsity_panel(model: nn.Module, data, *, layer: str, sweep: pd.DataFrame | None = None,
                   methods: Iterable[str] = tk_pruning.METHODS, scope: str = "global",
                   exclude: Iterable[str] = (), seed: int = 0, sparsity: float = 0.5,
                   max_sparsity: float = 0.95):
    """An ipywidgets panel: a sparsity slider and a method menu prune a copy of ``model`` and redraw
    together (1) the ESD of ``layer`` before/after with fitted tails, (2) its singular values
    before/after and (3) accuracy on ``data`` against sparsity (the curves of ``sweep`` if given,
    with the current model marked). Headless, it shows the figure for the initial values."""
    import ipywidgets as widgets

    from ..train import evaluate
    from ..widgets import panel

    methods = list(methods)
    dense_layer = _layer(model, layer)
    dense_acc = evaluate(model, data)["acc"]

    def draw(fig: Figure, sparsity: float, method: str) -> None:
        set_theme()
        pruned = tk_pruning.prune(copy.deepcopy(model), method=method, amount=sparsity,
                                  scope=scope, seed=seed, exclude=exclude)
        acc = evaluate(pruned, data)["acc"]
        ax_esd, ax_sv, ax_acc = fig.subplots(1, 3)
        esd_plot(tk_spectra.esd(dense_layer), ax=ax_esd, label="dense", color="black")
        w_pruned = _layer(pruned, layer)
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
