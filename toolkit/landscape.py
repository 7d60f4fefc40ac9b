r"""Loss landscapes: random and PCA directions, 1-D interpolations and 2-D surfaces.

A *slice* of the loss landscape around parameters θ* is the function

.. math::  f(a, b) = L(θ^* + a\,δ + b\,η)

for two directions δ, η in parameter space (Li, Xu, Taylor, Studer, Goldstein 2018,
arXiv 1712.09913); a 1-D cut is L(θ₀ + α(θ₁ − θ₀)) (Goodfellow, Vinyals, Saxe 2015,
arXiv 1412.6544).

Parameters are dicts ``name -> tensor``; after any call the model's own parameters hold the
values they had before. The grid points of :func:`surface_2d` and :func:`interpolate` are
evaluated by the private :mod:`toolkit._grid` (vectorised or looped in chunks, the first linear
layer computed once per direction; its docstring says how).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _grid
from ._checks import check_choice, check_module, check_positive
from .train import LOSSES, get_loss

__all__ = ["Params", "parameters_of", "check_direction", "flatten", "random_direction",
           "with_parameters", "balanced_rescale", "TrajectoryRecorder", "project", "PCAPlane",
           "pca_directions", "Surface", "surface_2d", "Interpolation", "interpolate",
           "direction_norm", "relative_difference", "curvature_map", "nonconvexity"]

Params = dict[str, torch.Tensor]

_NORMALIZATIONS = ("filter", "layer", "none")
_IGNORES = ("biasbn", "none", None)


# ----------------------------------------------------------------------------- parameter helpers


def parameters_of(model: nn.Module | Mapping[str, torch.Tensor]) -> Params:
    """Detached views (no copies) ``name -> tensor`` of a model's parameters (or a dict's)."""
    if isinstance(model, nn.Module):
        return {n: p.detach() for n, p in model.named_parameters()}
    if isinstance(model, Mapping):
        return {n: torch.as_tensor(t).detach() for n, t in model.items()}
    raise TypeError(f"expected an nn.Module or a dict name -> tensor, got {type(model).__name__}.")


def _grid_loss(loss_fn) -> Callable:
    """:func:`toolkit.train.get_loss`, except that plain cross-entropy is evaluated as
    :func:`_cross_entropy` (the same value, faster on the CPU for few classes)."""
    fn = get_loss(loss_fn)
    return _cross_entropy if fn is F.cross_entropy or fn is LOSSES["ce"] else fn


def _cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(outputs, targets)`` (mean over samples), written by hand for few classes.

    Why by hand: PyTorch's CPU ``log_softmax`` over a short last dimension that is not a multiple
    of the vector width is slow (torch 2.13, one thread, 1347 digits x 10 classes: 0.21 ms,
    ~7 % of a grid point of the digits MLP), while the same ``log_softmax`` taken over the first
    dimension of the transposed logits takes 0.04 ms. Anything else (other devices, where the
    check for ignored targets would also cost a synchronisation per point) goes to
    ``F.cross_entropy``.
    """
    if (outputs.device.type != "cpu" or outputs.dim() != 2 or outputs.shape[1] >= 16
            or targets.dim() != 1 or targets.dtype.is_floating_point
            or bool((targets < 0).any())):
        return F.cross_entropy(outputs, targets)  # many classes, soft or ignored targets
    return -F.log_softmax(outputs.T, dim=0).gather(0, targets[None]).mean()


_cross_entropy.takes_targets = True  # (outputs, targets), also from a dict batch's "labels"


def check_direction(model: nn.Module, direction, name: str = "direction") -> Params:
    """Validate a direction against ``model`` and return it as a full dict on the model's device.

    ``direction`` is a dict ``name -> tensor`` (missing names count as zero) or a flat vector with
    one entry per parameter in ``model.named_parameters()`` order. Unknown names and wrong shapes
    raise a ``ValueError`` naming the parameter.
    """
    params = parameters_of(model)
    if isinstance(direction, torch.Tensor):
        total = sum(p.numel() for p in params.values())
        if direction.dim() != 1 or direction.numel() != total:
            raise ValueError(f"{name} is a tensor of shape {tuple(direction.shape)}; a flat "
                             f"direction must have exactly {total} entries (one per parameter).")
        out, i = {}, 0
        for n, p in params.items():
            out[n] = direction[i:i + p.numel()].view_as(p).to(p)
            i += p.numel()
        return out
    if not isinstance(direction, Mapping):
        raise TypeError(f"{name} must be a dict name -> tensor (e.g. from random_direction) or a "
                        f"flat tensor, got {type(direction).__name__}.")
    unknown = sorted(set(direction) - set(params))
    if unknown:
        raise ValueError(f"{name} has entries {unknown[:5]} that are not parameters of the model; "
                         "build it from this model (random_direction(model)).")
    out = {}
    for n, p in params.items():
        if n not in direction:
            out[n] = torch.zeros_like(p)
            continue
        d = torch.as_tensor(direction[n])
        if d.shape != p.shape:
            raise ValueError(f"{name}[{n!r}] has shape {tuple(d.shape)} but the parameter has "
                             f"shape {tuple(p.shape)}; build the direction from this model.")
        out[n] = d.detach().to(device=p.device, dtype=p.dtype)
    return out


def flatten(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate a dict of tensors into one flat vector (dict order)."""
    return torch.cat([t.reshape(-1) for t in params.values()])


def _norm(d: Mapping[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in d.values())))


# ---------------------------------------------------------------------------------- directions


def random_direction(model: nn.Module, *, normalization: str = "filter",
                     ignore: str | None = "biasbn", seed: int | None = None) -> Params:
    r"""A Gaussian random direction δ in parameter space, normalised per filter, per layer or not.

    Li et al. 2018 (arXiv 1712.09913), §4: draw d ~ N(0, I) with the shape of each parameter θ and

    * ``"filter"``: rescale every output filter (row ``i`` along dimension 0) to the norm of the
      same filter of the weights, d_i ← d_i · ‖θ_i‖ / ‖d_i‖. Scale-invariant networks (ReLU,
      batch norm) then give the same picture whatever the scale of their weights.
    * ``"layer"``: rescale the whole tensor, d ← d · ‖θ‖ / ‖d‖.
    * ``"none"``: keep d ~ N(0, I).

    With ``ignore="biasbn"`` every 1-D parameter (biases, norm-layer scales and shifts) gets δ = 0,
    as in the paper. With ``ignore="none"`` a 1-D parameter is treated as a single filter.
    The draw uses a CPU generator seeded with ``seed``, so the same seed gives the same direction
    on every device. Returns a dict ``name -> tensor`` on the parameters' device.
    """
    check_choice(normalization, "normalization", _NORMALIZATIONS)
    check_choice(ignore, "ignore", _IGNORES)
    check_module(model)
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    out = {}
    for name, p in parameters_of(model).items():
        d = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        w = p.detach().cpu().double()
        if p.dim() <= 1 and ignore == "biasbn":
            d.zero_()
        elif normalization == "filter":
            rows_d = d.reshape(d.shape[0], -1) if d.dim() > 1 else d.reshape(1, -1)
            rows_w = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)
            scale = rows_w.norm(dim=1, keepdim=True) / rows_d.norm(dim=1, keepdim=True).clamp_min(
                1e-12)
            d = (rows_d * scale).reshape(p.shape)
        elif normalization == "layer":
            d = d * (w.norm() / d.norm().clamp_min(1e-12))
        out[name] = d.to(device=p.device, dtype=p.dtype)
    return out


def with_parameters(model: nn.Module, params: Mapping[str, torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` (eval mode, same device) holding ``params`` (a dict
    ``name -> tensor``, e.g. one point of a trajectory). The original model is not touched."""
    out = copy.deepcopy(model)
    missing = [n for n, _ in out.named_parameters() if n not in params]
    if missing:
        raise ValueError(f"params lacks entries for {missing[:5]}; give every parameter.")
    full = check_direction(out, parameters_of(params), "params")
    with torch.no_grad():
        for n, p in out.named_parameters():
            p.copy_(full[n])
    return out.eval()


def balanced_rescale(model: nn.Module, alpha: float, *, layer: int = 0) -> nn.Module:
    r"""A copy of ``model`` computing the same function with differently scaled weights.

    Multiplies the weight and bias of the ``layer``-th ``nn.Linear``/``nn.Conv`` module by α and the
    weight of the next one by 1/α. For positively homogeneous activations (ReLU, identity)
    relu(αz) = α relu(z), so the network function is unchanged — yet a surface along *unnormalised*
    random directions looks sharper or flatter depending on α. This is Li et al.'s (arXiv
    1712.09913) argument for filter normalisation, which makes the two surfaces identical.
    """
    check_positive(alpha, "alpha")
    out = copy.deepcopy(model)
    layers = [m for m in out.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]
    if not 0 <= layer < len(layers) - 1:
        raise ValueError(f"layer={layer} needs a next layer; the model has {len(layers)} "
                         "linear/conv layers, so choose 0..{len(layers) - 2}.")
    first, second = layers[layer], layers[layer + 1]
    with torch.no_grad():
        first.weight.mul_(alpha)
        if first.bias is not None:
            first.bias.mul_(alpha)
        second.weight.div_(alpha)
    return out


# ---------------------------------------------------------------------------- trajectories & PCA


class TrajectoryRecorder:
    """A :func:`toolkit.train.fit` callback that keeps a CPU copy of the parameters at each call.

    ``fit(..., callbacks=[rec], callback_every=k)`` records epoch 0, every k-th epoch and the
    last one. ``rec.trajectory`` is the list of parameter dicts, ``rec.epochs`` their epochs.
    """

    def __init__(self):
        self.trajectory: list[Params] = []
        self.epochs: list[int] = []

    def __call__(self, epoch: int, model: nn.Module, history_rows=None) -> None:
        self.trajectory.append({n: p.detach().cpu().clone() for n, p in model.named_parameters()})
        self.epochs.append(int(epoch))
        return None

    def __len__(self) -> int:
        return len(self.trajectory)


def _as_trajectory(trajectory) -> list[Params]:
    if isinstance(trajectory, TrajectoryRecorder):
        trajectory = trajectory.trajectory
    if not isinstance(trajectory, Sequence) or len(trajectory) == 0:
        raise ValueError("trajectory must be a non-empty list of parameter dicts or models "
                         "(e.g. TrajectoryRecorder().trajectory).")
    out = [{n: t.detach().cpu() for n, t in parameters_of(p).items()} for p in trajectory]
    keys = list(out[0])
    for i, p in enumerate(out):
        if list(p) != keys or any(p[k].shape != out[0][k].shape for k in keys):
            raise ValueError(f"trajectory[{i}] has different parameter names or shapes than "
                             "trajectory[0]; record all points from the same model.")
    return out


def _unflatten(flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Params:
    out, i = {}, 0
    for n, t in like.items():
        out[n] = flat[i:i + t.numel()].view_as(t).to(t.dtype)
        i += t.numel()
    return out


def project(trajectory, d1, d2, origin) -> np.ndarray:
    r"""Coordinates (a_t, b_t) of each point of a trajectory on the plane origin + a·d1 + b·d2.

    Least squares: (a_t, b_t) = argmin ‖θ_t − origin − a d1 − b d2‖, which is the orthogonal
    projection for orthonormal d1, d2 (PCA directions) and still meaningful for random ones.
    Returns an array of shape (T, 2).
    """
    traj = _as_trajectory(trajectory)
    origin = flatten({n: t.cpu() for n, t in parameters_of(origin).items()}).double()
    basis = torch.stack([flatten({n: t.cpu() for n, t in parameters_of(d).items()}).double()
                         for d in (d1, d2)], dim=1)
    if basis.shape[0] != origin.numel():
        raise ValueError(f"d1/d2 have {basis.shape[0]} entries but origin has {origin.numel()}.")
    diffs = torch.stack([flatten(p).double() - origin for p in traj], dim=1)
    coords = torch.linalg.lstsq(basis, diffs).solution
    return coords.T.numpy()


@dataclass
class PCAPlane:
    """Two PCA directions of a trajectory and the trajectory's coordinates on their plane."""

    d1: Params
    d2: Params
    origin: Params
    explained_variance_ratio: np.ndarray
    coords: np.ndarray

    def surface_range(self, margin: float = 0.25) -> tuple[tuple[float, float], ...]:
        """(xrange, yrange) covering the projected trajectory with a relative ``margin``."""
        lo, hi = self.coords.min(axis=0), self.coords.max(axis=0)
        pad = margin * np.maximum(hi - lo, 1e-8)
        return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (float(lo[1] - pad[1]),
                                                              float(hi[1] + pad[1]))


def pca_directions(trajectory, *, origin=None) -> PCAPlane:
    r"""The plane of largest variation of an optimisation trajectory (Li et al. 2018, §7).

    With M the T×P matrix of rows θ_t − θ_final (T saved checkpoints, P parameters), the two
    directions are the first two principal axes of M (scikit-learn's PCA, which centres the rows),
    and ``explained_variance_ratio`` says how much of the trajectory's variance the plane holds.
    Random directions in high dimension are nearly orthogonal to the path, so only a PCA plane
    shows it. ``origin`` defaults to the last point; ``coords`` are the trajectory's coordinates.
    """
    from sklearn.decomposition import PCA

    traj = _as_trajectory(trajectory)
    if len(traj) < 3:
        raise ValueError(f"trajectory has {len(traj)} points; PCA needs at least 3 checkpoints.")
    origin_d = traj[-1] if origin is None else {n: t.cpu()
                                                  for n, t in parameters_of(origin).items()}
    o = flatten(origin_d).double()
    m = torch.stack([flatten(p).double() - o for p in traj]).numpy()
    pca = PCA(n_components=2, svd_solver="full").fit(m)
    comps = torch.from_numpy(pca.components_)
    d1, d2 = (_unflatten(c, origin_d) for c in comps)
    coords = project(traj, d1, d2, origin_d)
    return PCAPlane(d1=d1, d2=d2, origin=origin_d,
                    explained_variance_ratio=np.asarray(pca.explained_variance_ratio_),
                    coords=coords)


# -------------------------------------------------------------------------------- public sweeps


class _MetricsView:
    """``.loss`` and ``.accuracy`` shortcuts into a result's ``metrics`` dict."""

    metrics: dict[str, np.ndarray]

    @property
    def loss(self) -> np.ndarray:
        return self.metrics["loss"]

    @property
    def accuracy(self) -> np.ndarray | None:
        return self.metrics.get("accuracy")


@dataclass
class Surface(_MetricsView):
    """A 2-D loss surface: ``loss[i, j]`` is the loss at ``(x[j], y[i])`` (matplotlib's layout,
    ``contour(x, y, loss)``); ``metrics`` holds every computed metric with the same layout."""

    x: np.ndarray
    y: np.ndarray
    metrics: dict[str, np.ndarray]

    @property
    def center_loss(self) -> float:
        """Loss at the grid point closest to (0, 0)."""
        return float(self.loss[np.abs(self.y).argmin(), np.abs(self.x).argmin()])

    def level_area(self, threshold: float) -> float:
        """Fraction of the grid with loss below ``threshold`` (a flatness measure; NaN counts as
        above)."""
        with np.errstate(invalid="ignore"):
            return float(np.mean(np.nan_to_num(self.loss, nan=np.inf) < threshold))


def _axis(rng, steps, name) -> np.ndarray:
    if not (isinstance(rng, Sequence | np.ndarray) and len(rng) == 2 and rng[0] < rng[1]):
        raise ValueError(f"{name} must be a pair (low, high) with low < high, got {rng!r}.")
    return np.linspace(float(rng[0]), float(rng[1]), steps)


def surface_2d(model: nn.Module, loss_fn, data, d1, d2, *, xrange=(-1.0, 1.0),
               yrange=(-1.0, 1.0), steps: int = 41, batch_size: int | None = None,
               metrics: Iterable[str] = ("loss", "accuracy"), center=None,
               chunk_size: int | None = None, mode: str = "auto",
               progress: bool = True, distributed: bool | None = None) -> Surface:
    r"""The loss on the plane θ* + a·d1 + b·d2 over a ``steps × steps`` grid (Li et al. 2018,
    arXiv 1712.09913).

    f(a, b) = (1/N) Σ_i ℓ(f(x_i; θ* + a d1 + b d2), y_i), a ∈ ``xrange``, b ∈ ``yrange``;
    θ* is ``center`` (a model or parameter dict, default the model's own parameters).
    ``data`` is an (x, y) pair, a dict of tensors, a Dataset, a DataLoader or a list of ready
    batches (tuples or dicts; :mod:`toolkit.batches`), evaluated in ``batch_size`` batches;
    ``loss_fn`` a name, a callable ``(outputs, targets)``, one marked with
    :func:`toolkit.batches.takes_batch` (``(outputs, batch)``, also any callable on dict
    batches), or None for the model's own ``outputs.loss``;
    the model is put in eval mode for the sweep and restored afterwards, and its parameters hold
    their values again when the call returns or raises. Points are evaluated in chunks: as
    batched matmuls (``mode="fused"``, for a chain of ``nn.Linear`` layers and elementwise
    activations such as ``toolkit.models.MLP``), vectorised with vmap (``"vmap"``) or looped
    (``"loop"``); ``"auto"`` takes ``"fused"`` where it applies, else picks by problem size. A
    non-finite loss is recorded as NaN. Accuracy is returned for integer labels. Returns a
    :class:`Surface`.
    Under torchrun the grid points are split across ranks and gathered (``distributed=None``
    detects it; ``False`` computes everything on each rank), with the same result as one process.
    """
    check_module(model)
    if not isinstance(steps, int | np.integer) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (points per axis), got {steps!r}.")
    xs, ys = _axis(xrange, steps, "xrange"), _axis(yrange, steps, "yrange")
    d1 = check_direction(model, d1, "d1")
    d2 = check_direction(model, d2, "d2")
    origin = check_direction(model, parameters_of(center if center is not None else model),
                             "center")
    gx, gy = np.meshgrid(xs, ys)  # gx[i, j] = xs[j], gy[i, j] = ys[i]
    coords = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1))
    res = _grid.evaluate_grid(model, _grid_loss(loss_fn), data, origin, [d1, d2], coords,
                              batch_size=batch_size, metrics=tuple(metrics),
                              chunk_size=chunk_size, mode=mode, progress=progress,
                              desc="surface", distributed=distributed)
    return Surface(x=xs, y=ys, metrics={k: v.reshape(steps, steps) for k, v in res.items()})


@dataclass
class Interpolation(_MetricsView):
    """A 1-D cut: ``metrics[name][i]`` at ``alphas[i]``."""

    alphas: np.ndarray
    metrics: dict[str, np.ndarray]

    def max_increase(self, start: float = 0.0, end: float = 1.0) -> float:
        """Largest rise of the loss between two points of the path with start ≤ α₁ < α₂ ≤ end:
        zero for a monotonically decreasing path (Goodfellow et al.'s observation), the height
        of the worst barrier otherwise."""
        sel = (self.alphas >= start - 1e-12) & (self.alphas <= end + 1e-12)
        loss = self.loss[sel]
        best = np.minimum.accumulate(loss)
        return float(np.max(loss - best))


def interpolate(model: nn.Module, loss_fn, data, *, direction=None, target=None, alphas=None,
                batch_size: int | None = None, metrics: Iterable[str] = ("loss", "accuracy"),
                chunk_size: int | None = None, mode: str = "auto",
                progress: bool = True) -> Interpolation:
    r"""A 1-D cut of the loss, L(θ₀ + α·d), evaluated at each α in ``alphas``.

    With ``target`` (a model or parameter dict), d = θ_target − θ₀: Goodfellow, Vinyals and Saxe
    (2015, arXiv 1412.6544) take θ₀ at initialisation and θ_target at the solution (α = 0 is the
    start, α = 1 the end) and find the path usually monotone. With ``direction`` (e.g.
    :func:`random_direction` or a Hessian eigenvector) the cut is a straight line through θ₀.
    Give exactly one. θ₀ is the model's own parameters, which hold their values again afterwards.
    ``data`` and ``loss_fn`` follow :func:`surface_2d` (dict batches, batch-taking losses).
    """
    if (direction is None) == (target is None):
        raise ValueError("give exactly one of direction= (a cut along a direction) or target= "
                         "(a model or parameter dict to interpolate towards).")
    origin = parameters_of(model)
    if target is not None:
        tgt = check_direction(model, parameters_of(target), "target")
        d = {n: tgt[n] - origin[n] for n in origin}
        default = np.linspace(-0.5, 1.5, 41)
    else:
        d = check_direction(model, direction, "direction")
        default = np.linspace(-1.0, 1.0, 41)
    alphas = default if alphas is None else np.asarray(alphas, dtype=np.float64).reshape(-1)
    if len(alphas) < 1 or not np.all(np.isfinite(alphas)):
        raise ValueError("alphas must be a non-empty sequence of finite numbers.")
    res = _grid.evaluate_grid(model, _grid_loss(loss_fn), data, origin, [d],
                              torch.from_numpy(alphas[:, None]), batch_size=batch_size,
                              metrics=tuple(metrics), chunk_size=chunk_size, mode=mode,
                              progress=progress, desc="interpolate")
    return Interpolation(alphas=alphas, metrics=res)


def direction_norm(direction: Mapping[str, torch.Tensor]) -> float:
    """Euclidean norm of a direction over all its tensors."""
    return _norm(direction)



def relative_difference(a: Surface, b: Surface, metric: str = "loss") -> float:
    """max |a − b| / max |a| of a metric over two surfaces on the same grid (0 = identical).

    Used to show that filter-normalised surfaces are invariant to a function-preserving rescaling
    of the weights while unnormalised ones are not (Li et al. 2018, arXiv 1712.09913, §4)."""
    va, vb = a.metrics[metric], b.metrics[metric]
    if va.shape != vb.shape:
        raise ValueError(f"surfaces have different grids: {va.shape} vs {vb.shape}.")
    return float(np.nanmax(np.abs(va - vb)) / np.nanmax(np.abs(va)))

def curvature_map(surface: Surface, metric: str = "loss") -> tuple[np.ndarray, np.ndarray]:
    r"""Eigenvalues (λ_min, λ_max) of the 2×2 finite-difference Hessian of a surface at every
    interior grid point (arrays of shape (steps−2, steps−2)), in units of the grid spacing.

    Li et al. (arXiv 1712.09913, §6) map |λ_min/λ_max| of the full Hessian over a surface to show
    where it is non-convex; this is the same measure restricted to the plotted plane."""
    z = surface.metrics[metric]
    hx, hy = surface.x[1] - surface.x[0], surface.y[1] - surface.y[0]
    zxx = (z[1:-1, 2:] + z[1:-1, :-2] - 2 * z[1:-1, 1:-1]) / hx**2
    zyy = (z[2:, 1:-1] + z[:-2, 1:-1] - 2 * z[1:-1, 1:-1]) / hy**2
    zxy = (z[2:, 2:] - z[2:, :-2] - z[:-2, 2:] + z[:-2, :-2]) / (4 * hx * hy)
    mean, rad = (zxx + zyy) / 2, np.sqrt(((zxx - zyy) / 2) ** 2 + zxy**2)
    return mean - rad, mean + rad


def nonconvexity(surface: Surface, tol: float = 1e-2, metric: str = "loss") -> float:
    r"""Fraction of interior grid points where the surface is locally non-convex,
    λ_min < −tol·|λ_max| for the 2×2 finite-difference Hessian (see :func:`curvature_map`).

    ≈ 0 for a convex bowl; Li et al. (arXiv 1712.09913) find deep networks without skip
    connections dominated by such regions, and residual networks nearly convex around the
    minimum. NaN points are ignored."""
    lo, hi = curvature_map(surface, metric)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return math.nan
    return float(np.mean(lo[ok] < -tol * np.abs(hi[ok])))
