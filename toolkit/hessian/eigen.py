"""Extreme Hessian eigenvalues: Lanczos with full reorthogonalisation, tested at every step, for
either end (ARPACK's restarted Lanczos for the largest end when the basis would not fit in memory),
power iteration as a baseline."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import distributed as dist_utils
from .._checks import check_choice, check_positive, check_positive_int
from ._lanczos import lanczos_steps
from .operator import HessianOperator, Params

__all__ = ["Eigenpairs", "top_eigenvalues"]

# ------------------------------------------------------------------------------- eigenvalues


@dataclass
class Eigenpairs:
    """Extreme Hessian eigenpairs. ``eigenvalues`` sorted from the requested end (largest first
    for ``which="largest"``, smallest first for ``"smallest"``); ``eigenvectors`` are dicts
    ``name -> tensor`` (unit norm over all of them); ``n_hvp`` products were used."""

    eigenvalues: np.ndarray
    eigenvectors: list[Params]
    n_hvp: int
    converged: bool
    method: str


def _lanczos_eigs(op: HessianOperator, k: int, which: str, tol: float, max_iter: int,
                  v0: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    """The ``k`` eigenpairs at one end of the spectrum: Lanczos with full reorthogonalisation
    (:func:`_largest_eigs`, :func:`_smallest_eigs`); for the largest end, ARPACK's restarted
    Lanczos when the basis of ``max_iter`` vectors would not fit the memory budget."""
    if which == "smallest":
        return _smallest_eigs(op, k, tol, max_iter, v0)
    if _basis_capacity(op, minimum=k + 2) >= max_iter:
        return _largest_eigs(op, k, tol, max_iter, v0)
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    ncv = min(op.numel, max(2 * k + 2, 8))  # small Krylov space: bounded memory
    maxiter = max(1, math.ceil(max_iter / max(ncv - k, 1)))
    try:
        vals, vecs = eigsh(op.as_linear_operator(), k=k, which="LA", tol=tol, maxiter=maxiter,
                           ncv=ncv, v0=v0.double().cpu().numpy())
    except ArpackNoConvergence as err:
        if len(err.eigenvalues) == 0:
            raise RuntimeError(f"Lanczos did not converge within max_iter={max_iter} products; "
                               "raise max_iter or tol.") from err
        warnings.warn(f"Lanczos converged on {len(err.eigenvalues)} of {k} eigenvalues within "
                      f"max_iter={max_iter}; returning those.", stacklevel=3)
        return err.eigenvalues, err.eigenvectors, False
    return vals, vecs, True


def _basis_capacity(op: HessianOperator, minimum: int) -> int:
    """How many parameter-sized Lanczos vectors the memory budget holds (at least ``minimum``)."""
    vector_bytes = op.numel * torch.empty((), dtype=op.dtype).element_size()
    return dist_utils.auto_chunk_size(vector_bytes, device=op.device, minimum=minimum)


def _largest_eigs(op: HessianOperator, k: int, tol: float, max_steps: int,
                  v0: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    r"""The ``k`` largest eigenpairs by Lanczos with full reorthogonalisation and no restarts,
    tested after every product.

    Stops at the first step m ≥ k + 1 where every wanted Ritz pair (θ_i, u_i) has residual
    ‖Hu_i − θ_i u_i‖ = β_m |s_{m,i}| ≤ tol·|θ_i| — ARPACK's test, which guarantees an eigenvalue
    within tol·|θ_i| of θ_i (for symmetric H) — or where the Krylov space is exhausted. ARPACK with
    its Krylov space of max(2k+2, 8) vectors tests only once that space is full (9 products at
    the least for k = 1); here the test runs at every step, so a well separated top eigenvalue
    stops as soon as it has converged (7–8 products on the digits MLP of
    ``benchmarks/anchors/hessian_vs_pyhessian.py``). Memory: one vector per product.
    """
    theta, s, basis, converged = None, None, None, False
    for alphas, betas, beta, basis in lanczos_steps(  # noqa: B007 (basis is read after the loop)
            op.matvec, v0.to(op.dtype), max_steps):
        m = len(alphas)
        exhausted = beta <= 1e-12 * max(abs(a) for a in alphas) + 1e-30
        if m < min(k + 1, op.numel) and not exhausted:
            continue
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, s = np.linalg.eigh(t)
        theta, s = theta[::-1][:k], s[:, ::-1][:, :k]  # largest first
        residual = beta * np.abs(s[-1])
        if exhausted or np.all(residual <= tol * np.abs(theta)):
            converged = True
            break
    if not converged:
        warnings.warn(f"Lanczos for the largest eigenvalues did not converge within "
                      f"max_iter={max_steps} products; returning the current Ritz values "
                      "(lower bounds on the true ones). Raise max_iter or tol.", stacklevel=3)
    ritz = basis.double().T @ torch.from_numpy(np.ascontiguousarray(s)).to(basis.device)
    return theta, ritz.cpu().numpy(), converged


_SMALLEST_MIN_STEPS = 20  # before the first convergence test: let the Krylov space see the ends
_SMALLEST_CHECK_EVERY = 5


def _smallest_eigs(op: HessianOperator, k: int, tol: float, max_steps: int,
                   v0: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    r"""The ``k`` smallest eigenpairs by Lanczos with full reorthogonalisation and no restarts.

    Why no restarts (ARPACK) and a different test here: a trained network's Hessian has a dense
    cluster of thousands of eigenvalues at 0 and a few small negative ones. ARPACK's tests are relative
    (‖Hu − θu‖ ≤ tol·|θ|): run on H they never pass when λ_min ≈ 0; run on λ_max·I − H they pass at
    a residual of tol·λ_max, which an interior Ritz value inside the cluster meets long before the
    small restarted Krylov space has found the negative direction, so a positive value could be
    reported as converged where λ_min < 0. Here the Krylov space only grows, so the smallest Ritz
    value decreases monotonically towards λ_min, and the test is relative to the value itself,

    .. math:: β_m |s_{m,i}| ≤ \mathrm{tol}·\max(|θ_i|,\ \mathrm{tol}·\max_j|θ_j|),\quad i < k,

    (the floor tol²·range stands in when λ_min is 0 to the last digit), held at two consecutive
    checks five steps apart. Converged results are validated with explicit residuals
    ‖Hu − θu‖ (k more products). Lanczos gives no certificate that nothing lies further down, but
    this is the standard practice (Golub & Van Loan §10.1), and it matches dense ``eigvalsh`` on
    trained MLPs whose spectra have the cluster (``tests/test_hessian.py``). Memory: one
    parameter-sized vector per step (at most ``max_steps``).
    """
    vector_bytes = op.numel * torch.empty((), dtype=op.dtype).element_size()
    fit = _basis_capacity(op, minimum=_SMALLEST_MIN_STEPS + 2 * k)
    if fit < max_steps:
        warnings.warn(f"the Lanczos basis for the smallest eigenvalues is capped at {fit} vectors "
                      f"({fit * vector_bytes / 2**20:.0f} MiB) by the memory budget instead of "
                      f"{max_steps}; restrict params= to a block to go further.", stacklevel=3)
        max_steps = fit
    previous, converged, theta, s, basis = None, False, None, None, None
    for alphas, betas, beta, basis in lanczos_steps(  # noqa: B007 (basis is read after the loop)
            op.matvec, v0.to(op.dtype), max_steps):
        m = len(alphas)
        exhausted = beta <= 1e-12 * max(abs(a) for a in alphas) + 1e-30
        if not (m >= max(_SMALLEST_MIN_STEPS, 2 * k + 2) and m % _SMALLEST_CHECK_EVERY == 0
                or exhausted or m == max_steps):
            continue
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, s = np.linalg.eigh(t)
        bound = tol * np.maximum(np.abs(theta[:k]), tol * np.abs(theta).max())
        residual = beta * np.abs(s[-1, :k])
        stable = previous is not None and np.all(np.abs(theta[:k] - previous) <= bound)
        previous = theta[:k].copy()
        if exhausted or (np.all(residual <= bound) and stable):
            converged = True
            break
        if m == max_steps:
            break
    ritz = basis.double().T @ torch.from_numpy(s[:, :k]).to(basis.device)
    vals = theta[:k]
    if converged:  # validation: explicit residuals, immune to any loss of orthogonality
        bound = tol * np.maximum(np.abs(vals), tol * np.abs(theta).max())
        for i in range(k):
            u = ritz[:, i].to(op.dtype)
            explicit = float((op.matvec(u).double() - vals[i] * u.double()).norm())
            converged &= explicit <= 2 * bound[i] + 1e-12
    if not converged:
        warnings.warn(f"Lanczos for the smallest eigenvalues did not converge within "
                      f"max_iter={max_steps} products; returning the current Ritz values "
                      "(upper bounds on the true ones). Raise max_iter or tol.", stacklevel=3)
    return vals, ritz.cpu().numpy(), converged


def _power_eigs(op: HessianOperator, k: int, which: str, tol: float, max_iter: int,
                gen: torch.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """Power iteration with deflation (on H − λ_max I for the smallest end)."""
    shift, converged_all = 0.0, True
    if which == "smallest":
        top, _, ok = _power_eigs(op, 1, "largest", tol, max_iter, gen)
        shift, converged_all = float(top[0]), ok
    found: list[tuple[float, torch.Tensor]] = []
    for _ in range(k):
        v = op.random_vector(gen)
        v /= v.norm()
        lam, converged = None, False
        for _ in range(max_iter):
            w = op.matvec(v) - shift * v
            for mu, u in found:
                w -= (mu - shift) * torch.dot(u, v) * u
            new = float(torch.dot(v, w))
            v = w / w.norm().clamp_min(1e-30)
            if lam is not None and abs(new - lam) <= tol * abs(new):
                lam, converged = new, True
                break
            lam = new
        found.append((lam + shift, v))
        converged_all &= converged
    vals = np.array([f[0] for f in found])
    vecs = torch.stack([f[1] for f in found], dim=1).double().cpu().numpy()
    return vals, vecs, converged_all


def top_eigenvalues(model: nn.Module, loss_fn, data, *, k: int = 1, which: str = "largest",
                    tol: float = 1e-3, max_iter: int = 100, batch_size: int | None = None,
                    method: str = "lanczos", hvp_method: str = "auto",
                    params: str | Iterable[str] | None = None, v0=None, seed: int = 0) -> Eigenpairs:
    r"""The ``k`` largest (or smallest) eigenvalues of the loss Hessian and their eigenvectors.

    ``method="lanczos"`` (default). For the largest end: Lanczos with full reorthogonalisation
    on Hessian-vector products, tested after every product (:func:`_largest_eigs`). It stops when
    the residual ‖Hu − θu‖ ≤ tol·|θ|, which *guarantees* an eigenvalue within tol·|θ| (in practice
    the error is ~tol², see ``benchmarks/bench_hessian.py``: fewer products than power iteration
    for the top eigenvalue, 1000× more accurate), and it handles k > 1 without deflation.
    Memory: one parameter-sized vector per product; when ``max_iter``·k of them would not fit
    the memory budget, implicitly restarted Lanczos (ARPACK through
    ``scipy.sparse.linalg.eigsh``, ``which="LA"``, max(2k+2, 8) vectors, same test) is used
    instead. For the smallest end: Lanczos with full
    reorthogonalisation and a test relative to |θ| itself (floored at tol²·λ_max), validated by
    explicit residuals (:func:`_smallest_eigs`); it is correct where trained networks' Hessians
    have a dense cluster at 0 (typically 70–140 products; its budget is 3·``max_iter``·k), and
    keeps one vector per product (capped by the memory budget, with a warning).
    ``method="power"`` is power iteration with deflation (Yao et al. 2020, arXiv 1912.07145); it
    returns the largest-*magnitude* eigenvalue for ``"largest"``, and iterates on H − λ_max I for
    ``"smallest"``, stopping when the estimate changes by less than tol relatively, which
    guarantees nothing when the gap is small. ``max_iter`` is the budget of Hessian-vector
    products per eigenvalue, ``v0`` a warm start (flat or dict).
    """
    check_choice(which, "which", ("largest", "smallest"))
    check_choice(method, "method", ("lanczos", "power"))
    check_positive_int(k, "k")
    check_positive(tol, "tol")
    check_positive_int(max_iter, "max_iter")
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, method=hvp_method,
                         params=params, seed=seed)
    if k >= op.numel:
        raise ValueError(f"k={k} must be smaller than the number of parameters ({op.numel}).")
    gen = torch.Generator().manual_seed(seed)
    if method == "lanczos":
        start = op.random_vector(gen)
        if v0 is not None:
            start = op.flatten(v0) if isinstance(v0, Mapping) else v0.reshape(-1)
        # the smallest end converges more slowly (a cluster at 0 sits next to it): 3x the budget
        budget = max_iter * k * (3 if which == "smallest" else 1)
        vals, vecs, ok = _lanczos_eigs(op, k, which, tol, budget, start)
    else:
        vals, vecs, ok = _power_eigs(op, k, which, tol, max_iter, gen)
    order = np.argsort(-vals if which == "largest" else vals)
    vals, vecs = vals[order], vecs[:, order]
    vectors = [op.unflatten(torch.from_numpy(vecs[:, i]).to(op.dtype).to(op.device))
               for i in range(vecs.shape[1])]
    return Eigenpairs(eigenvalues=np.asarray(vals, dtype=np.float64), eigenvectors=vectors,
                 n_hvp=op.n_hvp, converged=ok, method=method)


