"""Claims of notebook 03 (neural collapse) as falsifiable predicates.

Each returns a :class:`~toolkit.claims.Verdict`; ``tests/test_claims_collapse.py`` (marker
``control``) runs each on a negative control (an untrained net, a run cut at the zero-error epoch,
imbalanced or random features, balanced classes, a bias, no ReLU, alpha = 0, a panel that draws
nothing) and asserts it fails, and on the real case that it holds. No training happens here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ._base import Verdict, panel_drawn

__all__ = [
    "zero_training_error", "nc1_keeps_falling", "approaches_etf_and_self_duality",
    "classifier_is_ncc", "ufm_simplex_etf", "etf_cosine", "minority_collapse_curve",
    "nc1_every_layer", "orthogonal_frame_every_layer", "minority_longer_means",
    "matches_closed_form", "simplex_etf_frame", "imbalance_breaks_symmetry", "orthogonal_frame",
    "batch_binding_restores_frame",
    "ls_maxsup_agree_on_correct", "ls_tighter_than_maxsup", "panel_draws",
]


def _get(obj, key):
    """A metric from a CollapseMetrics, a MeanGeometry, a dict or a pandas row."""
    if hasattr(obj, "as_dict"):
        obj = obj.as_dict()
    return float(obj[key])


# ------------------------------------------------------------------ 1 . the terminal phase
def zero_training_error(history: pd.DataFrame) -> Verdict:
    """Papyan, Han & Donoho 2020 (arXiv:2008.08186): the terminal phase starts when the training
    error reaches zero. Holds when some epoch of ``history`` (from ``train.fit``) has
    ``train_acc == 1``. Values: ``zero_error_epoch`` (None if never)."""
    from ..collapse import terminal_phase

    epoch = terminal_phase(history, "nc1")["zero_error_epoch"]
    return Verdict(epoch is not None, {"zero_error_epoch": epoch})


def nc1_keeps_falling(history: pd.DataFrame, factor: float = 10.0) -> Verdict:
    """Papyan et al. 2020 (arXiv:2008.08186): NC1 keeps falling *after* zero training error.
    Holds when NC1 at the end is at least ``factor`` (10) times below its value at the first
    recorded epoch at or after zero error -- an order of magnitude, well above the epoch-to-epoch
    jitter of the toy run and far from the factor 1 of a run stopped at zero error.
    Values: ``at_zero_error``, ``final``, ``drop`` (NaN if zero error is never reached)."""
    from ..collapse import terminal_phase

    phase = terminal_phase(history, "nc1")
    drop = phase["drop"]
    values = {"at_zero_error": phase["at_zero_error"], "final": phase["final"], "drop": drop}
    return Verdict(bool(np.isfinite(drop) and drop >= factor), values)


def approaches_etf_and_self_duality(first, final, *, etf_factor: float = 3.0,
                                    duality_factor: float = 10.0) -> Verdict:
    """NC2 and NC3 (Papyan et al. 2020, arXiv:2008.08186): the class means approach a simplex
    ETF and the classifier rows approach the class means. Holds when, from the first recorded
    epoch ``first`` to the end ``final`` (CollapseMetrics, dict or history row), the ETF error
    falls at least ``etf_factor`` (3) times and the self-duality error at least
    ``duality_factor`` (10) times. The factors sit well below the toy run's (about 6 and 35) and
    far above the 1 of an untrained net. Values: the four numbers and the two ratios."""
    etf0, etf1 = _get(first, "etf_error"), _get(final, "etf_error")
    sd0, sd1 = _get(first, "self_duality"), _get(final, "self_duality")
    values = {"etf_first": etf0, "etf_final": etf1, "nc3_first": sd0, "nc3_final": sd1,
              "etf_ratio": etf0 / etf1 if etf1 > 0 else math.inf,
              "nc3_ratio": sd0 / sd1 if sd1 > 0 else math.inf}
    return Verdict(etf1 < etf0 / etf_factor and sd1 < sd0 / duality_factor, values)


def classifier_is_ncc(final, max_mismatch: float = 0.01) -> Verdict:
    """NC4 (Papyan et al. 2020, arXiv:2008.08186): the classifier's decisions equal the
    nearest-class-mean rule. Holds when they disagree on at most ``max_mismatch`` (1 %) of the
    samples (three of 300 at toy size). Values: ``mismatch``, ``agreement``."""
    mismatch = _get(final, "ncc_mismatch")
    return Verdict(mismatch <= max_mismatch, {"mismatch": mismatch, "agreement": 1 - mismatch})


# ------------------------------------------------------------ 2 . unconstrained features
def ufm_simplex_etf(metrics, *, etf_tol: float = 1e-2, nc1_tol: float = 1e-4,
                    nc3_tol: float = 1e-3) -> Verdict:
    """Fang et al. 2021 (arXiv:2101.12699): the balanced cross-entropy UFM's optimum is a
    simplex ETF with collapsed classes and a self-dual classifier. Holds when ETF error
    < ``etf_tol``, NC1 < ``nc1_tol`` and NC3 < ``nc3_tol``: L-BFGS reaches ~1e-8 here, so
    the tolerances only absorb an unconverged solver, while an imbalanced UFM (ETF error ~0.1)
    or random features (~1) fail. Values: ``etf_error``, ``nc1``, ``nc3``."""
    values = {"etf_error": _get(metrics, "etf_error"), "nc1": _get(metrics, "nc1"),
              "nc3": _get(metrics, "self_duality")}
    return Verdict(values["etf_error"] < etf_tol and values["nc1"] < nc1_tol
                   and values["nc3"] < nc3_tol, values)


def etf_cosine(cosine: float, n_classes: int, tol: float = 1e-3) -> Verdict:
    """In a simplex ETF every pair of classifier rows has cosine -1/(C-1) (Papyan et al. 2020;
    Fang et al. 2021, arXiv:2101.12699). Holds when ``|cosine + 1/(C-1)| < tol`` (1e-3; the
    converged balanced UFM is at ~1e-8, the ratio-2 solution already ~0.1 away).
    Values: ``cosine``, ``target``, ``deviation``."""
    target = -1.0 / (n_classes - 1)
    dev = abs(float(cosine) - target)
    return Verdict(dev < tol, {"cosine": float(cosine), "target": target, "deviation": dev})


def minority_collapse_curve(curve: pd.DataFrame, *, final_tol: float = 1e-2,
                            slack: float = 1e-6) -> Verdict:
    """Minority collapse (Fang et al. 2021, arXiv:2101.12699): as the imbalance ratio grows the
    minority classifier rows merge. Holds when ``minority_distance`` (rows sorted by ``ratio``)
    never grows by more than ``slack`` (solver noise) and ends below ``final_tol`` (1e-2 of the
    row norm; it is ~1e-7 at ratio 16, ~1.5 in a balanced sweep). Values: ``first``, ``last``,
    ``max_increase``."""
    rows = curve.sort_values("ratio")
    gaps = rows["minority_distance"].to_numpy(dtype=float)
    increase = float(np.max(np.diff(gaps))) if len(gaps) > 1 else math.inf
    values = {"first": float(gaps[0]), "last": float(gaps[-1]), "max_increase": increase}
    return Verdict(len(gaps) > 1 and increase < slack and gaps[-1] < final_tol, values)


# --------------------------------------------------------------- 3 . deep linear networks
def nc1_every_layer(per_layer: pd.DataFrame, tol: float = 1e-3) -> Verdict:
    """Dang et al. 2023 (arXiv:2301.00437): in a deep linear UFM trained with MSE and weight
    decay, within-class variability collapses in every layer. Holds when NC1 < ``tol`` (1e-3) in
    every row of ``collapse.layerwise_metrics`` (the toy run reaches ~1e-16; untrained ~1).
    Values: ``max_nc1``."""
    worst = float(per_layer["nc1"].max())
    return Verdict(worst < tol, {"max_nc1": worst})


def orthogonal_frame_every_layer(per_layer: pd.DataFrame, tol: float = 1e-2) -> Verdict:
    """Dang et al. 2023 (arXiv:2301.00437): *without a bias* the class means of every layer form
    an orthogonal frame (raw means pairwise orthogonal; with a bias they form a simplex ETF, raw
    cosines -1/(C-1)). Holds when max |cos| < ``tol`` (1e-2) in every layer (toy: ~1e-7; with a
    bias ~0.33). Values: ``max_abs_cos``."""
    worst = float(per_layer["max_abs_cos"].max())
    return Verdict(worst < tol, {"max_abs_cos": worst})


def minority_longer_means(per_layer: pd.DataFrame) -> Verdict:
    """Dang et al. 2023 (arXiv:2301.00437): the class sizes set the lengths of the frame, the
    minority classes getting the longer means. Holds when the Spearman correlation of class size
    with class-mean norm is negative in every layer (NaN -- balanced classes, equal sizes -- fails).
    Values: ``max_corr``."""
    corr = per_layer["norm_count_corr"].to_numpy(dtype=float)
    worst = float(np.max(corr))
    return Verdict(bool(np.all(corr < 0)), {"max_corr": worst})


def matches_closed_form(measured, predicted, rtol: float = 1e-2) -> Verdict:
    """The one-layer bias-free MSE UFM's class-mean norms equal the closed form of
    ``collapse.ufm_mse_closed_form`` (Dang et al. 2023, arXiv:2301.00437). Holds when the
    largest relative error is below ``rtol`` (1 %; the converged solution is at ~1e-6, a solution
    stopped after a few iterations tens of percent off). Values: ``max_rel_error``."""
    measured = np.asarray(measured, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    rel = float(np.max(np.abs(measured - predicted) / np.abs(predicted)))
    return Verdict(rel < rtol, {"max_rel_error": rel})


# ------------------------------------------------------------- 4 . supervised contrastive
def simplex_etf_frame(geometry, tol: float = 1e-2) -> Verdict:
    """Graf et al. 2021 (arXiv:2106.04187), Kini et al. 2023 (arXiv:2306.07960): with balanced
    classes and no ReLU the SupCon minimiser's normalised class means form a simplex ETF.
    ``geometry``: ``collapse.mean_geometry(..., normalize=True)`` (raw means; for embeddings on
    the sphere an ETF has raw cosines -1/(C-1)). Holds when every cosine is within ``tol``
    (1e-2) of -1/(C-1): the free-embedding solution is at ~1e-5, the imbalanced one ~0.5 away.
    Values: ``etf_deviation``, ``max_abs_cos``."""
    d = geometry.as_dict()
    return Verdict(d["etf_deviation"] < tol, {"etf_deviation": d["etf_deviation"],
                                              "max_abs_cos": d["max_abs_cos"]})


def imbalance_breaks_symmetry(balanced, imbalanced, min_gap: float = 0.1) -> Verdict:
    """Kini et al. 2023 (arXiv:2306.07960): without ReLU, class imbalance breaks the symmetry of
    the SupCon geometry -- relative to the *balanced* solution of the same model. Holds when the
    spread of the class-mean cosines (``std_cos``) of the imbalanced geometry exceeds the
    balanced one's by at least ``min_gap`` (0.1; measured 0.25 vs 0 with free embeddings). Two
    runs on equally balanced data, or two ReLU runs, differ by ~0 and fail.
    Values: ``std_balanced``, ``std_imbalanced``, ``gap``."""
    sb, si = balanced.as_dict()["std_cos"], imbalanced.as_dict()["std_cos"]
    return Verdict(si - sb >= min_gap, {"std_balanced": sb, "std_imbalanced": si, "gap": si - sb})


def orthogonal_frame(*geometries, tol: float = 1e-2) -> Verdict:
    """Kini et al. 2023 (arXiv:2306.07960): with non-negative embeddings (a final ReLU) the
    SupCon class means form an orthogonal frame whatever the class sizes. Holds when, in every
    given geometry, all pairwise cosines of class means are within ``tol`` of 0 (1e-2 for the
    free-embedding solution, at ~1e-8; a trained encoder only approaches it, so the notebook's
    encoder illustration passes ``tol=0.2``; an ETF sits at 1/(C-1)). Values: ``max_abs_cos``,
    the worst over the geometries."""
    if not geometries:
        raise ValueError("orthogonal_frame needs at least one geometry")
    worst = max(g.as_dict()["max_abs_cos"] for g in geometries)
    return Verdict(worst < tol, {"max_abs_cos": float(worst)})


def batch_binding_restores_frame(full, random, bound, *, tol: float = 0.05,
                                 min_gap: float = 0.1) -> Verdict:
    """Kini et al. 2023 (arXiv:2306.07960, §5, batch-binding): on imbalanced data with small
    mini-batches, SCL + ReLU drifts from the orthogonal frame that full-batch training reaches;
    appending one fixed sample per class to every batch restores it. Arguments are the
    :class:`~toolkit.collapse.MeanGeometry` of the three runs. Holds when the full-batch and the
    bound runs have every class-mean cosine within ``tol`` of 0 and the random-batch run's worst
    cosine exceeds the bound run's by at least ``min_gap``. Thresholds: notebook 07's toy run
    (class counts 24, 24, 4, 4, batches of 8, free embeddings) gives max |cos| 0.000 / 0.002 (full,
    bound) and 0.16-0.85 (random) on seeds 0-2. Fails when the random batches are full batches
    (no drift), and when the "bound" run is in fact a random-batch run.
    Values: ``full``, ``random``, ``bound`` (max |cos| of each), ``gap``."""
    f, r, b = (g.as_dict()["max_abs_cos"] for g in (full, random, bound))
    passed = f < tol and b < tol and r - b >= min_gap
    return Verdict(passed, {"full": float(f), "random": float(r), "bound": float(b),
                            "gap": float(r - b)})


# ----------------------------------------------------------- 5 . label smoothing vs MaxSup
def ls_maxsup_agree_on_correct(logits: torch.Tensor, labels: torch.Tensor, alpha: float,
                               tol: float = 1e-5) -> Verdict:
    """Zhou et al. 2025 (arXiv:2502.15798): LS = CE + alpha (z_y - mean z) and MaxSup = CE +
    alpha (z_max - mean z), so they are the same loss on correctly classified samples and differ,
    MaxSup - LS = alpha (z_max - z_y) > 0, exactly on the misclassified ones. Holds when the mean
    losses on the correct samples agree within ``tol`` (1e-5, float32 rounding) *and* there are
    misclassified samples on which MaxSup - LS > 0 (a model without training errors shows no
    difference and fails). Values: ``gap_correct``, ``gap_wrong``, ``n_wrong``."""
    from .. import train

    ls_fn = train.get_loss("label_smoothing", smoothing=alpha)
    ms_fn = train.get_loss("maxsup", alpha=alpha)
    correct = logits.argmax(1) == labels
    n_wrong = int((~correct).sum())
    gap_correct = (abs(float(ls_fn(logits[correct], labels[correct])
                             - ms_fn(logits[correct], labels[correct])))
                   if bool(correct.any()) else 0.0)
    gap_wrong = (float(ms_fn(logits[~correct], labels[~correct])
                       - ls_fn(logits[~correct], labels[~correct])) if n_wrong else 0.0)
    return Verdict(gap_correct < tol and n_wrong > 0 and gap_wrong > 0,
                   {"gap_correct": gap_correct, "gap_wrong": gap_wrong, "n_wrong": n_wrong})


def ls_tighter_than_maxsup(ls_nc1: Sequence[float], maxsup_nc1: Sequence[float],
                           max_ratio: float = 0.99) -> Verdict:
    """Zhou et al. 2025 (arXiv:2502.15798): label smoothing compresses classes more than MaxSup.
    ``ls_nc1[i]``, ``maxsup_nc1[i]``: NC1 of the two runs of seed i (same data, same init). Holds
    when LS's NC1 is below MaxSup's on *every* seed and the mean ratio LS/MaxSup is below
    ``max_ratio`` (0.99: the toy gap is a few percent, 0.98 on average over seeds 0-4 at
    alpha = 0.2; with alpha = 0 the two losses are the same and the ratio is exactly 1).
    Values: ``mean_ratio``, ``max_ratio`` (the worst seed), ``n_seeds``."""
    ls = np.asarray(ls_nc1, dtype=float)
    ms = np.asarray(maxsup_nc1, dtype=float)
    if ls.shape != ms.shape or ls.size == 0:
        raise ValueError("ls_nc1 and maxsup_nc1 need the same, non-zero number of seeds")
    ratio = ls / ms
    return Verdict(bool(np.all(ls < ms) and ratio.mean() < max_ratio),
                   {"mean_ratio": float(ratio.mean()), "max_ratio": float(ratio.max()),
                    "n_seeds": int(ls.size)})


# ------------------------------------------------------------------------- 6 . the panel
def panel_draws(panel, snapshots: Sequence | Mapping, min_snapshots: int = 3) -> Verdict:
    """The epoch panel draws headless over at least ``min_snapshots`` recorded epochs: redrawing
    it succeeds (the slider moves it through epochs, so a redraw that raises fails) and then
    :func:`toolkit.claims.panel_drawn` holds. Values: ``n_snapshots``, ``n_axes`` (axes with
    data), ``error``."""
    error = ""
    try:
        panel.redraw()
    except Exception as exc:  # the claim is exactly that drawing works
        error = f"{type(exc).__name__}: {exc}"
    drawn = panel_drawn(panel)
    values = {"n_snapshots": len(snapshots), "error": error,
              "n_axes": 0 if error else drawn["axes"] - drawn["empty_axes"]}
    return Verdict(not error and bool(drawn) and len(snapshots) >= min_snapshots, values)
