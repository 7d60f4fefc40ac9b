"""The learning-rate-transfer panel of notebook 05 (μP): a width slider over a precomputed grid.

The panel never retrains: it redraws the notebook's table of training losses on the learning-rate
grid, so a redraw takes milliseconds.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .panel import Panel, panel

__all__ = ["transfer_panel"]

_COLUMNS = {"parameterization", "width", "lr", "loss"}


def transfer_panel(table: pd.DataFrame, *, width: int | None = None) -> Panel:
    """A width slider over the learning-rate grid ``table`` (columns ``parameterization, width,
    lr, loss``, one row per run, as notebook 05 §2 builds it). One axes per parameterisation:
    training loss against learning rate at the chosen width (solid, best rate starred) over the
    narrowest width's curve (grey, best rate a grey star). Under μP the two stars line up at
    every width; under the standard parameterisation they separate as the width grows.
    """
    missing = _COLUMNS - set(table.columns)
    if missing:
        raise ValueError(f"table lacks the columns {sorted(missing)}; pass the notebook's grid "
                         "with columns parameterization, width, lr, loss")
    widths = sorted(int(w) for w in table["width"].unique())
    pars = list(dict.fromkeys(table["parameterization"]))
    finite = table["loss"].where(np.isfinite(table["loss"]))
    top = float(np.nanquantile(finite, 0.9)) if finite.notna().any() else 1.0
    bottom = float(np.nanmin(finite)) if finite.notna().any() else 0.0

    def curve(par: str, w: int):
        rows = table[(table["parameterization"] == par) & (table["width"] == w)].sort_values("lr")
        loss = rows["loss"].where(np.isfinite(rows["loss"])).to_numpy(float)
        return rows["lr"].to_numpy(float), loss

    def draw(fig: Figure, width: int) -> None:
        axes = np.atleast_1d(fig.subplots(1, len(pars), sharey=True))
        for ax, par in zip(axes, pars):
            for w, style in ((widths[0], dict(color="0.6", ls="--")), (width, dict(color="C0"))):
                lrs, loss = curve(par, w)
                ax.plot(lrs, loss, marker="o", ms=3, label=f"n = {w}", **style)
                if np.isfinite(loss).any():
                    best = int(np.nanargmin(loss))
                    ax.plot(lrs[best], loss[best], marker="*", ms=15, color=style["color"])
            shift = _best_log2(*curve(par, width)) - _best_log2(*curve(par, widths[0]))
            ax.set_xscale("log", base=2)
            ax.set(xlabel="learning rate", ylim=(0.9 * bottom, top),
                   title=f"{par}: best rate moved {shift:+.0f} octave(s)")
            ax.legend(fontsize=8)
        axes[0].set_ylabel("training loss")

    return panel(draw, figsize=(9, 3.6),
                 width=widgets.SelectionSlider(options=widths,
                                               value=widths[-1] if width is None else width,
                                               description="width"))


def _best_log2(lrs, loss) -> float:
    if not np.isfinite(loss).any():
        return float("nan")
    return float(np.log2(lrs[int(np.nanargmin(loss))]))
