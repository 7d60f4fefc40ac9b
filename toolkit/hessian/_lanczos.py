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

    Each step applies the three-term recurrence w ← Hq_j − α_j q_j − β_{j−1} q_{j−1} and then
    orthogonalises w against every previous vector (classical Gram–Schmidt), a second time only if
    that pass removed more than 1 − 1/√2 of its norm (the test of Daniel, Gragg, Kaufman & Stewart
    1976: "twice is enough"). That keeps the Ritz values free of the ghost copies plain Lanczos
    produces in floating point; after the recurrence the pass removes only rounding-level
    components, so one pass is the rule, half the basis traffic of always reorthogonalising twice
    (which was the loop's whole cost beyond the products: 40 steps on 85k parameters). The basis
    is preallocated (rows are only touched when used), so no step copies the earlier ones.
    """
    basis = torch.empty(steps, v0.numel(), dtype=v0.dtype, device=v0.device)
    basis[0] = v0.reshape(-1) / v0.norm()
    # the step works in place on two own vectors (the caller's product is copied, never
    # changed): a fresh vector per operation cost page faults comparable to the arithmetic
    w, scratch = torch.empty_like(basis[0]), torch.empty_like(basis[0])
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        q = basis[j]
        w.copy_(matvec(q).reshape(-1))
        alpha = float(torch.mul(w, q, out=scratch).sum(dtype=torch.float64))
        alphas.append(alpha)
        w.sub_(q, alpha=alpha)
        if j > 0:
            w.sub_(basis[j - 1], alpha=betas[-1])
        done = basis[: j + 1]
        for _ in range(2):
            before = float(w.norm())
            w.addmv_(done.T, done @ w, alpha=-1.0)
            if float(w.norm()) > before / 2**0.5:
                break
        beta = float(w.norm())
        yield alphas, betas, beta, done
        if j + 1 < steps:
            betas.append(beta)
            torch.div(w, beta, out=basis[j + 1])
