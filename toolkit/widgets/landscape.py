"""The loss-landscape slider panel: the surface around any checkpoint of a training run."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np

from .. import landscape
from ..plotting.landscape import contour
from .panel import Panel, panel

__all__ = ["surface_panel"]


def surface_panel(model, loss_fn, data, trajectory, *, epochs=None, steps: int = 15,
                  span: float = 1.0, seed: int = 0, batch_size: int | None = None) -> Panel:
    """An ipywidgets panel: an epoch slider shows the loss surface around that iterate (along two
    filter-normalised random directions, fixed seed), with span and resolution sliders.

    ``trajectory`` is a list of parameter dicts (``TrajectoryRecorder.trajectory``) and ``epochs``
    their epoch numbers. Headless, it draws the figure for the initial slider values once.
    """
    traj = list(getattr(trajectory, "trajectory", trajectory))
    epochs = list(getattr(trajectory, "epochs", epochs) or range(len(traj)))
    cache: dict = {}  # surfaces already computed, so moving a slider back costs nothing

    def draw(fig, index: int, span: float, steps: int):
        key = (index, round(span, 6), steps)
        if key not in cache:
            at = landscape.with_parameters(model, traj[index])
            d1 = landscape.random_direction(at, seed=seed)
            d2 = landscape.random_direction(at, seed=seed + 1)
            cache[key] = landscape.surface_2d(at, loss_fn, data, d1, d2, xrange=(-span, span),
                                              yrange=(-span, span), steps=steps,
                                              batch_size=batch_size, progress=False)
        surf = cache[key]
        ax1, ax2 = fig.subplots(1, 2)
        contour(surf, ax=ax1, title=f"epoch {epochs[index]}: loss {surf.center_loss:.3g}")
        mid = np.abs(surf.y).argmin()
        ax2.semilogy(surf.x, surf.loss[mid])
        title = "cut along direction 1"
        if surf.accuracy is not None:
            title += f" (accuracy {surf.accuracy[mid, np.abs(surf.x).argmin()]:.3f} at 0)"
        ax2.set(xlabel="direction 1", ylabel="loss along direction 1", title=title)

    return panel(
        draw, figsize=(10, 3.8),
        index=widgets.IntSlider(value=len(traj) - 1, min=0, max=len(traj) - 1,
                                description="checkpoint"),
        span=widgets.FloatSlider(value=span, min=0.1, max=3.0, step=0.1, description="span"),
        steps=widgets.IntSlider(value=steps, min=5, max=41, step=2, description="resolution"),
    )
