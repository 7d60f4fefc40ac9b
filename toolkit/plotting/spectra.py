"""Figures for weight spectra: ESDs with power-law tails and the Marchenko–Pastur bulk, one panel
per layer for several models. Every function returns a matplotlib Figure or Axes. Pruning figures
are in :mod:`toolkit.plotting.pruning`, the sparsity-slider panel in :mod:`toolkit.widgets.pruning`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from .. import spectra as tk_spectra
from .._deprecated import moved
from .base import axes_or_new, new_figure

__all__ = ["esd_plot", "layer_esds"]


def esd_plot(eigenvalues, *, fit: tk_spectra.PowerLawFit | bool | None = True,
             mp: tuple[int, int, float] | None = None, ax: Axes | None = None, bins: int = 40,
             label: str | None = None, color=None) -> Axes:
    r"""Histogram of an ESD on log-log axes (log-spaced bins, density), with the fitted power-law
    tail :math:`p(\lambda) = \frac{n_{tail}}{n}\frac{\alpha-1}{x_{\min}}(\lambda/x_{\min})^{-\alpha}`
    (``fit=True`` fits it with :func:`toolkit.spectra.powerlaw_alpha`) and, with
    ``mp=(n_rows, n_cols, sigma2)``, the Marchenko–Pastur density of a random layer. Eigenvalues
    that are zero (below 1e-12 of the largest) are not drawn; the label gives their number."""
    ax = axes_or_new(ax)
    ev = np.asarray(torch.as_tensor(eigenvalues).detach().cpu().double())
    # Zero eigenvalues (a rank lost to pruning, up to rounding: below 1e-12 of the largest) cannot
    # sit on a log axis; they are left out, not drawn at a floor, and the label says how many.
    n_zero = int((ev <= 1e-12 * max(float(ev.max(initial=0.0)), 1e-300)).sum())
    ev = ev[ev > 1e-12 * max(float(ev.max(initial=0.0)), 1e-300)]
    if len(ev) == 0:
        raise ValueError("no positive eigenvalues to plot.")
    base_label = label
    if n_zero:
        label = f"{label + ' ' if label else ''}({n_zero} zero eigenvalues not drawn)"
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
                label=rf"{base_label + ' ' if base_label else ''}tail fit, $\alpha$={fit.alpha:.2f}")
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
            w = tk_spectra.effective_weight(tk_spectra.weight_layer(model, name)).double()
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


# Old names kept for one release: the pruning figures and the slider panel moved out.
__getattr__ = moved(__name__, {
    **{name: f"toolkit.plotting.pruning:{name}"
       for name in ("singular_values_plot", "pruning_curves", "alpha_curves", "lottery_plot")},
    "sparsity_panel": "toolkit.widgets.pruning:sparsity_panel",
})
