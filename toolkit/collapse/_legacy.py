"""Names that left ``toolkit.collapse`` in this release; they still work, with a DeprecationWarning.

``bn_mlp`` is now ``toolkit.models.MLP(..., norm="batch")`` (same layers, same parameters) and
``train_supcon`` is ``toolkit.train.fit`` with the SupCon loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
from torch import nn

from .._deprecated import warn_renamed
from .supcon import supcon_loss

__all__: list[str] = []


def bn_mlp(in_dim: int, widths: Sequence[int], n_classes: int, *,
           activation: str = "relu") -> nn.Module:
    """Deprecated: ``toolkit.models.MLP(in_dim, widths, n_classes, norm="batch")``."""
    from ..models import MLP

    warn_renamed("toolkit.collapse.bn_mlp", 'toolkit.models.MLP(in_dim, widths, n_classes, '
                 'norm="batch")')
    return MLP(in_dim, widths, n_classes, activation=activation, norm="batch")


def train_supcon(model: nn.Module, data, *, epochs: int = 100, lr: float = 1e-2,
                 optimizer: str = "adam", weight_decay: float = 0.0, momentum: float = 0.9,
                 batch_size: int | None = None, temperature: float = 0.1, device=None,
                 seed: int = 0, callbacks: Sequence[Callable] = (), callback_every: int = 1,
                 progress: bool = True) -> pd.DataFrame:
    """Deprecated: ``toolkit.train.fit(model, data, loss=supcon_loss, loss_kwargs={"temperature":
    t}, metrics=("loss",), optimizer="adam", ...)``. Returns fit's history with ``train_loss``
    renamed ``loss``, as before."""
    from ..train import fit
    from ..utils import model_device

    warn_renamed("toolkit.collapse.train_supcon", 'toolkit.train.fit(model, data, '
                 'loss=toolkit.collapse.supcon_loss, metrics=("loss",), ...)')
    history = fit(model, data, loss=supcon_loss, loss_kwargs={"temperature": temperature},
                  metrics=("loss",), optimizer=optimizer, lr=lr, momentum=momentum,
                  weight_decay=weight_decay, epochs=epochs, batch_size=batch_size,
                  device=model_device(model) if device is None else device, seed=seed,
                  callbacks=callbacks, callback_every=callback_every, progress=progress)
    return history.rename(columns={"train_loss": "loss"})
