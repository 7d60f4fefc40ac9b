r"""Training callbacks that watch the kernel and the outputs (``train.fit(..., callbacks=[...])``).

:class:`KernelDrift` records the relative change of the empirical NTK on a probe set (lazy
training: it vanishes with width under the NTK parameterisation), :class:`OutputRecorder` the
network's outputs, to compare with :func:`toolkit.ntk.kernel_regression` at the same steps.
"""

from __future__ import annotations

import torch
from torch import nn

from .empirical import empirical_ntk

__all__ = ["KernelDrift", "OutputRecorder", "kernel_drift", "relative_change"]


def relative_change(k0: torch.Tensor, k1: torch.Tensor) -> float:
    r""":math:`\|K_1 - K_0\|_F / \|K_0\|_F`."""
    return float(torch.linalg.norm(k1 - k0) / torch.linalg.norm(k0))


class KernelDrift:
    r"""Training callback: relative kernel change :math:`\|K_t - K_0\|_F/\|K_0\|_F` on a probe set.

    The first call stores :math:`K_0`. Lazy training (Jacot et al. 2018, arXiv 1806.07572) means
    this drift vanishes as width grows under the NTK parameterisation. Use as
    ``train.fit(..., callbacks=[KernelDrift(x_probe)])``; returns ``{key: drift}``.
    """

    def __init__(self, x_probe: torch.Tensor, *, mode: str = "trace", method: str = "auto",
                 key: str = "kernel_drift"):
        self.x_probe, self.mode, self.method, self.key = x_probe, mode, method, key
        self.k0: torch.Tensor | None = None
        self.last: torch.Tensor | None = None

    def __call__(self, epoch: int, model: nn.Module, history_rows=None) -> dict[str, float]:
        ref = next(model.parameters())
        x = self.x_probe.to(device=ref.device, dtype=ref.dtype)
        k = empirical_ntk(model, x, mode=self.mode, method=self.method, progress=False)
        if self.k0 is None:
            self.k0 = k
        self.last = k
        return {self.key: relative_change(self.k0, k)}


def kernel_drift(x_probe: torch.Tensor, **kwargs) -> KernelDrift:
    """A :class:`KernelDrift` callback on the probe inputs ``x_probe``."""
    return KernelDrift(x_probe, **kwargs)


class OutputRecorder:
    """Training callback storing ``model(x)`` at each call: ``epochs`` and ``outputs`` (T, N, O).

    Used to compare a trained network with :func:`kernel_regression` at the same times.
    """

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.epochs: list[int] = []
        self._outputs: list[torch.Tensor] = []

    def __call__(self, epoch: int, model: nn.Module, history_rows=None) -> None:
        ref = next(model.parameters())
        with torch.no_grad():
            out = model(self.x.to(device=ref.device, dtype=ref.dtype))
        self.epochs.append(int(epoch))
        self._outputs.append(out.reshape(len(self.x), -1).detach().cpu())
        return None

    @property
    def outputs(self) -> torch.Tensor:
        return torch.stack(self._outputs)
