r"""Claims of notebook 09 (the loss landscape converges as the sample grows) as predicates.

Kiselev & Grabovoy 2024 (arXiv 2409.11995). ``tests/test_claims_convergence.py`` (marker
``control``) runs each on the notebook's procedure (a bias-free ReLU MLP trained on digits, the
per-object losses on a filter-normalised plane around it) on seeds 0, 1, 2, where it must hold,
and on negative controls where the surfaces do not average: the per-object loss itself
(|ℓ_{k+1} − ℓ_k|, slope ≈ 0), a *fresh* random subset for each ``k`` (consecutive subsets
share no objects by construction, slope ≈ −½), and a bound with a deliberately wrong constant
(it fails to bound).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from toolkit.utils import loglog_slope

from ._base import Verdict

__all__ = ["difference_decays", "eigenvalue_converges"]


def difference_decays(k: Sequence[int], difference: Sequence[float], bound=None, *,
                      largest: Sequence[float] | None = None, k_min: int = 10,
                      low: float = -1.25, high: float = -0.8) -> Verdict:
    r"""|L_{k+1} − L_k| on the plane decays like 1/k, under the paper's bound (Lemma 2).

    ``k`` and ``difference`` are the subset sizes and the measured differences (e.g.
    :attr:`~toolkit.landscape_convergence.Differences.mean`, the mean over the plane);
    ``bound`` (optional, same length) the Lemma 2 bound at each ``k``, compared with
    ``largest`` (e.g. ``Differences.max``, the largest value on the plane in any ordering;
    default ``difference``). Holds when the least-squares log–log slope of ``difference``
    against ``k`` over ``k ≥ k_min`` (about 40 log-spaced points, so every decade weighs the
    same) lies in ``[low, high]`` and, if a bound is given, ``bound ≥ largest`` at every ``k``.

    Measured (toy run: digits, MLP 64-32-32-10 without biases trained with Adam, plane ±0.5
    filter-normalised, 20 orderings; seeds 0, 1, 2): slope −0.97 … −1.00; the bound exceeds
    the largest difference on the plane by 1.8·10⁷ … 2.7·10⁷. Controls (``tests/test_claims_convergence.py``):
    |ℓ_{k+1} − ℓ_k| (no averaging), slope −0.01; a fresh random subset for every k, slope
    −0.49 (drawn with replacement; −0.72 without, the finite-population factor steepens it near
    k = N); the bound divided by 10¹⁰ fails to bound.

    Values: ``slope``, ``bound_ratio`` (smallest bound / largest difference; NaN without a
    bound), ``points``.
    """
    k = np.asarray(k, dtype=np.float64)
    d = np.asarray(difference, dtype=np.float64)
    if k.shape != d.shape or k.ndim != 1:
        raise ValueError(f"k and difference must be 1-D of the same length, got {k.shape} and "
                         f"{d.shape}.")
    keep = (k >= k_min) & (d > 0) & np.isfinite(d)
    if keep.sum() < 3:
        raise ValueError(f"need at least 3 points with k >= k_min={k_min} and a positive "
                         f"difference, got {int(keep.sum())}; lower k_min or give more k.")
    kk, dd = k[keep], d[keep]
    grid = np.geomspace(kk.min(), kk.max(), 40)
    pick = np.unique([int(np.argmin(np.abs(kk - g))) for g in grid])
    slope = loglog_slope(kk[pick], dd[pick])
    ratio = float("nan")
    bound_ok = True
    if bound is not None:
        b = np.asarray(bound, dtype=np.float64)
        top = d if largest is None else np.asarray(largest, dtype=np.float64)
        if b.shape != d.shape or top.shape != d.shape:
            raise ValueError(f"bound and largest must have the shape of difference {d.shape}, "
                             f"got {b.shape} and {top.shape}.")
        pos = top > 0
        ratio = float(np.min(b[pos] / top[pos])) if pos.any() else float("inf")
        bound_ok = bool(np.all(b >= top))
    passed = low <= slope <= high and bound_ok
    return Verdict(bool(passed), {"slope": float(slope), "bound_ratio": ratio,
                                  "points": int(len(pick))})


def eigenvalue_converges(k: Sequence[int], eigenvalues, *, tol: float = 0.2,
                         max_slope: float = -0.5) -> Verdict:
    r"""The top Hessian eigenvalue of L_k settles as k grows: across random orderings of the
    objects, λ_max(∇²L_k) scatters less and less.

    Nested means give :math:`H^{(k+1)} − H^{(k)} = (H_{k+1} − H^{(k)})/(k+1)` (the Hessian of
    eq. (1)), so by Weyl's inequality λ_max moves by at most ‖H_{k+1} − H^{(k)}‖₂/(k+1) per
    added object. ``k``: increasing subset sizes, all below the number of objects (at k = N every
    ordering gives the same value); ``eigenvalues``: array (orderings, len(k)), λ_max of L_k for
    each ordering (:func:`~toolkit.landscape_convergence.subset_top_eigenvalues`). The relative
    spread at each k is the standard deviation over orderings divided by the mean at the largest
    k. Holds when its log–log slope against k is at most ``max_slope`` and it is at most ``tol``
    at the largest k.

    The paper proves the convergence of the loss difference; for the Hessian it bounds each
    object's norm (Theorem 1). The claim here is the consequence above, measured (toy run, 8
    orderings, k = 16 … 512, seeds 0, 1, 2: slope −0.8 … −1.0, spread 5–9 % at k = 512; the mean
    λ_max also *falls* with k — λ_max is convex, so small subsets overestimate it). Control:
    the top eigenvalue of one object's Hessian (no averaging): slope −0.3, spread 155 % at the
    last k.

    Values: ``slope``, ``spread_last``.
    """
    k = np.asarray(k, dtype=np.float64)
    lam = np.atleast_2d(np.asarray(eigenvalues, dtype=np.float64))
    if k.ndim != 1 or len(k) < 3 or lam.shape[1] != len(k) or lam.shape[0] < 2:
        raise ValueError(f"need at least 3 sizes k and eigenvalues of shape (orderings >= 2, "
                         f"{len(k)}), got k {k.shape} and eigenvalues {lam.shape}.")
    if np.any(np.diff(k) <= 0):
        raise ValueError("k must be strictly increasing (nested subsets of growing size).")
    ref = abs(lam[:, -1].mean()) or 1.0
    spread = lam.std(axis=0) / ref
    if np.any(spread <= 0):
        raise ValueError("some k has the same eigenvalue in every ordering (k equal to the "
                         "number of objects?); use sizes below it.")
    slope = loglog_slope(k, spread)
    passed = slope <= max_slope and spread[-1] <= tol
    return Verdict(bool(passed), {"slope": float(slope), "spread_last": float(spread[-1])})
