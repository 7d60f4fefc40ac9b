r"""Feature learning beyond the kernel regime: the measurements behind μP's coordinate check.

Yang & Hu (2021, arXiv 2011.14522) call a parameterisation *feature learning* when every layer's
pre-activations move by Θ(1) per coordinate in the first steps of training, whatever the width.
The **coordinate check** (Yang et al. 2022, arXiv 2203.03466, §D) trains nets of several widths
for a few steps and plots the RMS size of each layer's pre-activation change against the width:
flat under μP (:class:`toolkit.models.MuPLinear`), growing under the standard parameterisation
(it blows up at a fixed learning rate) and vanishing like :math:`n^{-1/2}` under the NTK one
(lazy training).

:func:`preactivations` reads every ``nn.Linear``'s output on a batch; :func:`rms_change` compares
two such readings layer by layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .utils import eval_mode

__all__ = ["preactivations", "rms_change"]


def preactivations(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of every ``nn.Linear`` of ``model`` on ``x`` (pre-activations, and the readout's
    logits), keyed by module name in forward order, detached; computed in eval mode without
    gradients."""
    store: dict[str, torch.Tensor] = {}
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to read.")

    def hook(name):
        def fn(module, inputs, output):
            store[name] = output.detach().flatten(1)
        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in linears]
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return store


def rms_change(before: Mapping[str, torch.Tensor],
               after: Mapping[str, torch.Tensor]) -> dict[str, float]:
    r"""Per layer, the root-mean-square coordinate of the change,
    :math:`\sqrt{\mathrm{mean}_{i,j} (h^{after}_{ij} - h^{before}_{ij})^2}`."""
    if set(before) != set(after):
        raise ValueError(f"the readings cover different layers: {sorted(before)} vs "
                         f"{sorted(after)}; read the same model twice.")
    return {name: float((after[name] - before[name]).pow(2).mean().sqrt()) for name in before}
