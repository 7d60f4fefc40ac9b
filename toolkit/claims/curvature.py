r"""Claims of notebook 06 (curvature scaling) as falsifiable predicates.

``tests/test_claims_curvature.py`` runs each on the notebook's procedure at toy size on three
seeds (it must hold) and on a negative control in which the phenomenon is absent (the parameter
count itself, or a full-rank Hessian, in place of the measured ranks: it must fail).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from toolkit.utils import loglog_slope

from ._base import Verdict

__all__ = ["rank_grows_like_sqrt"]


def rank_grows_like_sqrt(n_params: Sequence[int], ranks: Sequence[int], *, last: int = 2,
                         low: float = 0.3, high: float = 0.7) -> Verdict:
    r"""Singh, Hofmann & Schölkopf 2023 (arXiv 2305.09088): as the channel count grows, the
    numerical rank of a CNN's loss Hessian grows like the square root of the parameter count,
    not like the count itself.

    ``n_params`` and ``ranks`` are the parameter counts and numerical ranks over a sweep of
    channel counts. Holds when the log–log slope of rank against parameter count over the
    ``last`` largest nets lies in ``(low, high)`` (½ in the paper; the rank is linear in the
    channels while the count is quadratic only asymptotically, so the slope over small nets is
    larger: linear 1-D CNNs, depth 3, channels 8 → 16, 488 → 1744 parameters, ranks 408 → 843,
    slope 0.57 on seeds 0, 1, 2: the rank is a generic value, the same on every seed; the ReLU
    CNN measured 483 → 1740, slope 1.0)
    and the largest net's Hessian is rank-deficient (rank < count).

    Values: ``slope``, ``rank_fraction`` (rank / count of the largest net).
    """
    p, r = np.asarray(n_params, float), np.asarray(ranks, float)
    if p.shape != r.shape or len(p) < max(2, last):
        raise ValueError(f"need at least {max(2, last)} (n_params, rank) pairs of equal length, "
                         f"got {len(p)} and {len(r)}")
    order = np.argsort(p)[-last:]
    slope = loglog_slope(p[order], r[order])
    fraction = float(r[order[-1]] / p[order[-1]])
    return Verdict(low < slope < high and fraction < 1.0,
                   {"slope": float(slope), "rank_fraction": fraction})
