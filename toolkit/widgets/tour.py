"""The tour's slider panel: retrain a small MLP as its width and learning rate change."""

from __future__ import annotations

import ipywidgets as widgets

from .. import data as tk_data
from .. import models
from .. import train as tk_train
from .panel import Panel, panel

__all__ = ["training_panel"]


def training_panel(train, test, *, epochs: int = 15, batch_size: int = 64, seed: int = 0,
                   device="cpu", width: int = 32, lr: float = 0.05) -> Panel:
    """The tour's panel: width and learning-rate sliders retrain a one-hidden-layer MLP and redraw
    its learning curves, so a student sees under- and over-sized models and step sizes at work."""
    in_dim, n_out = train.tensors[0][0].numel(), tk_data.n_classes(train)

    def draw(fig, width: int, lr: float):
        model = models.MLP(in_dim, [width], n_out)
        hist = tk_train.fit(model, train, test=test, epochs=epochs, batch_size=batch_size, lr=lr,
                            momentum=0.9, seed=seed, device=device, progress=False)
        ax_loss, ax_acc = fig.subplots(1, 2)
        for split in ("train", "test"):
            ax_loss.plot(hist["epoch"], hist[f"{split}_loss"], label=split)
            ax_acc.plot(hist["epoch"], hist[f"{split}_acc"], label=split)
        ax_loss.set(yscale="log", xlabel="epoch", ylabel="loss", title=f"width {width}, lr {lr:.3g}")
        ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02),
                   title=f"final test accuracy {hist['test_acc'].iloc[-1]:.3f}")
        ax_acc.legend(loc="lower right")

    return panel(
        draw,
        width=widgets.IntSlider(value=width, min=2, max=256, step=2, description="width"),
        lr=widgets.FloatLogSlider(value=lr, base=10, min=-3, max=0, step=0.25, description="lr"),
    )
