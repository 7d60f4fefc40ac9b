r"""How the loss landscape settles as the sample grows (Kiselev & Grabovoy 2024, arXiv 2409.11995).

Put the objects of a data set in an order and let :math:`L_k(θ) = \frac1k\sum_{i\le k} ℓ_i(θ)` be
the mean cross-entropy of the first ``k``. The paper's eq. (1) is the exact identity

.. math::  L_{k+1}(θ) - L_k(θ) = \frac{ℓ_{k+1}(θ) - L_k(θ)}{k+1},

so the surfaces of nested subsets differ by O(1/k) wherever the losses stay bounded. Its
Theorem 1 bounds the (Gauss–Newton) Hessian of one object for an ``L``-layer bias-free ReLU MLP
with :math:`\|W^{(p)}\|_2 \le M_W` and :math:`\|x_i\|_2 \le M_x`,

.. math::  \|H_i\|_2 \le M_H = L\sqrt2\,M_x^2 M_W^{2L} + \sqrt2\,\frac{M_W^2(M_W^{2L}-1)}{M_W^2-1},

and its Lemma 2 (proof in appendix A.4, from the second-order Taylor model of :math:`L_k` and
:math:`L_{k+1}` around a common minimum θ*, eq. (2)) bounds the difference for
:math:`\|θ-θ^*\|_2 \le R` and :math:`|ℓ_i(θ^*)| \le M_ℓ` by

.. math::  |L_{k+1}(θ) - L_k(θ)| \le \frac{2}{k+1}\bigl(M_ℓ + M_H R^2\bigr).

There is no ½ in front of :math:`M_H R^2`: the paper's difference formula drops the ½ of the
Taylor term (so its bound is, if anything, twice as loose). The bound is on the quadratic model;
the measured differences here are those of the true loss.

How the surfaces are computed. The per-object losses :math:`ℓ_i(θ^* + a\,d_1 + b\,d_2)` are
evaluated *once* on the plane (:func:`per_sample_surface`), and the identity above makes
:math:`L_k` for every ``k`` one cumulative sum over objects (:func:`running_means`). The tests
compare that with :func:`toolkit.landscape.surface_2d` evaluated directly on the first ``k``
objects with the same directions. :func:`consecutive_differences` averages over several random
orderings, as the authors' code does (100 orderings there, plus an exponential moving average
that we do not apply).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from . import hessian, landscape
from ._checks import check_module, check_positive, check_positive_int, check_tensor
from .models import ScaledLinear
from .utils import as_tensors, eval_mode

__all__ = ["PlaneLosses", "per_sample_surface", "running_means", "Differences",
           "consecutive_differences", "difference_map", "hessian_norm_bound", "HessianBound",
           "theorem1_bound", "per_sample_gauss_newton_norms", "difference_bound",
           "LossDifferenceBound", "lemma2_bound", "subset_top_eigenvalues"]


# ------------------------------------------------------------------------------- surfaces


@dataclass
class PlaneLosses:
    """Per-object cross-entropy on a plane θ* + a·d1 + b·d2.

    ``losses[i, r, c]`` is object ``i``'s loss at ``(x[c], y[r])`` (the layout of
    :class:`toolkit.landscape.Surface`); ``center`` is the per-object loss at θ* itself;
    ``distance[r, c]`` is ‖θ − θ*‖₂ at each grid point and ``radius`` its maximum (the paper's R).
    """

    x: np.ndarray
    y: np.ndarray
    losses: np.ndarray
    center: np.ndarray
    distance: np.ndarray

    @property
    def radius(self) -> float:
        return float(self.distance.max())

    @property
    def n(self) -> int:
        return int(self.losses.shape[0])


def _data(data, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = as_tensors(data)
    p = next(model.parameters())
    x = check_tensor(x, "x", floating=True).to(device=p.device, dtype=p.dtype)
    if y.shape[:1] != x.shape[:1]:
        raise ValueError(f"data has {len(x)} inputs but {len(y)} labels; give one label per input.")
    if y.is_floating_point():
        raise TypeError("the labels must be integer class indices (cross-entropy, as in the "
                        "paper); use y.long().")
    return x, y.to(p.device)


def _per_sample_ce(model, params, x, y, batch_size: int | None) -> torch.Tensor:
    out = []
    step = len(x) if batch_size is None else int(batch_size)
    for i in range(0, len(x), step):
        logits = functional_call(model, params, (x[i:i + step],))
        out.append(F.cross_entropy(logits, y[i:i + step], reduction="none"))
    return torch.cat(out)


@torch.no_grad()
def per_sample_surface(model: nn.Module, data, d1, d2, *, xrange=(-1.0, 1.0),
                       yrange=(-1.0, 1.0), steps: int = 21,
                       batch_size: int | None = None) -> PlaneLosses:
    r"""Every object's cross-entropy on the ``steps × steps`` grid θ* + a·d1 + b·d2 (θ* = the
    model's parameters; directions as for :func:`toolkit.landscape.surface_2d`, e.g.
    filter-normalised ones from :func:`toolkit.landscape.random_direction`).

    The mean over the first ``k`` objects is :math:`L_k` on the plane (:func:`running_means`);
    the same directions serve every ``k``. Memory: ``N · steps²`` floats. Returns a
    :class:`PlaneLosses`; the model's parameters are untouched.
    """
    check_module(model)
    if not isinstance(steps, int | np.integer) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (points per axis), got {steps!r}.")
    x, y = _data(data, model)
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    origin = landscape.parameters_of(model)
    d1 = landscape.check_direction(model, d1, "d1")
    d2 = landscape.check_direction(model, d2, "d2")
    xs = np.linspace(*map(float, xrange), steps)
    ys = np.linspace(*map(float, yrange), steps)
    if not (xs[0] < xs[-1] and ys[0] < ys[-1]):
        raise ValueError(f"xrange and yrange must be pairs (low, high) with low < high, got "
                         f"{xrange!r} and {yrange!r}.")
    losses = torch.empty(len(x), steps, steps, dtype=torch.float64)
    with eval_mode(model):
        for r, b in enumerate(ys):
            for c, a in enumerate(xs):
                params = {n: origin[n] + float(a) * d1[n] + float(b) * d2[n] for n in origin}
                losses[:, r, c] = _per_sample_ce(model, params, x, y, batch_size).double().cpu()
        center = _per_sample_ce(model, origin, x, y, batch_size).double().cpu().numpy()
    f1, f2 = landscape.flatten(d1).double(), landscape.flatten(d2).double()
    g11, g12, g22 = float(f1 @ f1), float(f1 @ f2), float(f2 @ f2)
    gx, gy = np.meshgrid(xs, ys)
    distance = np.sqrt(np.maximum(gx**2 * g11 + 2 * gx * gy * g12 + gy**2 * g22, 0.0))
    return PlaneLosses(x=xs, y=ys, losses=losses.numpy(), center=center, distance=distance)


def _order(n: int, order) -> np.ndarray:
    if order is None:
        return np.arange(n)
    order = np.asarray(order)
    if order.ndim != 1 or len(order) < 1 or order.max(initial=-1) >= n or order.min(initial=0) < 0:
        raise ValueError(f"order must be a 1-D array of object indices in [0, {n}), got shape "
                         f"{order.shape}.")
    return order


def running_means(losses, order=None) -> np.ndarray:
    r""":math:`L_k = \frac1k \sum_{i\le k} ℓ_{\mathrm{order}[i]}` for ``k = 1 … len(order)``, as
    one cumulative sum over the first axis of ``losses`` (objects first, any trailing shape,
    e.g. a :attr:`PlaneLosses.losses` grid). ``order`` defaults to the stored order; it may be
    a subset. Row ``k − 1`` of the result is :math:`L_k`."""
    arr = losses.losses if isinstance(losses, PlaneLosses) else np.asarray(losses, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[0] == 0:
        raise ValueError("losses is empty: need at least one object (first axis).")
    idx = _order(arr.shape[0], order)
    counts = np.arange(1, len(idx) + 1, dtype=np.float64).reshape(-1, *([1] * (arr.ndim - 1)))
    return np.cumsum(arr[idx], axis=0) / counts


@dataclass
class Differences:
    """:math:`|L_{k+1} − L_k|` over the plane, per ``k`` (``k[j]`` objects → ``k[j] + 1``).

    ``mean``: the mean over the grid, averaged over the orderings; ``max``: the largest value on
    the grid in any ordering; ``center``: the value at θ* (the grid point nearest the origin),
    averaged over the orderings; ``orders``: how many random orderings were averaged."""

    k: np.ndarray
    mean: np.ndarray
    max: np.ndarray
    center: np.ndarray
    orders: int


def consecutive_differences(surface: PlaneLosses, *, orders: int = 10, seed: int = 0,
                            shuffle: bool = True) -> Differences:
    r""":math:`|L_{k+1}(θ) − L_k(θ)|` on the plane for ``k = 1 … N − 1``, from the running means
    of :func:`running_means` (nested subsets: the first ``k + 1`` objects contain the first
    ``k``). ``orders`` random orderings of the objects (seeded) are averaged, as the paper's
    experiments average 100; ``shuffle=False`` uses the stored order once."""
    if not isinstance(surface, PlaneLosses):
        raise TypeError("surface must be a PlaneLosses from per_sample_surface(...), got "
                        f"{type(surface).__name__}.")
    if surface.n < 2:
        raise ValueError(f"need at least 2 objects for a difference L_(k+1) - L_k, got {surface.n}.")
    orders = check_positive_int(orders, "orders")
    rng = np.random.default_rng(seed)
    ci, cj = np.abs(surface.y).argmin(), np.abs(surface.x).argmin()
    mean = np.zeros(surface.n - 1)
    top = np.zeros(surface.n - 1)
    center = np.zeros(surface.n - 1)
    for _ in range(orders if shuffle else 1):
        order = rng.permutation(surface.n) if shuffle else None
        diff = np.abs(np.diff(running_means(surface, order), axis=0))  # (N-1, steps, steps)
        flat = diff.reshape(len(diff), -1)
        mean += flat.mean(axis=1)
        top = np.maximum(top, flat.max(axis=1))
        center += diff[:, ci, cj]
    m = orders if shuffle else 1
    return Differences(k=np.arange(1, surface.n), mean=mean / m, max=top, center=center / m,
                       orders=m)


def difference_map(surface: PlaneLosses, k: int, order=None) -> np.ndarray:
    r""":math:`|L_{k+1}(θ) − L_k(θ)|` on the grid for one ``k`` and one ordering, computed by
    eq. (1) of the paper: :math:`|ℓ_{k+1} − L_k| / (k + 1)`."""
    k = check_positive_int(k, "k")
    idx = _order(surface.n, order)
    if k + 1 > len(idx):
        raise ValueError(f"k={k} needs k + 1 = {k + 1} objects but the order has {len(idx)}; "
                         f"choose k <= {len(idx) - 1}.")
    mean_k = surface.losses[idx[:k]].mean(axis=0)
    return np.abs(surface.losses[idx[k]] - mean_k) / (k + 1)


# ------------------------------------------------------------------------------- the bounds


def _relu_mlp_layers(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of a bias-free ReLU MLP, in registration order; refuse anything else."""
    check_module(model)
    linears, bad = [], []
    for name, m in model.named_modules():
        if isinstance(m, ScaledLinear):
            bad.append(f"{name} (scaled {type(m).__name__}: use parameterization='standard')")
        elif isinstance(m, nn.Linear):
            if m.bias is not None:
                bad.append(f"{name} (has a bias: build the net with bias=False)")
            linears.append(m)
        elif not isinstance(m, nn.Sequential | nn.ReLU | nn.Flatten | nn.Identity) and name:
            if next(m.children(), None) is None:
                bad.append(f"{name} ({type(m).__name__})")
    if bad or not linears:
        raise ValueError("Theorem 1 of arXiv 2409.11995 is for a fully connected ReLU network "
                         "without biases (e.g. models.MLP(d, widths, K, bias=False)); this model "
                         f"has {', '.join(bad) if bad else 'no Linear layer'}.")
    return linears


def hessian_norm_bound(depth: int, max_weight_norm: float, max_input_norm: float) -> float:
    r"""Theorem 1 of arXiv 2409.11995:
    :math:`L\sqrt2 M_x^2 M_W^{2L} + \sqrt2 \sum_{p=1}^{L} M_W^{2p}` (the paper writes the sum in
    closed form, :math:`M_W^2(M_W^{2L}-1)/(M_W^2-1)`; the sum also covers :math:`M_W = 1`)."""
    depth = check_positive_int(depth, "depth")
    mw = check_positive(max_weight_norm, "max_weight_norm", allow_zero=True)
    mx = check_positive(max_input_norm, "max_input_norm", allow_zero=True)
    geometric = sum(mw ** (2 * p) for p in range(1, depth + 1))
    return float(depth * np.sqrt(2) * mx**2 * mw ** (2 * depth) + np.sqrt(2) * geometric)


@dataclass
class HessianBound:
    """Theorem 1's constants measured on a network and a data set, and the bound ``M_H``."""

    depth: int
    weight_norms: np.ndarray
    max_weight_norm: float
    max_input_norm: float
    value: float


def theorem1_bound(model: nn.Module, x) -> HessianBound:
    r"""Theorem 1 of arXiv 2409.11995 evaluated on ``model``: ``L`` its number of Linear layers,
    :math:`M_W = \max_p \|W^{(p)}\|_2` from the actual weights (exact spectral norms),
    :math:`M_x = \max_i \|x_i\|_2` over ``x`` (flattened inputs, or an (x, y) pair/dataset).
    The model must be a bias-free ReLU MLP in the standard parameterisation (checked)."""
    layers = _relu_mlp_layers(model)
    if not isinstance(x, torch.Tensor):
        x = as_tensors(x)[0]
    x = check_tensor(x, "x", floating=True)
    norms = np.array([float(torch.linalg.matrix_norm(m.weight.detach().double(), ord=2))
                      for m in layers])
    mx = float(x.detach().double().reshape(len(x), -1).norm(dim=1).max())
    mw = float(norms.max())
    return HessianBound(depth=len(layers), weight_norms=norms, max_weight_norm=mw,
                        max_input_norm=mx, value=hessian_norm_bound(len(layers), mw, mx))


def per_sample_gauss_newton_norms(model: nn.Module, data, *, chunk: int = 64) -> np.ndarray:
    r"""‖H_i‖₂ of each object's Gauss–Newton Hessian :math:`H_i = J_i^\top A_i J_i` (the
    matrix Theorem 1 bounds: :math:`J_i` the Jacobian of the logits in the parameters,
    :math:`A_i = \mathrm{diag}(p_i) - p_i p_i^\top` the cross-entropy Hessian in the logits),
    exactly, as the top eigenvalue of the K × K matrix :math:`A_i^{1/2} J_i J_i^\top A_i^{1/2}`.
    Float64; ``chunk`` objects' Jacobians at a time (K · P floats each)."""
    from torch.func import jacrev, vmap

    check_module(model)
    x, y = _data(data, model)
    chunk = check_positive_int(chunk, "chunk")
    model64 = copy.deepcopy(model).double().eval()
    params = {n: p.detach() for n, p in model64.named_parameters()}

    def logits(p, xi):
        return functional_call(model64, p, (xi.unsqueeze(0),)).squeeze(0)

    out = []
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk].double()
        jac = vmap(jacrev(logits), in_dims=(None, 0))(params, xb)
        J = torch.cat([j.reshape(j.shape[0], j.shape[1], -1) for j in jac.values()], 2)
        prob = torch.softmax(functional_call(model64, params, (xb,)), dim=1)
        A = torch.diag_embed(prob) - prob[:, :, None] * prob[:, None, :]
        w, V = torch.linalg.eigh(A)
        root = V @ torch.diag_embed(w.clamp_min(0).sqrt()) @ V.transpose(1, 2)
        M = root @ (J @ J.transpose(1, 2)) @ root
        out.append(torch.linalg.eigvalsh(M)[:, -1].cpu())
    return torch.cat(out).numpy()


def difference_bound(k, max_loss: float, hessian_bound: float, radius: float) -> np.ndarray:
    r"""Lemma 2 of arXiv 2409.11995 as stated: :math:`\frac{2}{k+1}(M_ℓ + M_H R^2)` for each
    ``k`` (an int or an array of ints ≥ 1)."""
    k = np.asarray(k, dtype=np.float64)
    if k.size == 0 or (k < 1).any() or (k != np.round(k)).any():
        raise ValueError(f"k must hold integers >= 1 (the size of the smaller subset), got {k!r}.")
    ml = check_positive(max_loss, "max_loss", allow_zero=True)
    mh = check_positive(hessian_bound, "hessian_bound", allow_zero=True)
    r = check_positive(radius, "radius", allow_zero=True)
    return 2.0 / (k + 1.0) * (ml + mh * r**2)


@dataclass
class LossDifferenceBound:
    """Lemma 2's constants and the bound as a function of ``k`` (:meth:`at`)."""

    max_loss: float
    radius: float
    hessian: HessianBound

    def at(self, k) -> np.ndarray:
        return difference_bound(k, self.max_loss, self.hessian.value, self.radius)


def lemma2_bound(model: nn.Module, data, surface: PlaneLosses) -> LossDifferenceBound:
    r"""Lemma 2 of arXiv 2409.11995 for the plane of ``surface``: :math:`M_ℓ = \max_i ℓ_i(θ^*)`
    over the objects of ``surface`` (θ* its centre), ``R`` the plane's largest ‖θ − θ*‖₂, and
    :math:`M_H` from :func:`theorem1_bound` on ``model`` (whose parameters must be θ*) and the
    inputs of ``data``."""
    if not isinstance(surface, PlaneLosses):
        raise TypeError("surface must be a PlaneLosses from per_sample_surface(...), got "
                        f"{type(surface).__name__}.")
    hb = theorem1_bound(model, as_tensors(data)[0])
    return LossDifferenceBound(max_loss=float(np.abs(surface.center).max()),
                               radius=surface.radius, hessian=hb)


# ------------------------------------------------------------------------------- curvature


def subset_top_eigenvalues(model: nn.Module, data, ks: Sequence[int], *, order=None,
                           tol: float = 1e-4, max_iter: int = 200, seed: int = 0) -> np.ndarray:
    r"""The largest eigenvalue of the Hessian of :math:`L_k` (the full Hessian of the mean
    cross-entropy over the first ``k`` objects of ``order``) for each ``k`` in ``ks``, by
    Lanczos (:func:`toolkit.hessian.top_eigenvalues`)."""
    check_module(model)
    x, y = _data(data, model)
    idx = torch.as_tensor(_order(len(x), order), device=x.device)
    ks = [check_positive_int(k, "ks[...]") for k in ks]
    if not ks:
        raise ValueError("ks is empty; give the subset sizes, e.g. ks=[16, 64, 256].")
    if max(ks) > len(idx):
        raise ValueError(f"ks has {max(ks)} but there are only {len(idx)} objects; choose "
                         f"subset sizes <= {len(idx)}.")
    out = []
    with eval_mode(model):
        for k in ks:
            sub = idx[:k]
            eig = hessian.top_eigenvalues(model, "ce", (x[sub], y[sub]), k=1, tol=tol,
                                          max_iter=max_iter, seed=seed)
            out.append(float(eig.eigenvalues[0]))
    return np.array(out)
