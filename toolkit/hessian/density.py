"""Spectral density by stochastic Lanczos quadrature."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._checks import check_positive_int
from ..utils import progress as progress_bar
from ._lanczos import lanczos_steps
from .operator import HessianOperator

__all__ = ["lanczos", "SpectralDensity", "spectral_density"]

# ---------------------------------------------------------------------------- spectral density


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor,
            steps: int) -> tuple[np.ndarray, np.ndarray]:
    r"""``steps`` Lanczos iterations from v0 with full re-orthogonalisation.

    Returns the diagonal α (length m) and off-diagonal β (length m−1) of the tridiagonal
    T = Vᵀ H V, V the orthonormal Krylov basis (full reorthogonalisation, see
    :func:`~toolkit.hessian._lanczos.lanczos_steps`). Stops early (m < steps) when the Krylov
    space becomes invariant.
    """
    for alphas, betas, beta, _ in lanczos_steps(matvec, v0, steps):  # noqa: B007 (read after)
        if len(alphas) == steps or beta <= 1e-10 * max(abs(a) for a in alphas) + 1e-30:
            break
    return np.asarray(alphas), np.asarray(betas)


@dataclass
class SpectralDensity:
    r"""Gaussian-smoothed spectral density φ(t) on ``grid``.

    ``nodes[v]``, ``weights[v]``: the Ritz values θ_j and quadrature weights τ_j = (u_j)_1²
    (squared first components of the eigenvectors of T) of random vector v; Σ_j τ_j = 1.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: list[np.ndarray]
    weights: list[np.ndarray]
    sigma: float
    n_params: int
    n_hvp: int

    def integral(self) -> float:
        """∫ φ(t) dt on the grid (trapezoid rule); 1 up to discretisation."""
        return float(np.trapezoid(self.density, self.grid))

    def moment(self, k: int = 1) -> float:
        r"""Quadrature estimate of tr(H^k)/n = E_v[vᵀH^k v]: mean over vectors of Σ_j τ_j θ_j^k."""
        return float(np.mean([np.sum(w * t**k) for t, w in zip(self.nodes, self.weights)]))

    @property
    def trace_estimate(self) -> float:
        return self.n_params * self.moment(1)


def spectral_density(model: nn.Module, loss_fn, data, *, n_vectors: int = 4, steps: int = 60,
                     sigma: float | None = None, grid=None, n_grid: int = 1000, seed: int = 0,
                     batch_size: int | None = None, hvp_method: str = "auto",
                     params: str | Iterable[str] | None = None,
                     progress: bool = True) -> SpectralDensity:
    r"""Eigenvalue density of the Hessian by stochastic Lanczos quadrature (SLQ).

    Ghorbani, Krishnan, Xiao 2019 (arXiv 1901.10159); Yao et al. 2020 (arXiv 1912.07145). For a
    random unit vector v and m Lanczos steps, T = U Θ Uᵀ gives the Gauss quadrature

    .. math::  vᵀ g(H) v ≈ Σ_{j=1}^m τ_j\, g(θ_j),\qquad τ_j = U_{1j}^2,

    so with g a Gaussian of width σ, averaging over ``n_vectors`` vectors,
    φ(t) = (1/n_v) Σ_v Σ_j τ_j^{(v)} 𝒩(t; θ_j^{(v)}, σ²) approximates the smoothed density
    (1/n) Σ_i 𝒩(t; λ_i, σ²); it integrates to 1 because Σ_j τ_j = ‖v‖² = 1. (The weights are the
    *squared* first components. PyHessian's SLQ once squared the whole eigenvector matrix, its
    PR #18, corrected by its PR #23 in 2024.) σ defaults to 1 % of the Ritz values' range;
    ``grid`` defaults to ``n_grid`` points covering them ± 6σ.
    """
    check_positive_int(n_vectors, "n_vectors")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}.")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive (or None for 1% of the range), got {sigma}.")
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, method=hvp_method,
                         params=params, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in progress_bar(range(n_vectors), enabled=progress, desc="SLQ"):
        v0 = op.random_vector(gen, "rademacher")
        a, b = lanczos(op.matvec, v0, min(steps, op.numel))
        theta, u = np.linalg.eigh(np.diag(a) + np.diag(b, 1) + np.diag(b, -1))
        nodes.append(theta)
        weights.append(u[0] ** 2)
    all_nodes = np.concatenate(nodes)
    lo, hi = float(all_nodes.min()), float(all_nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 1e-3 * max(abs(hi), 1.0)
    grid = (np.linspace(lo - 6 * sigma, hi + 6 * sigma, n_grid) if grid is None
            else np.asarray(grid, dtype=np.float64))
    density = np.zeros_like(grid)
    for theta, tau in zip(nodes, weights):
        z = (grid[:, None] - theta[None, :]) / sigma
        density += (np.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))) @ tau
    density /= n_vectors
    return SpectralDensity(grid=grid, density=density, nodes=nodes, weights=weights,
                           sigma=float(sigma), n_params=op.numel, n_hvp=op.n_hvp)


