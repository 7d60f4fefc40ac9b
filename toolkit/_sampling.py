"""Unequal-probability sampling with a fixed sample size, for element-wise L2 sampling in
:func:`toolkit.pruning.prune` (re-exported there as ``pruning.inclusion_probabilities`` and
``pruning.systematic_sample``)."""

from __future__ import annotations

import torch

__all__ = ["inclusion_probabilities", "systematic_sample"]


def inclusion_probabilities(q: torch.Tensor, n_keep: int) -> torch.Tensor:
    r"""Inclusion probabilities :math:`\pi_i = \min(1, c\,q_i)` with :math:`\sum_i \pi_i = ` ``n_keep``.

    ``q`` are non-negative importances (here :math:`q_i = w_i^2`, the element-wise sampling of
    Achlioptas & McSherry and Drineas & Zouzias, arXiv 1006.0407). Entries whose proportional share
    would exceed one are kept with certainty and the rest share the remaining budget
    ("water-filling"): with :math:`q` sorted decreasingly, :math:`t` saturated entries and
    :math:`c = (n_{keep}-t) / \sum_{j>t} q_j`, the smallest :math:`t` with :math:`c\,q_{t+1} \le 1`.
    """
    n = q.numel()
    if not 0 <= n_keep <= n:
        raise ValueError(f"n_keep must be between 0 and {n}, got {n_keep}.")
    q = q.to(torch.float64).clamp_min(0)
    n_pos = int((q > 0).sum())
    if n_keep == 0:
        return torch.zeros_like(q)
    if n_keep >= n_pos:  # every nonzero entry is kept; the budget left goes uniformly to zeros
        pi = (q > 0).to(torch.float64)
        if n > n_pos:
            pi[q == 0] = (n_keep - n_pos) / (n - n_pos)
        return pi
    qs, order = torch.sort(q, descending=True)
    tail = torch.flip(torch.cumsum(torch.flip(qs, [0]), 0), [0])   # sum_{j >= t} q_j
    t = torch.arange(n_keep, dtype=torch.float64)
    ok = (n_keep - t) * qs[:n_keep] <= tail[:n_keep]
    t_star = int(torch.nonzero(ok)[0])
    c = (n_keep - t_star) / float(tail[t_star])
    pi_sorted = torch.clamp(c * qs, max=1.0)
    pi_sorted[:t_star] = 1.0
    pi = torch.empty_like(pi_sorted)
    pi[order] = pi_sorted
    return pi


def systematic_sample(pi: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""A random subset of exactly :math:`\sum_i \pi_i` entries that contains entry :math:`i` with
    probability exactly :math:`\pi_i` (boolean mask).

    Randomised systematic sampling (Madow 1949; Hartley & Rao 1962): lay the :math:`\pi_i` end to
    end in a random order, draw :math:`u \sim U[0, 1)` and keep the entries whose interval contains
    one of :math:`u, u+1, \dots`. Each interval has length :math:`\pi_i \le 1`, so it is hit with
    probability :math:`\pi_i`, and exactly :math:`\sum\pi_i` points fall in :math:`[0, \sum\pi_i)`.
    Independent Bernoulli draws would give the same marginals but a random number of survivors;
    this gives the exact sparsity that a fair comparison of pruning methods needs.
    """
    n = pi.numel()
    total = float(pi.sum())
    n_keep = round(total)
    if abs(total - n_keep) > 1e-6 or bool((pi > 1 + 1e-12).any()) or bool((pi < 0).any()):
        raise ValueError("pi must lie in [0, 1] and sum to an integer (see inclusion_probabilities).")
    keep = torch.zeros(n, dtype=torch.bool)
    certain = pi >= 1.0
    keep[certain] = True
    rest = torch.nonzero(~certain & (pi > 0)).flatten()
    n_rest = n_keep - int(certain.sum())
    if n_rest > 0:
        rest = rest[torch.randperm(len(rest), generator=generator)]
        cum = torch.cumsum(pi[rest].to(torch.float64), 0)
        cum = cum * (n_rest / float(cum[-1]))  # remove rounding drift: the last edge is n_rest
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        hits = torch.ceil(cum - u) - torch.ceil(torch.cat([cum.new_zeros(1), cum[:-1]]) - u)
        chosen = rest[hits > 0]
        if len(chosen) != n_rest:  # floating-point edge case (probability ~1e-16): top up/trim
            extra = rest[hits <= 0][: max(n_rest - len(chosen), 0)]
            chosen = torch.cat([chosen, extra])[:n_rest]
        keep[chosen] = True
    return keep
