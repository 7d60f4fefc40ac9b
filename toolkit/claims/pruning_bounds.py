r"""Claims of notebook 11 (compression bounds for pruned networks) as falsifiable predicates.

Each takes the long DataFrame the notebook's sweep builds — one row per (``method``, ``amount``,
``deviation``, ``encoding``) with the columns of :func:`toolkit.pruning_bounds.bound_table` plus the
pruned model's ``test_err`` — and returns a :class:`~toolkit.claims.Verdict`. No training happens
here. ``tests/test_claims_pruning_bounds.py`` runs every predicate on the notebook's toy procedure
(seeds 0, 1, 2) and on a negative control.

What is whose: the bound's structure is Arora et al.'s (arXiv 1802.05296) as used by Guha, Dubey &
Huo (arXiv 2305.18789); the explicit constants, the pointwise margin term and the sketch-dimension
formula are ours (see :mod:`toolkit.pruning_bounds`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ._base import Verdict

__all__ = ["approximation_tracks_test_error", "ranks_methods_like_test_error",
           "sketch_below_dense"]

_COLUMNS = {"method", "amount", "deviation", "encoding", "margin_loss", "bound", "q", "test_err"}


def _select(sweep: pd.DataFrame, *, method: str | None = None, deviation: str = "measured",
            encoding: str = "sparse") -> pd.DataFrame:
    if not isinstance(sweep, pd.DataFrame) or not _COLUMNS <= set(sweep):
        raise ValueError(f"sweep must be the notebook's sweep DataFrame with columns "
                         f"{sorted(_COLUMNS)}.")
    rows = sweep[(sweep["deviation"] == deviation) & (sweep["encoding"] == encoding)]
    if method is not None:
        rows = rows[rows["method"] == method]
    if rows.empty:
        raise ValueError(f"no rows for method={method!r}, deviation={deviation!r}, "
                         f"encoding={encoding!r}; the sweep has methods "
                         f"{sorted(sweep['method'].unique())}.")
    return rows.sort_values("amount")


def approximation_tracks_test_error(sweep: pd.DataFrame, *, method: str = "magnitude",
                                    min_rank_corr: float = 0.8, min_rise: float = 0.1) -> Verdict:
    r"""Across sparsities, the bound's approximation term rises with the pruned net's test error.

    Claim (the first criterion of Guha et al., arXiv 2305.18789, in Arora et al.'s framework): the
    data-dependent term — the fraction of training points whose dense margin is at most twice
    the deviation pruning causes, :math:`\hat P[\mathrm{margin}_f(x) \le 2\,\mathrm{dev}(x)]` —
    measures how far the pruned net strays, so it rises in step with the test error as ``method``
    prunes harder. Holds when the Spearman rank correlation of ``margin_loss`` (deviation
    ``"measured"``) with ``test_err`` over the sweep's sparsities is :math:`\ge` ``min_rank_corr``
    and the test error rises by at least ``min_rise`` (there is something to track). Measured:
    0.95–0.98 on seeds 0–2 for magnitude pruning of the toy MLP (test error 0.02 → 0.8). Fails
    on a net trained on shuffled labels (test error flat near 0.9; correlation −0.54 to −0.38)
    and on an untrained net. Values: ``rank_corr``, ``test_err_rise``, ``margin_loss``,
    ``test_err``.
    """
    rows = _select(sweep, method=method)
    loss, err = rows["margin_loss"].to_numpy(float), rows["test_err"].to_numpy(float)
    corr = float(spearmanr(loss, err)[0]) if np.ptp(loss) > 0 and np.ptp(err) > 0 else float("nan")
    rise = float(err[-1] - err[0])
    passed = bool(np.isfinite(corr) and corr >= min_rank_corr and rise >= min_rise)
    return Verdict(passed, {"rank_corr": corr, "test_err_rise": rise,
                            "margin_loss": [round(float(v), 3) for v in loss],
                            "test_err": [round(float(v), 3) for v in err]})


def ranks_methods_like_test_error(sweep: pd.DataFrame, *, better: str = "magnitude",
                                  worse: str = "random", encoding: str = "sparse",
                                  min_gap: float = 0.05, min_points: int = 3) -> Verdict:
    r"""At equal sparsity, the bound ranks two pruning rules as their test errors do.

    Claim (what a compression bound should do, and what Guha et al. argue magnitude pruning earns:
    a pruned estimate close to the unpruned function): at equal sparsity both rules have the same
    number of non-zeros, so the complexity terms are equal and the bound can only separate them
    through the approximation term. Holds when, at every sparsity where the test errors differ by
    at least ``min_gap``, the bound (``encoding``, deviation ``"measured"``) never orders the two
    rules against their test errors, and orders them strictly the same way at ``min_points`` or
    more sparsities. Ties are not reversals: above sparsity ~0.9 both margin terms saturate at 1.
    Measured on seeds 0–2 (magnitude vs random, toy MLP): strictly right at 0.5, 0.7, 0.8, 0.9,
    tied above, never reversed. Fails on an untrained net (the test errors agree within noise,
    and where they differ the bound is tied). Values: ``agree``, ``reversed``, ``tied``,
    ``amounts`` (those compared).
    """
    a = _select(sweep, method=better, encoding=encoding).set_index("amount")
    b = _select(sweep, method=worse, encoding=encoding).set_index("amount")
    common = a.index.intersection(b.index)
    agree, reversed_, tied, compared = 0, 0, 0, []
    for amount in common:
        gap = float(b.at[amount, "test_err"] - a.at[amount, "test_err"])
        if abs(gap) < min_gap:
            continue
        compared.append(float(amount))
        diff = float(b.at[amount, "bound"] - a.at[amount, "bound"])
        if diff == 0:
            tied += 1
        elif np.sign(diff) == np.sign(gap):
            agree += 1
        else:
            reversed_ += 1
    passed = reversed_ == 0 and agree >= min_points
    return Verdict(passed, {"agree": agree, "reversed": reversed_, "tied": tied,
                            "amounts": compared})


def sketch_below_dense(sweep: pd.DataFrame, *, method: str = "magnitude") -> Verdict:
    r"""Sketching the pruned matrices shrinks the parameter count below the dense one — at high
    sparsity only.

    Claim (the second criterion of Guha et al., arXiv 2305.18789: sparse matrix sketching
    represents the pruned matrices by much smaller dense ones), with our sketch size
    :math:`m = \lceil c\sqrt{\mathrm{nnz}}\ln p\rceil` (:func:`toolkit.pruning_bounds.
    sketch_dimension`). Holds when the sketch count ``q`` is never above the dense count and is
    strictly below it at the sweep's highest sparsity. Values: ``wins_from`` (the lowest sparsity
    at which it is strictly below; ``nan`` if none), ``ratio_at_top`` (sketch / dense there) and
    ``sparse_over_sketch`` (the explicit sparse code's count over the sketch's at the top: < 1
    means the sketch did not beat simply listing the non-zeros). Fails when the constant ``c`` is
    so large that every sketch is as big as its matrix (``c = 3`` at toy widths).
    """
    dense = _select(sweep, method=method, encoding="dense").set_index("amount")["q"]
    sketch = _select(sweep, method=method, encoding="sketch").set_index("amount")["q"]
    sparse = _select(sweep, method=method, encoding="sparse").set_index("amount")["q"]
    wins = sketch[sketch < dense.loc[sketch.index]]
    top = sketch.index.max()
    passed = bool((sketch <= dense.loc[sketch.index]).all() and sketch[top] < dense[top])
    return Verdict(passed, {"wins_from": float(wins.index.min()) if len(wins) else float("nan"),
                            "ratio_at_top": float(sketch[top] / dense[top]),
                            "sparse_over_sketch": float(sparse[top] / sketch[top])})
