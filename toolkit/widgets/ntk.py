"""The explorer panel of notebook 01: network vs kernel regression, by width and training time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import torch

from toolkit.plotting.ntk import draw_predictions

from .panel import Panel, panel

__all__ = ["equivalence_panel"]


def equivalence_panel(predictions: Mapping[int, tuple[torch.Tensor, torch.Tensor]],
                      steps: Sequence[int], x_train, y_train, x_test, y_test) -> Panel:
    """Width and training-time sliders over recorded predictions on 1-D data.

    ``predictions[width] = (net, kernel)``: the network's and its kernel regression's (T, M, 1)
    predictions on ``x_test`` at the GD ``steps``. Left: both at the chosen width and step;
    right: their RMS gap over training.
    """
    widths = sorted(predictions)
    if not widths:
        raise ValueError("predictions is empty; pass {width: (net, kernel)} for at least one width")
    steps = list(steps)
    for width in widths:
        for tensor in predictions[width]:
            if tensor.shape[0] != len(steps):
                raise ValueError(f"predictions[{width}] has {tensor.shape[0]} time points but "
                                 f"steps has {len(steps)}; record both at the same steps")

    def draw(fig, width: int, step: int):
        net, kernel = predictions[width]
        k = steps.index(step)
        ax_f, ax_gap = fig.subplots(1, 2)
        draw_predictions(ax_f, x_train, y_train, x_test, y_test, net[k], kernel[k],
                         title=f"width {width}, step {step}")
        ax_f.legend(fontsize="small", loc="lower right")
        gaps = (net - kernel).pow(2).mean(dim=(1, 2)).sqrt()
        ax_gap.plot(steps, gaps, color="C0")
        ax_gap.axvline(step, color="C3", ls=":")
        ax_gap.set(xlabel="GD step", ylabel="RMS(network - kernel)",
                   title="gap over training", ylim=(0, None))

    return panel(
        draw,
        width=widgets.SelectionSlider(options=widths, value=widths[-1], description="width"),
        step=widgets.SelectionSlider(options=steps, value=steps[len(steps) // 4],
                                     description="GD step"),
    )
