"""Falsifiable claims of notebook 02 (loss landscapes and curvature).

Each predicate is a small pure function on results the notebook already has (an
:class:`~toolkit.landscape.Interpolation`, a training history, a ``class_hessian`` table, ...)
and returns a :class:`~toolkit.claims.Verdict`. ``tests/test_claims_landscape.py`` (marker
``control``) runs every one of them on a negative control in which the phenomenon is absent and
asserts that it fails, and on the notebook's toy run (seeds 0, 1, 2 where the claim depends on the
seed) and asserts that it holds. The thresholds are set between the two with a margin; each
docstring gives the numbers measured on both sides.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ._base import Verdict

__all__ = ["monotone_path", "smoother_with_skips", "filter_normalisation_invariant",
           "trajectory_in_plane", "class_outliers", "slq_matches_trace", "sharpness_order",
           "edge_of_stability", "below_stability_threshold", "minority_saddles"]


# ------------------------------------------------------------------------------------- §1


def monotone_path(path, *, start: float = 0.0, end: float = 1.0, drop: float = 0.5,
                  max_rise: float = 0.01) -> Verdict:
    """The loss falls monotonically along the straight line from θ₀ (α=start) to θ₁ (α=end).

    Goodfellow, Vinyals & Saxe 2015 (arXiv 1412.6544). ``path`` is a
    :func:`toolkit.landscape.interpolate` result. Holds when L(θ₁) < ``drop`` · L(θ₀) (training
    did something) and the largest rise between consecutive points of [start, end] is below
    ``max_rise`` · L(θ₀) (no barrier). Toy run, seeds 0–2: end/start ≈ 0.15, largest rise 0.
    Control: the path between two nets trained from different seeds has a barrier of ≈ 0.55
    (≈ 170 % of the end loss) and no drop, so it fails.
    """
    alphas = np.asarray(path.alphas)
    loss = np.asarray(path.loss)
    i0, i1 = int(np.argmin(np.abs(alphas - start))), int(np.argmin(np.abs(alphas - end)))
    rise = float(path.max_increase(start, end))
    start_loss, end_loss = float(loss[i0]), float(loss[i1])
    ok = end_loss < drop * start_loss and rise < max_rise * start_loss
    return Verdict(bool(ok), {"start_loss": start_loss, "end_loss": end_loss, "max_rise": rise})


# ------------------------------------------------------------------------------------- §2


def smoother_with_skips(nonconvex_skip: float, nonconvex_plain: float, loss_skip: float,
                        loss_plain: float, *, factor: float = 2.0,
                        loss_tol: float = 1.25) -> Verdict:
    """At matched training loss, the surface without skip connections is far more non-convex.

    Li et al. 2018 (arXiv 1712.09913, §5). The non-convex fractions come from
    :func:`toolkit.landscape.nonconvexity` on filter-normalised surfaces of the two nets, each taken
    at a checkpoint whose training loss is ``loss_skip`` / ``loss_plain``. Comparing a well-trained
    net with a badly trained one would measure training progress, not architecture, so the claim
    requires the two losses to agree within a factor ``loss_tol`` (1.25; the closest epochs of the
    toy runs agree within 1.15×) and then ``nonconvex_plain > factor · nonconvex_skip``. Toy run,
    seeds 0–4: 0.31–0.64 without skips against 0.00–0.08 with them. Control: two nets that both
    have skip connections (different seeds), ratio ≈ 1, fails.
    """
    loss_ratio = float(max(loss_skip, loss_plain) / max(min(loss_skip, loss_plain), 1e-12))
    matched = loss_ratio <= loss_tol
    ok = matched and nonconvex_plain > factor * nonconvex_skip
    return Verdict(bool(ok), {"nonconvex_skip": float(nonconvex_skip),
                              "nonconvex_plain": float(nonconvex_plain),
                              "loss_skip": float(loss_skip), "loss_plain": float(loss_plain),
                              "loss_ratio": loss_ratio})


def filter_normalisation_invariant(same_function: bool, filter_diff: float, none_diff: float, *,
                                   tol: float = 1e-3, min_diff: float = 0.1) -> Verdict:
    """Filter-normalised surfaces do not change under a function-preserving rescaling;
    unnormalised ones do.

    Li et al. 2018 (arXiv 1712.09913, §4). ``same_function``: the rescaled net computes the same
    outputs; ``filter_diff`` / ``none_diff``: :func:`toolkit.landscape.relative_difference` of the
    filter-normalised / unnormalised surfaces of the two nets. Holds when the function is the same,
    ``filter_diff < tol`` (float32 round-off gives ~1e-7) and ``none_diff > min_diff`` (≈ 2.9 at
    α = 10). Control: rescaling one layer only (not function-preserving) breaks the first two.
    """
    ok = bool(same_function) and filter_diff < tol and none_diff > min_diff
    return Verdict(bool(ok), {"same_function": bool(same_function),
                              "filter_diff": float(filter_diff), "none_diff": float(none_diff)})


# ------------------------------------------------------------------------------------- §3


def _flat(params) -> torch.Tensor:
    if isinstance(params, torch.nn.Module):
        params = dict(params.named_parameters())
    return torch.cat([t.detach().cpu().reshape(-1).double() for t in params.values()])


def trajectory_in_plane(trajectory, d1, d2, *, min_captured: float = 0.8) -> Verdict:
    """A plane captures most of the trajectory's variation, and the path on it descends.

    Li et al. 2018 (arXiv 1712.09913, §7). ``trajectory`` is a list of parameter dicts
    (``TrajectoryRecorder.trajectory``), ``d1``, ``d2`` two directions (dicts). ``captured`` is
    the fraction of the variance of the centred rows θ_t − mean_t θ_t that lies in span(d1, d2)
    (for the two PCA directions it equals the sum of their explained variance ratios). Holds when
    ``captured > min_captured`` and the first checkpoint lies farther from the final point on the
    plane than the middle one. Toy run, seeds 0–2: 0.93–0.95 on the PCA plane. Control: two random
    filter-normalised directions capture ≈ 2/P of it (≈ 1e-3 for the 1.6k-parameter MLP).
    """
    rows = torch.stack([_flat(p) for p in trajectory])
    basis, _ = torch.linalg.qr(torch.stack([_flat(d1), _flat(d2)], dim=1))
    centred = rows - rows.mean(dim=0)
    total = float((centred ** 2).sum())
    captured = float(((centred @ basis) ** 2).sum()) / max(total, 1e-300)
    coords = (rows - rows[-1]) @ basis
    descends = bool(coords[0].norm() > coords[len(coords) // 2].norm())
    ok = captured > min_captured and descends
    return Verdict(bool(ok), {"captured": captured, "descends": descends})


# ------------------------------------------------------------------------------------- §4


def class_outliers(eigenvalues, n_classes: int, *, min_gap: float = 2.0) -> Verdict:
    """The top of the Hessian spectrum is C − 1 outliers (C with some losses), then a bulk.

    Papyan 2020 (arXiv 2008.11865). ``eigenvalues`` sorted descending (``top_eigenvalues(k=...)``
    with k > C). The largest ratio λ_i / λ_{i+1} must come after i = C − 1 or C and exceed
    ``min_gap``. Toy run (4 classes), seeds 0–2: the gap is after 3, ratio 2.9–3.1 (also at
    initialisation: 3.3–3.5, and with shuffled labels: 2.3–3.1 — the outliers come from the
    class structure of the softmax output, not from learning). Controls: linear least squares on
    isotropic inputs (no classes: Marchenko–Pastur bulk, largest ratio ≈ 1.1) fails, and a 6-class
    net checked against C = 4 fails (its gap is after 5).
    """
    ev = np.asarray(eigenvalues, dtype=np.float64)
    ratios = ev[:-1] / np.where(np.abs(ev[1:]) > 1e-30, ev[1:], 1e-30)
    n_out = int(np.argmax(ratios)) + 1
    ok = n_out in (n_classes - 1, n_classes) and float(ratios.max()) > min_gap
    return Verdict(bool(ok), {"n_outliers": n_out, "gap": float(ratios.max()),
                              "n_classes": int(n_classes)})


def slq_matches_trace(density, trace, *, z: float = 3.0, max_rel_se: float = 0.15,
                      integral_tol: float = 1e-3) -> Verdict:
    """The SLQ density integrates to 1 and its mean matches an independent trace estimate,
    within the two estimators' standard errors.

    Ghorbani et al. 2019 (arXiv 1901.10159), Meyer et al. 2021 (arXiv 2010.09649). ``density`` is
    a :func:`toolkit.hessian.spectral_density` result, ``trace`` a :func:`toolkit.hessian.trace`
    result (Hutch++). n·Σ_j τ_j θ_j of each random vector is an unbiased estimate of tr(H); their
    standard error over the vectors and ``trace.stderr`` give the combined error s, and the claim
    is |SLQ − Hutch++| ≤ z·s with s ≤ ``max_rel_se`` · |tr| (so a huge error bar cannot pass).
    SLQ's trace is a Hutchinson estimate with normalised Gaussian vectors, so with a few vectors
    its error is several per cent (a 0.3 % agreement seen with 2 vectors was luck: 4 vectors
    on the same net were 8 % off); ``max_rel_se`` = 15 %. Toy run (8 vectors, Hutch++ with 30
    products), seeds 0–2: |Δ|/s ≈ 0.3–0.7, s/tr ≈ 5–10 %. Control: SLQ of the trained net
    against Hutch++ of the same net after a function-preserving ×2 rescaling of its first layer
    (section 2; a different Hessian) fails with |Δ|/s ≫ 3.
    """
    per_vector = np.array([density.n_params * float(np.sum(w * t))
                           for t, w in zip(density.nodes, density.weights)])
    slq = float(per_vector.mean())
    se_slq = float(per_vector.std(ddof=1) / np.sqrt(len(per_vector))) if len(per_vector) > 1 \
        else float("inf")
    se = float(np.hypot(se_slq, trace.stderr))
    diff = slq - float(trace.trace)
    integral = float(density.integral())
    ok = (abs(integral - 1) < integral_tol and abs(diff) <= z * se
          and se <= max_rel_se * abs(trace.trace))
    return Verdict(bool(ok), {"slq": slq, "hutchpp": float(trace.trace), "slq_stderr": se_slq,
                              "hutchpp_stderr": float(trace.stderr), "stderr": se,
                              "z": abs(diff) / max(se, 1e-300), "rel_se": se / abs(trace.trace),
                              "integral": integral})


# ------------------------------------------------------------------------------------- §5


def sharpness_order(gd: float, sgd: float, sam: float, *, margin: float = 1.1) -> Verdict:
    """λ_max: full-batch GD > small-batch SGD > SAM, each by a factor ``margin``.

    Keskar et al. 2017 (arXiv 1609.04836); Foret et al. 2021 (arXiv 2010.01412). Toy run, seeds
    0–2: GD 0.92–1.10, SGD 0.42–0.48, SAM 0.31–0.32 (ratios ≥ 1.35). Control: SAM with ρ = 1e-4
    in place of SAM (and small-batch SGD in place of GD) gives the same λ_max as SGD and fails.
    """
    ok = gd > margin * sgd and sgd > margin * sam
    return Verdict(bool(ok), {"gd": float(gd), "sgd": float(sgd), "sam": float(sam)})


# ------------------------------------------------------------------------------------- §6


def _curve(history: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    h = history[history[column].notna()]
    return h["epoch"].to_numpy(), h[column].to_numpy(dtype=np.float64)


def edge_of_stability(history: pd.DataFrame, lr: float, *, band: float = 0.1,
                      min_within: float = 0.75, min_crossings: int = 3,
                      min_rise_fraction: float = 0.05, column: str = "lambda_max") -> Verdict:
    """Full-batch GD reaches 2/η early, then λ_max hovers at 2/η while the loss falls
    non-monotonically.

    Cohen et al. 2021 (arXiv 2103.00065). ``history`` is a full-batch :func:`toolkit.train.fit`
    history (one step per epoch, ``train_loss`` every step) with ``lambda_max`` from a
    ``LambdaMaxTracker``. Holds when all of:

    * the first sample with λ_max ≥ 2/η comes in the first half of the run (progressive
      sharpening reached the edge, with time left to watch it);
    * from then on, at least ``min_within`` (75 %) of the samples lie within ±``band`` (10 %) of
      2/η and λ_max − 2/η changes sign at least ``min_crossings`` (3) times in all (up, back down,
      up again: it hovers rather than crossing once);
    * after the first crossing the loss rises on at least ``min_rise_fraction`` (5 %) of the steps
      (unstable oscillation), yet the final loss is below the loss at the first crossing.

    Toy run (700 steps, η = 2, samples every 10 steps), seeds 0–4: first crossing at step
    150–260 (peak 13–19 % above 2/η), 90–93 % within ±10 %, 3–7 sign changes (3 on seeds 1 and
    3: the least margin of the four conditions), the loss rises on 20–29 % of the steps after the
    crossing and ends 2.3–3.5× lower (0.013–0.018 → 0.005). Control: η = 1 never reaches
    2/η = 2 (λ_max ≤ 1.4), fails; so does η = 0.5.
    """
    threshold = 2.0 / lr
    epochs, lam = _curve(history, column)
    total = float(history["epoch"].max())
    above = np.nonzero(lam >= threshold)[0]
    nan = float("nan")
    values = {"threshold": threshold, "peak": float(np.nanmax(lam)) if len(lam) else nan,
              "first_crossing": nan, "first_crossing_fraction": nan, "within": nan,
              "crossings": 0, "rise_fraction": nan, "loss_at_crossing": nan,
              "final_loss": float(history["train_loss"].iloc[-1])}
    if len(above) == 0:
        return Verdict(False, values)
    i0 = int(above[0])
    after = lam[i0:]
    sign = np.sign(lam - threshold)
    sign[sign == 0] = 1
    loss_h = history[history["epoch"] >= epochs[i0]]["train_loss"].to_numpy(dtype=np.float64)
    values.update(first_crossing=float(epochs[i0]),
                  first_crossing_fraction=float(epochs[i0] / total),
                  within=float(np.mean(np.abs(after / threshold - 1) <= band)),
                  crossings=int(np.sum(sign[1:] != sign[:-1])),
                  rise_fraction=float(np.mean(np.diff(loss_h) > 0)) if len(loss_h) > 1 else nan,
                  loss_at_crossing=float(loss_h[0]))
    ok = (values["first_crossing_fraction"] < 0.5 and values["within"] >= min_within
          and values["crossings"] >= min_crossings
          and values["rise_fraction"] >= min_rise_fraction
          and values["final_loss"] < values["loss_at_crossing"])
    return Verdict(bool(ok), values)


def below_stability_threshold(history: pd.DataFrame, lr: float, *,
                              column: str = "lambda_max") -> Verdict:
    """With a small step size, λ_max never reaches 2/η (the control of the edge of stability).

    Cohen et al. 2021 (arXiv 2103.00065): GD is only pinned at 2/η when sharpening reaches it.
    Holds when every recorded λ_max is below 2/η. Toy run: η = 1, λ_max 1.1–1.4 < 2 (seeds 0–4).
    Control: the η = 2 run, whose λ_max reaches and overshoots 2/η = 1, fails.
    """
    _, lam = _curve(history, column)
    threshold = 2.0 / lr
    peak = float(np.max(lam)) if len(lam) else float("nan")
    return Verdict(bool(len(lam) and peak < threshold),
                   {"threshold": threshold, "peak": peak,
                    "peak_fraction": peak / threshold})


# ------------------------------------------------------------------------------------- §7


def minority_saddles(table: pd.DataFrame, *, minority=None, factor: float = 5.0) -> Verdict:
    """Minority classes have far more negative curvature in their class loss than majority ones.

    Rangwani et al. 2022 (arXiv 2212.13827). ``table`` is a :func:`toolkit.hessian.class_hessian`
    result; ``minority`` the minority class labels (default: every class smaller than the
    largest). Holds when the mean λ_min over minority classes is negative and ``factor`` (5) times
    more negative than the majority mean. Reported beside it: the scale-free ratio |λ_min| / λ_max
    of both groups. Toy run (step imbalance 0.05), seeds 0–2: −0.13…−0.16 against −0.005…−0.006
    (≈ 25×); in the ratio ≈ 2× (0.06–0.07 against 0.03), because the minority λ_max is also ≈ 10×
    larger. Control: the same classes of a balanced set of equal size: −0.012…−0.017 against
    −0.009…−0.012 (≤ 1.5×), fails.
    """
    if minority is None:
        small = table["n_samples"] < table["n_samples"].max()
    else:
        small = table["class"].isin(list(minority))
    if not small.any() or small.all():
        raise ValueError("minority must name some, not all, classes of the table.")
    tail, head = (float(table.loc[m, "lambda_min"].mean()) for m in (small, ~small))
    r_tail, r_head = (float(table.loc[m, "ratio"].mean()) for m in (small, ~small))
    ok = tail < 0 and tail < factor * head  # head >= 0: any negative tail is more negative
    return Verdict(bool(ok), {"minority": tail, "majority": head, "minority_ratio": r_tail,
                        "majority_ratio": r_head})
