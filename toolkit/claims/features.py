r"""Claims of notebook 05 (feature learning, μP) as falsifiable predicates.

Each predicate takes the notebook's measured numbers (widths and per-layer pre-activation changes,
training losses on a learning-rate grid, kernel drifts) and returns a
:class:`~toolkit.claims.Verdict`. ``tests/test_claims_features.py`` runs each on a negative
control in which the phenomenon is absent (the NTK or standard parameterisation's measurements in
place of μP's) and on the notebook's procedure at toy size on three seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from toolkit.utils import loglog_slope

from ._base import Verdict

__all__ = ["coordinate_check", "drift_stays_order_one", "lr_transfer"]


def _slopes(widths, changes: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {name: loglog_slope(widths, values) if np.all(np.isfinite(values)) else float("inf")
            for name, values in changes.items()}


def coordinate_check(widths: Sequence[int], mup: Mapping[str, Sequence[float]],
                     standard: Mapping[str, Sequence[float]], ntk: Mapping[str, Sequence[float]],
                     *, flat: float = 0.25, grow: float = 0.5, vanish: float = -0.3) -> Verdict:
    r"""The coordinate check (Yang & Hu 2021, arXiv 2011.14522; Yang et al. 2022, arXiv
    2203.03466): after a few SGD steps at one learning rate, the RMS change of every hidden
    layer's pre-activations is width-independent under μP, grows with width under the standard
    parameterisation and vanishes under the NTK one.

    Each mapping is layer name → RMS change at ``widths`` (pass the hidden layers). Holds when
    every μP log-log slope lies in ``(-flat, flat)`` (largest |slope| over the hidden layers,
    widths 64-2048, base width 8: 0.12, 0.20, 0.23 on data seeds 0, 1, 2 with two inits each;
    the margin is thin, the small widths' slope is slightly negative), every standard slope
    exceeds ``grow`` (smallest 2.1-2.5; a blow-up, inf, counts as growth) and every NTK slope is
    below ``vanish`` (-1/2 in theory; largest -0.44 to -0.64 measured).

    Values: ``mup_max_abs_slope``, ``standard_min_slope``, ``ntk_max_slope``.
    """
    s_mup, s_sp, s_ntk = _slopes(widths, mup), _slopes(widths, standard), _slopes(widths, ntk)
    mup_max = max(abs(s) for s in s_mup.values())
    sp_min, ntk_max = min(s_sp.values()), max(s_ntk.values())
    return Verdict(mup_max < flat and sp_min > grow and ntk_max < vanish,
                   {"mup_max_abs_slope": mup_max, "standard_min_slope": sp_min,
                    "ntk_max_slope": ntk_max})


def _best_log2(lrs, losses) -> list[float]:
    losses = np.where(np.isfinite(losses), losses, np.inf)
    return [float(np.log2(lrs[int(np.argmin(row))])) for row in losses]


def lr_transfer(widths: Sequence[int], lrs: Sequence[float], mup_losses, standard_losses, *,
                max_mup_shift: float = 1.0, min_standard_shift: float = 2.0) -> Verdict:
    r"""μTransfer (Yang et al. 2022, arXiv 2203.03466): under μP the loss-minimising learning
    rate stays put as the width grows; under the standard parameterisation it drifts (towards
    smaller rates: the readout's update grows like the width).

    ``*_losses`` are (len(widths), len(lrs)) training losses on the grid ``lrs`` (diverged runs as
    inf or nan). The shift is the best rate's move, in octaves (log2), from the smallest to the
    largest width. Holds when the μP shift is at most ``max_mup_shift`` octave in size (measured
    +1, 0, 0 on seeds 0, 1, 2; best log2 lr -1/0, 0/-1, 0 at widths 64, 256, 1024) and the
    standard one is at least ``min_standard_shift`` octaves (measured -2 on each seed: -1 → -3).

    Values: ``mup_best_log2_lr``, ``standard_best_log2_lr``, ``mup_shift``, ``standard_shift``.
    """
    lrs = np.asarray(lrs, float)
    mup_best = _best_log2(lrs, np.asarray(mup_losses, float))
    sp_best = _best_log2(lrs, np.asarray(standard_losses, float))
    order = np.argsort(widths)
    mup_shift = mup_best[order[-1]] - mup_best[order[0]]
    sp_shift = sp_best[order[-1]] - sp_best[order[0]]
    return Verdict(abs(mup_shift) <= max_mup_shift and abs(sp_shift) >= min_standard_shift,
                   {"mup_best_log2_lr": mup_best, "standard_best_log2_lr": sp_best,
                    "mup_shift": mup_shift, "standard_shift": sp_shift})


def drift_stays_order_one(widths: Sequence[int], mup_drift: Sequence[float],
                          ntk_drift: Sequence[float], *, flat: float = 0.2,
                          min_drift: float = 0.2, vanish: float = -0.4) -> Verdict:
    r"""Deep μP nets learn features: their NTK moves by O(1) during training at every width,
    while under the NTK parameterisation the relative kernel change vanishes with width (Yang &
    Hu 2021, arXiv 2011.14522: μP is the maximal-update limit, NTK the kernel limit).

    Drifts are :math:`\|\Theta_T-\Theta_0\|_F/\|\Theta_0\|_F` at ``widths``. Holds when the μP
    log-log slope lies in ``(-flat, flat)`` (measured +0.02, -0.06, -0.08 on seeds 0-2, widths
    64-2048, drifts 0.53-0.89), its smallest drift exceeds ``min_drift``, and the NTK slope is
    below ``vanish`` (measured -0.72 to -0.93).

    Values: ``mup_slope``, ``mup_min_drift``, ``ntk_slope``.
    """
    s_mup, s_ntk = loglog_slope(widths, mup_drift), loglog_slope(widths, ntk_drift)
    low = float(np.min(mup_drift))
    return Verdict(abs(s_mup) < flat and low > min_drift and s_ntk < vanish,
                   {"mup_slope": s_mup, "mup_min_drift": low, "ntk_slope": s_ntk})
