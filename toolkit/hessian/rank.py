r"""The numerical rank of the loss Hessian, and of its Gauss–Newton (outer-product) part.

Singh, Hofmann & Schölkopf (2023, arXiv 2305.09088) show that the Hessian of a CNN's loss is
highly rank-deficient: its rank grows roughly like the *square root* of the number of parameters
as the channel counts grow. Here the Hessian is formed densely (``HessianOperator.dense()`` on a
float64 copy of a tiny model) and its rank counted against a stated tolerance.

**Tolerance.** A singular value :math:`σ_i` counts when :math:`σ_i > τ` with
:math:`τ = \max(\mathrm{atol},\ \mathrm{rtol}\cdot σ_{\max})` and, by default,
:math:`\mathrm{rtol} = n\cdot ε` (``n`` the matrix size, ``ε`` the dtype's machine epsilon: the
convention of ``numpy.linalg.matrix_rank`` and LAPACK). In float64 that separates the rank from
rounding noise by many orders of magnitude on the nets used here; in float32 the gap is small, so
the helpers below compute in float64.

The closed form used as a reference (Singh, Bachmann & Hofmann 2021, arXiv 2106.16225): for a
linear network (any depth, no biases) with whitened-rank-:math:`d` inputs, :math:`K` outputs and
narrowest hidden width :math:`M`, the Gauss–Newton part under MSE has rank
:math:`q(d + K - q)`, :math:`q = \min(d, K, M)` at a generic point: the dimension of the tangent
space of the rank-:math:`q` matrices, which the end-to-end map :math:`W_L\cdots W_1` sweeps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev, vmap

from .._checks import check_choice, check_module
from ..train import get_loss
from ..utils import as_tensors
from ._autodiff import second_order
from .operator import HessianOperator

__all__ = ["Rank", "numerical_rank", "hessian_matrix", "hessian_rank", "linear_gn_rank"]


@dataclass(frozen=True)
class Rank:
    """A numerical rank with the tolerance that decided it (``int(rank)`` gives the number)."""

    rank: int
    tol: float        # singular values above this count
    sigma_max: float  # the largest singular value
    size: int         # the matrix's larger dimension

    def __int__(self) -> int:
        return self.rank


def numerical_rank(matrix: torch.Tensor, *, rtol: float | None = None,
                   atol: float = 0.0) -> Rank:
    r"""The number of singular values of ``matrix`` above
    :math:`τ = \max(\mathrm{atol}, \mathrm{rtol}\cdot σ_{\max})`; ``rtol`` defaults to
    ``max(matrix.shape) * eps(matrix.dtype)`` (numpy's ``matrix_rank``). Returns a :class:`Rank`
    that records τ, so a figure or a test can state it."""
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {tuple(matrix.shape)}")
    if rtol is not None and rtol < 0 or atol < 0:
        raise ValueError("rtol and atol must be non-negative")
    size = max(matrix.shape)
    if rtol is None:
        rtol = size * torch.finfo(matrix.dtype).eps
    sv = torch.linalg.svdvals(matrix)
    smax = float(sv.max()) if sv.numel() else 0.0
    tol = max(atol, rtol * smax)
    return Rank(int((sv > tol).sum()), tol, smax, size)


def _double(model: nn.Module, data):
    model64 = copy.deepcopy(check_module(model)).double().eval()
    x, y = as_tensors(data)
    x = x.double()
    y = y.double() if y.is_floating_point() else y
    return model64, x, y


def hessian_matrix(model: nn.Module, loss_fn, data, *, part: str = "full") -> torch.Tensor:
    r"""The dense float64 Hessian of the mean loss over ``data`` (tiny models only: ``P`` × ``P``).

    ``part="full"``: :math:`∇²_θ L` (``HessianOperator.dense()``). ``part="gauss_newton"``: the
    outer-product part :math:`\frac1N\sum_i J_i^\top (∇²_f ℓ_i) J_i`, :math:`J_i` the Jacobian of
    the outputs on sample :math:`i`; the rest, the *functional* Hessian, is what the residuals
    contribute."""
    check_choice(part, "part", ("full", "gauss_newton"))
    model64, x, y = _double(model, data)
    if part == "full":
        return HessianOperator(model64, loss_fn, (x, y), method="fwd-rev").dense()
    loss = get_loss(loss_fn)
    params = {n: p.detach() for n, p in model64.named_parameters() if p.requires_grad}

    def out(p, xi):
        return functional_call(model64, p, (xi.unsqueeze(0),)).squeeze(0)

    with second_order("fwd-rev"):
        jac = vmap(jacrev(out), in_dims=(None, 0))(params, x)        # {name: (N, K, *shape)}
        f = vmap(lambda xi: out(params, xi))(x)                       # (N, K)
        A = vmap(hessian(lambda fi, yi: loss(fi.unsqueeze(0), yi.unsqueeze(0))))(f, y)  # (N, K, K)
    J = torch.cat([j.reshape(j.shape[0], j.shape[1], -1) for j in jac.values()], dim=2)
    return torch.einsum("nkp,nkl,nlq->pq", J, A, J) / len(x)


def hessian_rank(model: nn.Module, loss_fn, data, *, part: str = "full",
                 rtol: float | None = None, atol: float = 0.0) -> Rank:
    """:func:`numerical_rank` of :func:`hessian_matrix` (float64, default tolerance
    ``P · eps64 · σ_max``)."""
    return numerical_rank(hessian_matrix(model, loss_fn, data, part=part), rtol=rtol, atol=atol)


def linear_gn_rank(input_rank: int, n_outputs: int, min_width: int) -> int:
    r"""The closed-form rank :math:`q(d + K - q)`, :math:`q = \min(d, K, M)`, of the Gauss–Newton
    Hessian of a bias-free linear network under MSE at a generic point (arXiv 2106.16225)."""
    q = min(input_rank, n_outputs, min_width)
    return q * (input_rank + n_outputs - q)
