r"""Infinite-width kernels of MLPs (neural-tangents ``stax`` conventions, arXiv 1912.02803).

:func:`analytic_ntk` gives the NTK (and the NNGP) of ``toolkit.models.MLP(...,
parameterization="ntk")`` as the width goes to infinity: the layer-wise recursion of Jacot et
al. 2018 (arXiv 1806.07572) with closed-form Gaussian expectations per activation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from toolkit._checks import check_choice, check_positive_int, check_tensor

__all__ = ["analytic_ntk"]


def _relu_expectations(k11, k22, k12):
    r"""Arc-cosine kernel (Cho & Saul 2009): with :math:`\cos\vartheta = k_{12}/\sqrt{k_{11}k_{22}}`,
    :math:`E[\phi\phi'] = \frac{\sqrt{k_{11}k_{22}}}{2\pi}(\sin\vartheta + (\pi-\vartheta)
    \cos\vartheta)`, :math:`E[\dot\phi\dot\phi'] = \frac{\pi - \vartheta}{2\pi}`."""
    norm = torch.sqrt(k11 * k22)
    cos = torch.clamp(k12 / norm.clamp_min(torch.finfo(k12.dtype).tiny), -1.0, 1.0)
    theta = torch.arccos(cos)
    value = norm / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * cos)
    deriv = (math.pi - theta) / (2 * math.pi)
    return value, deriv


def _erf_expectations(k11, k22, k12):
    r""":math:`E[\mathrm{erf}\,\mathrm{erf}'] = \frac{2}{\pi}\arcsin\frac{2k_{12}}
    {\sqrt{(1+2k_{11})(1+2k_{22})}}`, :math:`E[\dot\phi\dot\phi'] = \frac{4}{\pi}
    \left[(1+2k_{11})(1+2k_{22}) - 4k_{12}^2\right]^{-1/2}` (Williams 1997)."""
    prod = (1 + 2 * k11) * (1 + 2 * k22)
    value = 2 / math.pi * torch.arcsin(torch.clamp(2 * k12 / torch.sqrt(prod), -1.0, 1.0))
    deriv = 4 / math.pi / torch.sqrt(prod - 4 * k12**2)
    return value, deriv


def _identity_expectations(k11, k22, k12):
    return k12, torch.ones_like(k12)


_ACTIVATION_KERNELS: dict[str, Callable] = {
    "relu": _relu_expectations,
    "erf": _erf_expectations,
    "identity": _identity_expectations,
    "linear": _identity_expectations,
}


def analytic_ntk(
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    depth: int,
    activation: str = "relu",
    sigma_w: float = 2**0.5,
    sigma_b: float = 0.0,
    kernel: str = "ntk",
) -> torch.Tensor:
    r"""Infinite-width NTK (or NNGP) of an NTK-parameterised MLP with ``depth`` hidden layers.

    Conventions of neural-tangents' ``stax`` (Novak et al. 2020, arXiv 1912.02803) for
    ``serial(Dense(W_std=sigma_w, b_std=sigma_b), phi, ..., Dense(...))``, i.e. of
    ``toolkit.models.MLP(..., parameterization="ntk")``. Recursion (Jacot et al. 2018,
    arXiv 1806.07572; Lee et al. 2019, arXiv 1902.06720):

    .. math::
        \Sigma^1 = \sigma_w^2\,\frac{x\cdot x'}{d} + \sigma_b^2,\qquad \Theta^1 = \Sigma^1,\\
        \Sigma^{l+1} = \sigma_w^2\,E[\phi(u)\phi(v)] + \sigma_b^2,\qquad
        \Theta^{l+1} = \Sigma^{l+1} + \sigma_w^2\,E[\dot\phi(u)\dot\phi(v)]\,\Theta^l,

    with :math:`(u, v) \sim N(0, \Sigma^l)`, for l = 1..depth; the output kernel is
    :math:`\Theta^{depth+1}` (``kernel="nngp"``: :math:`\Sigma^{depth+1}`).
    Activations: ``"relu"`` (arc-cosine), ``"erf"``, ``"identity"``.

    Returns:
        (N1, N2) tensor in the dtype of ``x1`` (use float64 for accuracy).
    """
    check_choice(activation, "activation", list(_ACTIVATION_KERNELS))
    check_choice(kernel, "kernel", ("ntk", "nngp"))
    check_positive_int(depth, "depth (the number of hidden layers)", allow_zero=True)
    x1 = check_tensor(x1, "x1", floating=True)
    if x2 is not None:
        x2 = check_tensor(x2, "x2", floating=True)
    x2 = x1 if x2 is None else x2
    if x2.device != x1.device or x2.dtype != x1.dtype:
        raise ValueError(f"x2 must match x1's device and dtype ({x1.device}, {x1.dtype})")
    a, b = x1.flatten(1), x2.flatten(1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x1 and x2 must have the same feature size, got {a.shape[1]}, {b.shape[1]}")
    d = a.shape[1]
    sw2, sb2 = sigma_w**2, sigma_b**2
    k12 = sw2 * (a @ b.T) / d + sb2
    k11 = sw2 * (a * a).sum(1) / d + sb2
    k22 = sw2 * (b * b).sum(1) / d + sb2
    ntk = k12
    expect = _ACTIVATION_KERNELS[activation]
    for _ in range(depth):
        value, deriv = expect(k11[:, None], k22[None, :], k12)
        v11 = expect(k11, k11, k11)[0]
        v22 = expect(k22, k22, k22)[0]
        k12, k11, k22 = sw2 * value + sb2, sw2 * v11 + sb2, sw2 * v22 + sb2
        ntk = k12 + sw2 * deriv * ntk
    return ntk if kernel == "ntk" else k12
