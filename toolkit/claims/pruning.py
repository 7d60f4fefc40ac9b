r"""Claims of notebook 04 (pruning and weight spectra) as falsifiable predicates.

Each function states one claim, takes the measured quantities (rows of
:func:`toolkit.spectra.layer_report`, the DataFrame of :func:`toolkit.pruning.sparsity_sweep`, the
``history`` of :func:`toolkit.pruning.lottery_ticket`, a :class:`~toolkit.widgets.panel.Panel`)
and returns a :class:`~toolkit.claims.Verdict`. No training happens here. ``tests/test_claims_pruning.py``
runs every predicate on the notebook's toy procedure (seeds 0, 1, 2) and on a negative control in
which the phenomenon is absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ._base import Verdict

__all__ = ["mp_bulk_at_init", "spikes_above_shuffled", "keeps_accuracy", "error_exceeds",
           "ranks_within_sparsity", "error_misorders", "winning_ticket", "advantage_shrinks",
           "path_norm_invariant", "ticket_advantage_vanishes", "retraining_matches_ticket",
           "beats_at_every_sparsity"]


def _rows(report: pd.DataFrame, layers: Iterable[str] | None) -> pd.DataFrame:
    rows = report.set_index("name") if "name" in report else report
    return rows.loc[list(layers)] if layers is not None else rows


# ------------------------------------------------------------------------------- §1 spectra


def mp_bulk_at_init(report: pd.DataFrame, layers: Iterable[str] | None = None, *,
                    tol: float = 0.15, max_spikes: int = 1) -> Verdict:
    r"""A random layer's spectrum fills the Marchenko–Pastur bulk and stops at its edge.

    Claim (Martin & Mahoney, arXiv 1810.01075, §3; the Marchenko–Pastur law): for a layer with
    i.i.d. entries the largest eigenvalue of :math:`W^\top W` sits at the bulk edge
    :math:`\lambda_+ = \sigma^2(\sqrt N+\sqrt M)^2`. Holds when, for every layer in ``layers``
    (rows of :func:`toolkit.spectra.layer_report`), ``spectral_norm / mp_edge`` is within ``tol``
    of 1 and at most ``max_spikes`` eigenvalues lie above the edge. Thresholds: at :math:`N, M \sim
    100` the edge is an asymptotic; Tracy–Widom fluctuations and finite-size bias move
    :math:`\lambda_{\max}` by a few percent (measured 0.93–1.05 at initialisation on seeds 0–3),
    and one eigenvalue may sit just above the edge (seed 3; its shuffled copy has one as well), so
    ``tol = 0.15`` and ``max_spikes = 1``. A trained layer fails it (ratios 1.2–1.55, 4–5
    spikes in ``features.3``).
    """
    rows = _rows(report, layers)
    ratio = (rows["spectral_norm"] / rows["mp_edge"]).astype(float)
    spikes = rows["n_spikes"].astype(int)
    passed = bool(((ratio - 1).abs() < tol).all() and (spikes <= max_spikes).all())
    return Verdict(passed, {"edge_ratio": [round(float(r), 3) for r in ratio],
                            "n_spikes": [int(s) for s in spikes], "tol": tol,
                            "max_spikes": max_spikes})


def spikes_above_shuffled(report: pd.DataFrame, layers: Iterable[str] | None = None) -> Verdict:
    r"""Training pushes eigenvalues out of the bulk: every layer has more spikes than its shuffle.

    Claim (Martin & Mahoney, arXiv 1810.01075): training correlates a layer's entries, so
    eigenvalues of :math:`W^\top W` escape above the Marchenko–Pastur edge ("spikes"); the same
    entries shuffled (the null model, same entry distribution) fall back into the bulk. Holds when
    ``n_spikes > n_spikes_random`` for every layer in ``layers`` (rows of
    :func:`toolkit.spectra.layer_report` with ``randomize=True``). No margin: a random layer may
    itself show one eigenvalue above the edge (Tracy–Widom), which the comparison with its own
    shuffled copy absorbs. Fails on an untrained net and on the shuffled trained net.
    """
    rows = _rows(report, layers)
    spikes = rows["n_spikes"].astype(int)
    shuffled = rows["n_spikes_random"].astype(int)
    return Verdict(bool((spikes > shuffled).all()),
                   {"n_spikes": [int(s) for s in spikes],
                    "n_spikes_shuffled": [int(s) for s in shuffled]})


# ------------------------------------------------------------------------------- §2 pruning


def keeps_accuracy(acc: float, dense_acc: float, *, ratio: float = 0.95) -> Verdict:
    """A pruned model keeps at least ``ratio`` of the dense accuracy.

    Claim (Han et al. 2015, arXiv 1506.02626; Blalock et al., arXiv 2003.03033):
    one-shot magnitude pruning of a trained MLP to moderate sparsity (50 %) costs almost no
    accuracy, even without fine-tuning. ``ratio = 0.95``: 5 % of the dense accuracy is about
    ten times the seed-to-seed spread of the magnitude-pruned accuracy (0.967–0.978 on seeds
    0–3); random pruning at 50 % loses 10–20 % and fails.
    """
    acc, dense_acc = float(acc), float(dense_acc)
    return Verdict(acc >= ratio * dense_acc,
                   {"acc": acc, "dense_acc": dense_acc, "fraction": acc / dense_acc,
                    "ratio": ratio})


def error_exceeds(err_high: pd.Series | Mapping, err_low: pd.Series | Mapping, *,
                  factor: float = 1.1) -> Verdict:
    r"""One method's spectral error exceeds another's by ``factor`` at every nonzero sparsity.

    ``err_high`` and ``err_low`` map sparsity → error (e.g. columns of
    ``sweep.pivot(index="amount", columns="method", values="operator")``); sparsity 0 (error 0
    for both) is skipped. Claim: magnitude pruning, the minimum-Frobenius-error mask, also
    disturbs the operator norm less than random pruning (whose :math:`\mathbb E[W_s] = (1-s)W`
    shrinks the whole spectrum). ``factor = 1.1`` so that two runs of the *same* method (random
    pruning with two seeds, ratio 1 ± 0.03) fail; measured random/magnitude ratios fall from
    about 5.8 at 25 % to 1.19–1.25 at 95 % on seeds 0–3.
    """
    high, low = pd.Series(err_high, dtype=float), pd.Series(err_low, dtype=float)
    levels = [a for a in high.index if a > 0 and a in low.index]
    ratios = {float(a): float(high[a] / low[a]) if low[a] > 0 else float("inf") for a in levels}
    passed = bool(levels) and all(r > factor for r in ratios.values())
    return Verdict(passed, {"ratios": ratios, "min_ratio": min(ratios.values(), default=np.nan),
                            "factor": factor})


def _within_level_rho(sweep: pd.DataFrame, error: str, metric: str) -> dict[float, float]:
    out = {}
    for amount, grp in sweep[sweep["amount"] > 0].groupby("amount"):
        out[float(amount)] = float(grp[metric].corr(grp[error], method="spearman"))
    return out


def ranks_within_sparsity(sweep: pd.DataFrame, error: str = "angle", *, metric: str = "acc",
                          max_mean: float = -0.6) -> Verdict:
    r"""Within each sparsity level, the method with the smaller ``error`` keeps more accuracy.

    Pooled over sparsities, every error measure correlates with accuracy only because both grow
    with sparsity; that says nothing about which *method* preserves what matters. Claim (the
    reading of Yao, Yu & Koutis, arXiv 2307.08982, that a pruned layer works as well as it keeps
    the spectrum, singular values and top singular subspaces): at a fixed sparsity, ranking the
    methods by ``error`` ranks them by accuracy. Holds when the Spearman correlation between
    ``error`` and ``metric`` across methods is negative at *every* nonzero sparsity level of
    ``sweep`` (:func:`toolkit.pruning.sparsity_sweep`) and its mean over levels is at most
    ``max_mean``. With four methods a level's Spearman takes the values 0, ±0.2, …, ±1; under a
    random ranking the mean of five levels has standard deviation ≈ 0.26, so -0.6 is about 2.3
    standard deviations and "negative at every level" has probability ≈ 0.5⁵.

    Measured on seeds 0–3 (toy notebook run): the top-5 subspace ``angle`` holds (means -0.76,
    -0.72, -0.88, -0.76), so does ``frobenius`` (-0.68 … -0.84); the operator-norm error does
    not reliably (means -0.56, -0.44, -0.64, -0.64, +0.4 at one level; it passes on seeds 2 and 3
    only): element-wise L2 sampling has the
    largest operator error yet not the lowest accuracy (:func:`error_misorders`). Fails on an
    error that grows with sparsity but is independent of the method within a level, although
    its pooled correlation is as strong (≈ -0.9).
    """
    for col in (error, metric, "amount"):
        if col not in sweep:
            raise ValueError(f"sweep has no column {col!r}; pass toolkit.pruning.sparsity_sweep's "
                             "output.")
    rhos = _within_level_rho(sweep, error, metric)
    values = np.array(list(rhos.values()), dtype=float)
    mean = float(values.mean()) if len(values) else float("nan")
    pooled = float(sweep[metric].corr(sweep[error], method="spearman"))
    passed = (len(values) > 0 and bool(np.isfinite(values).all()) and bool((values < 0).all())
              and mean <= max_mean)
    return Verdict(passed, {"rho_by_sparsity": {a: round(r, 2) for a, r in rhos.items()},
                            "mean_rho": mean, "worst_rho": float(np.nanmax(values))
                            if len(values) else float("nan"), "pooled_rho": pooled,
                            "error": error, "max_mean": max_mean})


def error_misorders(sweep: pd.DataFrame, a: str, b: str, *, error: str = "operator",
                    amounts: Sequence[float] = (0.5, 0.75, 0.9), metric: str = "acc") -> Verdict:
    """Method ``a`` has the *larger* ``error`` and yet the *higher* accuracy than ``b``.

    Holds when, at every sparsity in ``amounts``, ``error[a] > error[b]`` and
    ``metric[a] > metric[b]``: a counterexample to "the smaller this error, the better the
    pruned model". Used with ``a="l2_sampling"``, ``b="random"``, ``error="operator"``: the
    rescaling :math:`w/\\pi` of element-wise L2 sampling (Drineas & Zouzias, arXiv 1006.0407) makes
    it unbiased but adds variance, so its operator-norm error exceeds random pruning's at 50–90 %
    while it keeps far more accuracy (seeds 0–3: 0.56–0.67 vs 0.36–0.50 at 75 %). Fails for
    ``a="magnitude"``, whose error is the smaller one.
    """
    table = sweep.set_index(["method", "amount"])
    rows = {}
    for amount in amounts:
        ea, eb = float(table.loc[(a, amount), error]), float(table.loc[(b, amount), error])
        ma, mb = float(table.loc[(a, amount), metric]), float(table.loc[(b, amount), metric])
        rows[float(amount)] = {"error": (round(ea, 3), round(eb, 3)),
                               metric: (round(ma, 3), round(mb, 3)), "holds": ea > eb and ma > mb}
    return Verdict(all(r["holds"] for r in rows.values()), {"by_sparsity": rows, "a": a, "b": b})


# ------------------------------------------------------------------------ §3 lottery tickets


def _final_gap(history: pd.DataFrame, metric: str = "") -> tuple[float, float]:
    suffix = f"_{metric}" if metric else ""
    last = history.iloc[-1]
    return float(last[f"ticket{suffix}"] - last[f"control{suffix}"]), float(last["sparsity"])


def winning_ticket(history: pd.DataFrame, *, margin: float = 0.03, metric: str = "") -> Verdict:
    """At the final IMP round the ticket beats the same mask randomly re-initialised by ``margin``.

    Claim (Frankle & Carbin 2019, arXiv 1803.03635): the IMP subnetwork reset to its initial
    values trains to higher accuracy than the same mask with a fresh initialisation.
    ``history`` is :attr:`toolkit.pruning.LotteryResult.history`. ``margin = 0.03`` (13 of 450
    test digits) is three times the largest gap measured at the large learning rate (0.007–0.016,
    seeds 0–2), where Liu et al. (arXiv 1810.05270) find the initialisation no better than a
    random one, the negative control; at the small learning rate the gap is 0.087–0.107.
    """
    gap, sparsity = _final_gap(history, metric)
    return Verdict(gap >= margin, {"gap": gap, "sparsity": sparsity, "margin": margin})


def advantage_shrinks(history_small: pd.DataFrame, history_large: pd.DataFrame, *,
                      factor: float = 0.5, metric: str = "") -> Verdict:
    """The ticket's advantage at the large learning rate is at most ``factor`` × the small one's.

    Claim (Frankle & Carbin 2019, arXiv 1803.03635 §5; Liu et al., arXiv 1810.05270): the winning
    property depends on the learning rate. Holds when the small-rate gap is positive and the
    large-rate gap is at most ``factor`` times it. ``factor = 0.5``: two runs at the *same*
    learning rate differing only by the seed (the control) give ratios 0.8–1.2; the measured
    large/small ratios are 0.17, 0.08, 0.10 (seeds 0–2).
    """
    gap_small, _ = _final_gap(history_small, metric)
    gap_large, _ = _final_gap(history_large, metric)
    passed = gap_small > 0 and gap_large <= factor * gap_small
    return Verdict(passed, {"gap_small": gap_small, "gap_large": gap_large,
                            "ratio": gap_large / gap_small if gap_small else float("nan"),
                            "factor": factor})


# ----------------------------------------------------------------- notebook 08 path-norms


def path_norm_invariant(before: Mapping[str, float], after: Mapping[str, float], *,
                        rtol: float = 1e-6, min_ratio: float = 10.0) -> Verdict:
    r"""The path-norm is invariant under the rescaling symmetry; the product of layer operator
    norms is not.

    Claim (Gonon, Brisebarre, Riccietti & Gribonval, arXiv 2310.01225, §2): the path-lifting
    :math:`\Phi(\theta)` -- hence every path-norm -- is unchanged when a hidden ReLU neuron's
    incoming weights and bias are multiplied by :math:`\lambda>0` and its outgoing weights divided
    by it, while layer-wise norm products move. ``before`` / ``after`` map ``"path_norm_1"``,
    ``"path_norm_2"`` and ``"operator_product"`` to their values on a model and on its rescaled
    copy (the same function). Holds when both path-norms agree within ``rtol`` (they are equal in
    exact arithmetic; a float32 model rescaled in place drifts by ~1e-9) and the operator-norm
    product changed by a
    factor of at least ``min_ratio`` either way. Fails for a rescaling that is not a symmetry
    (incoming weights scaled, outgoing ones left alone), and for a symmetric rescaling too mild to
    move the norm product. Values: ``path_norm_change`` (largest relative change), ``ratio``.
    """
    change = max(abs(after[k] - before[k]) / before[k] for k in ("path_norm_1", "path_norm_2"))
    ratio = after["operator_product"] / before["operator_product"]
    ratio = max(ratio, 1.0 / ratio)
    return Verdict(change <= rtol and ratio >= min_ratio,
                   {"path_norm_change": float(change), "ratio": float(ratio)})


# ------------------------------------------- notebook 08: rewinding vs fine-tuning (Renda et al.)


def _final_modes(table: pd.DataFrame, metric: str = "test_acc") -> pd.Series:
    last = table[table["round"] == table["round"].max()]
    return last.set_index("mode")[metric].astype(float)


def ticket_advantage_vanishes(table_small: pd.DataFrame, table_large: pd.DataFrame, *,
                              margin: float = 0.05, factor: float = 0.5,
                              metric: str = "test_acc") -> Verdict:
    """At the last pruning round the ticket (``rewind_0``) beats the re-initialised mask
    (``reinit``) by at least ``margin`` at the small learning rate, and at the large one by less
    than ``margin`` and at most ``factor`` times the small-rate gap.

    Claim (Frankle & Carbin 2019, arXiv 1803.03635 §5; Liu et al., arXiv 1810.05270; the seed of
    Renda et al. 2020, arXiv 2003.02389): the winning property of rewinding to θ0 shows when
    training is short of converged (small rate) and vanishes at a larger, better-tuned rate.
    Tables: :func:`toolkit.pruning.retraining_modes`. Measured on the toy preset (seeds 0–2):
    small-rate gaps 0.235, 0.124, 0.254; large-rate gaps 0.031, 0.023, 0.011. The control (two
    small-rate runs with different seeds as "small" and "large") keeps a large gap and fails.
    """
    small, large = _final_modes(table_small, metric), _final_modes(table_large, metric)
    gap_small = float(small["rewind_0"] - small["reinit"])
    gap_large = float(large["rewind_0"] - large["reinit"])
    passed = gap_small >= margin and gap_large < margin and gap_large <= factor * gap_small
    return Verdict(passed, {"gap_small": gap_small, "gap_large": gap_large, "margin": margin,
                            "factor": factor})


def retraining_matches_ticket(table: pd.DataFrame, *, modes: Sequence[str] = ("finetune",
                                                                            "lr_rewind"),
                              tol: float = 0.015, metric: str = "test_acc") -> Verdict:
    """At the last pruning round each of ``modes`` reaches the ticket's (``rewind_0``) accuracy
    within ``tol`` or beats it.

    Claim (Renda et al. 2020, arXiv 2003.02389, at the large learning rate): retraining the
    trained survivors, with learning-rate rewinding (and here also fine-tuning at a small rate,
    0.1 × the peak rate), does as well as the rewound ticket at equal retraining epochs.
    ``tol = 0.015`` (7 of 450 test digits). Measured (seeds 0–2, lr 0.5): lr_rewind − ticket
    +0.024, −0.003, +0.016; fine-tuning at 0.1 × lr −ticket +0.011, −0.009, +0.005. Renda et al.
    find fine-tuning at the schedule's *final* rate worse than rewinding; so do we (0.01 × lr:
    −0.087, −0.069, −0.035), the negative control.
    """
    last = _final_modes(table, metric)
    diffs = {m: float(last[m] - last["rewind_0"]) for m in modes}
    passed = all(d >= -tol for d in diffs.values())
    return Verdict(passed, {**{f"{m}_minus_ticket": d for m, d in diffs.items()}, "tol": tol})


# ------------------------------------- notebook 08: sparsifiers at equal sparsity (Yao et al.)


def beats_at_every_sparsity(sweep: pd.DataFrame, winner: str, loser: str, *,
                            metric: str = "operator", higher_is_better: bool = False,
                            amounts: Iterable[float] | None = None) -> Verdict:
    """Method ``winner`` is strictly better than ``loser`` on ``metric`` at every pruned amount of
    a :func:`toolkit.pruning.sparsity_sweep` (``amount > 0``, or the listed ``amounts``).

    Used for the comparisons of notebook 08 §4 (Yao, Yu & Koutis, arXiv 2307.08982: a sparsifier
    that keeps the spectrum). Measured on the toy preset at amounts 0.5, 0.8, 0.9 (seeds 0–2):
    ``l1_sampling`` has a lower operator-norm error than ``l2_sampling`` in all 9 cases
    (0.45–2.2 vs 0.80–4.2) and a higher accuracy than ``random`` in all 9; ``magnitude`` beats
    ``l1_sampling`` on operator error, top-subspace angle and accuracy in all 9. Controls: the
    same pairs swapped, and ``l1_sampling`` vs ``random`` on the operator error (random is lower
    at 0.8 and 0.9) fail.
    """
    rows = sweep[sweep["amount"] > 0] if amounts is None else sweep[sweep["amount"].isin(
        list(amounts))]
    table = rows.pivot_table(index="amount", columns="method", values=metric)
    diff = (table[winner] - table[loser]) * (1 if higher_is_better else -1)
    passed = bool(len(diff) > 0 and (diff > 0).all())
    return Verdict(passed, {"margins": {float(a): round(float(d), 4) for a, d in diff.items()},
                            "metric": metric})
