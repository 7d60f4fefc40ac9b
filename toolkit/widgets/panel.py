"""The panel: sliders wired to a drawing function, with a static figure when headless.

``panel(draw, width=IntSlider(...), ...)`` calls ``draw(fig, width=..., ...)`` into one matplotlib
Figure. In JupyterLab the sliders redraw it (``continuous_update=False`` so a retraining draw runs
once per release, not on every pixel); run headless (papermill, ``make demo``) the panel shows
the figure for the sliders' initial values, so executed notebooks and HTML still carry the plot.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ..plotting.base import set_theme

__all__ = ["Panel", "panel"]


class Panel:
    """A figure redrawn by ``draw(fig, **values)`` whenever one of the sliders moves."""

    def __init__(self, draw: Callable[..., None], *, figsize=(9, 3.6), **controls):
        if not controls:
            raise ValueError("panel needs at least one control, e.g. "
                             "width=ipywidgets.IntSlider(description='width', ...).")
        for name, control in controls.items():
            if not isinstance(control, widgets.ValueWidget):
                raise TypeError(f"control {name!r} must be an ipywidgets value widget "
                                f"(IntSlider, FloatLogSlider, Dropdown, ...), got {type(control)}.")
            if hasattr(control, "continuous_update"):
                control.continuous_update = False
            if not control.description:
                control.description = name
        set_theme()
        self.draw_fn, self.controls = draw, controls
        with plt.ioff():
            self.figure: Figure = plt.figure(figsize=figsize, layout="constrained")
        self.output = widgets.Output()
        self.n_draws = 0
        for control in controls.values():
            control.observe(lambda _change: self.redraw(), names="value")
        self.redraw()

    @property
    def values(self) -> dict:
        return {name: c.value for name, c in self.controls.items()}

    def redraw(self) -> None:
        """Clear the figure, call ``draw`` with the current values, show the result."""
        self.figure.clear()
        self.draw_fn(self.figure, **self.values)
        self.n_draws += 1
        self.output.clear_output(wait=True)
        with self.output:
            from IPython.display import display
            display(self.figure)

    @property
    def widget(self) -> widgets.Widget:
        return widgets.VBox([widgets.HBox(list(self.controls.values())), self.output])

    def png(self) -> bytes:
        """The current figure as PNG bytes."""
        import io
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=self.figure.dpi)
        return buf.getvalue()

    def _repr_mimebundle_(self, include=None, exclude=None):
        # The live widget for JupyterLab, plus a static PNG of the figure: frontends without a
        # widget manager (papermill runs, nbconvert HTML, GitHub) fall back to the picture.
        import base64
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude)
        bundle = bundle[0] if isinstance(bundle, tuple) else bundle
        bundle = dict(bundle)
        bundle["image/png"] = base64.b64encode(self.png()).decode("ascii")
        return bundle


def panel(draw: Callable[..., None], *, figsize=(9, 3.6), **controls) -> Panel:
    """Wire ``draw(fig, **values)`` to ipywidgets ``controls`` (see the module docstring)."""
    return Panel(draw, figsize=figsize, **controls)
