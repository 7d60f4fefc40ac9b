"""Claims of notebook 00 (the tour): a small MLP learns the digits, and a panel draws headless.

Each predicate returns a :class:`~toolkit.claims.Verdict`; ``tests/test_claims_tour.py`` runs it on
a negative control (an untrained net, shuffled labels, a step too small to move) and on the
notebook's own run. The panel check is :func:`toolkit.claims.panel_drawn`.
"""

from __future__ import annotations

import pandas as pd

from ._base import Verdict

__all__ = ["accuracy_reached", "loss_fell"]


def _last(history: pd.DataFrame, column: str) -> float:
    if column not in history.columns:
        raise ValueError(f"history has no column {column!r}; pass the DataFrame of train.fit"
                         f"{' with test=...' if column.startswith('test') else ''}")
    return float(history[column].iloc[-1])


def accuracy_reached(history: pd.DataFrame, at_least: float = 0.9) -> Verdict:
    """The trained classifier's final test accuracy is at least ``at_least``.

    Claim (the tour's section 2; the notebook-plus-package format of d2l, arXiv 2106.11342): one
    hidden layer of 128 units trained for 30 epochs classifies scikit-learn's 8x8 digits well. The
    threshold 0.9 is far above chance (0.1, what an untrained net or one trained on shuffled labels
    gets) and below what the toy run reaches on every seed checked (0.96-0.98), so it fails only
    when learning fails.

    Values: ``test_acc`` (final), ``at_least``.
    """
    acc = _last(history, "test_acc")
    return Verdict(acc >= at_least, {"test_acc": acc, "at_least": float(at_least)})


def loss_fell(history: pd.DataFrame, factor: float = 10.0) -> Verdict:
    """The training loss fell at least ``factor``-fold from initialisation (epoch 0 of ``history``).

    The toy run's loss falls by far more than 10x on seeds 0, 1, 2. A step size too small to move
    the weights (lr 1e-5), or no training at all, leaves the loss where it started; on shuffled
    labels the net starts to memorise (training accuracy about 0.64 after 30 epochs, test accuracy
    at chance) but its loss falls only about 3x. A falling training loss alone says nothing about
    generalisation, which is why the tour also checks the test accuracy (:func:`accuracy_reached`).

    Values: ``initial``, ``final``, ``drop`` (initial / final).
    """
    initial, final = float(history["train_loss"].iloc[0]), _last(history, "train_loss")
    drop = initial / final if final > 0 else float("inf")
    return Verdict(drop >= factor, {"initial": initial, "final": final, "drop": drop,
                                    "factor": float(factor)})
