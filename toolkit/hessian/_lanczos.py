"""The one Lanczos iteration with full reorthogonalisation, shared by the smallest-eigenvalue
solver (:mod:`~toolkit.hessian.eigen`) and stochastic Lanczos quadrature
(:mod:`~toolkit.hessian.density`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

__all__ = ["lanczos_steps"]


def lanczos_steps(matvec: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor,
                  steps: int) -> Iterator[tuple[list[float], list[float], float, torch.Tensor]]:
    r"""Run up to ``steps`` Lanczos steps from ``v0``; after step m yield
    ``(alphas, betas, beta, basis)``: the tridiagonal T = Vᵀ H V so far (α of length m, β of length
    m − 1), the next off-diagonal β_m (its residual norm) and the basis V as the rows of an (m, n)
    view. The caller stops iterating when it has what it needs (the lists are live).

    Orthogonalisation against every previous vector runs twice per step ("twice is enough"), which
    keeps the Ritz values free of the ghost copies plain Lanczos produces in floating point. The
    basis is preallocated (rows are only touched when used), so no step copies the earlier ones.
    """
    basis = torch.empty(steps, v0.numel(), dtype=v0.dtype, device=v0.device)
    basis[0] = v0.reshape(-1) / v0.norm()
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        w = matvec(basis[j])
        alphas.append(float(torch.dot(w.double(), basis[j].double())))
        done = basis[: j + 1]
        for _ in range(2):
            w = w - done.T @ (done @ w)
        beta = float(w.norm())
        yield alphas, betas, beta, done
        if j + 1 < steps:
            betas.append(beta)
            basis[j + 1] = w / beta
