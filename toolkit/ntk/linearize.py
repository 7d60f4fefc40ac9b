r"""The linearised network: the first-order Taylor model around the initial parameters.

Lee et al. 2019 (arXiv 1902.06720): a wide network trained by gradient descent stays close to
:math:`f(\theta_0, x) + J(\theta_0, x)(\theta - \theta_0)`, whose NTK is constant. The wrapper is
an ordinary ``nn.Module``, trainable with ``toolkit.train.fit``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jvp

from ._context import _no_fastpath, _trainable
from .empirical import check_ntk_ready

__all__ = ["LinearizedModel", "linearize"]


def _safe(name: str) -> str:
    return name.replace(".", "__")


class LinearizedModel(nn.Module):
    r"""First-order Taylor model :math:`f_{lin}(\theta, x) = f(\theta_0, x) + J(\theta_0, x)
    (\theta - \theta_0)` (Lee et al. 2019, arXiv 1902.06720), evaluated with one ``jvp``.

    Its trainable parameters start at :math:`\theta_0`; ``base`` (not a submodule) is the
    template network, evaluated functionally with the stored :math:`\theta_0` and buffers.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        check_ntk_ready(model)
        params = _trainable(model)
        self.__dict__["base"] = model
        self._names = list(params)
        self.params = nn.ParameterDict(
            {_safe(n): nn.Parameter(p.clone()) for n, p in params.items()}
        )
        for n, p in params.items():
            self.register_buffer("theta0__" + _safe(n), p.clone())
        # frozen parameters and buffers travel with the wrapper (so .to(device) moves them)
        consts = {n: p for n, p in model.named_parameters() if n not in params}
        consts.update(dict(model.named_buffers()))
        self._const_names = list(consts)
        for n, b in consts.items():
            self.register_buffer("const__" + _safe(n), b.detach().clone())

    def _theta0(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, "theta0__" + _safe(n)) for n in self._names}

    def _consts(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, "const__" + _safe(n)) for n in self._const_names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta0, consts = self._theta0(), self._consts()
        tangent = {n: self.params[_safe(n)] - theta0[n] for n in self._names}

        def f(p):
            return functional_call(self.base, {**p, **consts}, (x,))

        with _no_fastpath():  # fused attention kernels have no forward-mode AD
            out, dout = jvp(f, (theta0,), (tangent,))
        return out + dout


def linearize(model: nn.Module) -> LinearizedModel:
    """Return the linearised model f_lin(theta, x) = f(theta0, x) + J(theta0)(theta - theta0).

    It is an ordinary ``nn.Module`` (train it with ``toolkit.train.fit``); its NTK equals the
    NTK of ``model`` at initialisation for every theta. See :class:`LinearizedModel`.
    """
    return LinearizedModel(model)
