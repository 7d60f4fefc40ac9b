r"""Claims of notebook 10 (sharpness and generalisation) as falsifiable predicates.

``tests/test_claims_sharpness.py`` runs each on the notebook's procedure at toy size (SAM on the
sparse parity, seeds 0, 1, 2; the hand-built memorising interpolator) where it must hold, and on
negative controls where it must fail: the construction without its optimal rescaling or SAM's own
solution in place of the construction; SAM on shuffled labels; the construction without biases;
the flatness search on shuffled labels or without its penalty.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._base import Verdict

__all__ = ["flattest_yet_memorises", "sam_generalises", "isolates_training_points",
           "flattest_found_generalises"]


def _reports(reports) -> list:
    out = list(reports) if isinstance(reports, Sequence) else [reports]
    if not out:
        raise ValueError("pass at least one FlatnessReport (one per seed).")
    return out


def flattest_yet_memorises(construction, sam, *, max_train_loss: float = 1e-6,
                           chance: float = 0.5, accuracy_tol: float = 0.05) -> Verdict:
    r"""In the spirit of Wen, Li & Ma's scenario (3) (arXiv 2307.11007): there is an interpolator
    *flatter* than the solution SAM finds that does *not* generalise.

    ``construction`` and ``sam`` (one or several, e.g. one per seed) are
    :class:`toolkit.sharpness.FlatnessReport`\ s. Holds when the construction interpolates (train
    loss ≤ ``max_train_loss``), its tr(H) is below the smallest tr(H) of SAM's solutions, and its
    test accuracy is within ``accuracy_tol`` of ``chance``. (At toy size, d = 10, n = 128: the
    construction's tr(H) is 15.27, the closed-form least value of any interpolator with zero
    output bias; SAM's, data seed 0, were 16.9, 37.3, 18.5 on seeds 0, 1, 2, at test accuracy
    0.996, 0.942, 1.0.)

    Values: ``trace``, ``sam_trace`` (smallest), ``test_accuracy``, ``train_loss``.
    """
    sam = _reports(sam)
    sam_trace = min(r.trace for r in sam)
    passed = (construction.train_loss <= max_train_loss and construction.trace < sam_trace
              and abs(construction.test_accuracy - chance) <= accuracy_tol)
    return Verdict(passed, {"trace": construction.trace, "sam_trace": sam_trace,
                            "test_accuracy": construction.test_accuracy,
                            "train_loss": construction.train_loss})


def sam_generalises(reports, *, min_accuracy: float = 0.9, max_train_loss: float = 0.05) -> Verdict:
    r"""SAM (Foret et al. 2021, arXiv 2010.01412) fits the training set and generalises on every
    seed, although flatter non-generalising interpolators exist (Wen, Li & Ma, arXiv 2307.11007,
    scenario 3): every report has train loss ≤ ``max_train_loss`` and test accuracy ≥
    ``min_accuracy``.

    Values: ``min_accuracy`` (over the reports), ``max_train_loss``, ``n``.
    """
    reports = _reports(reports)
    acc = min(r.test_accuracy for r in reports)
    loss = max(r.train_loss for r in reports)
    return Verdict(acc >= min_accuracy and loss <= max_train_loss,
                   {"min_accuracy": acc, "max_train_loss": loss, "n": len(reports)})


def isolates_training_points(active_train: torch.Tensor, active_unseen: torch.Tensor) -> Verdict:
    r"""The memorising construction's mechanism: every training point has exactly one active
    hidden neuron, no two points share it, and no neuron fires on any unseen point.

    ``active_train`` (n, width) and ``active_unseen`` (M, width) are boolean firing patterns
    (:func:`toolkit.sharpness.firing_pattern`) on the training points and on unseen points (all
    the other points of the cube in the notebook). Fails for the same recipe without biases,
    whose neurons each fire on about half of the cube, and for trained nets.

    Values: ``max_active_per_point``, ``shared_neurons``, ``unseen_points_hit``.
    """
    a, u = torch.as_tensor(active_train).bool(), torch.as_tensor(active_unseen).bool()
    if a.ndim != 2 or u.ndim != 2 or a.shape[1] != u.shape[1]:
        raise ValueError(f"active_train and active_unseen must be (N, width) with the same width, "
                         f"got {tuple(a.shape)} and {tuple(u.shape)}.")
    per_point = a.sum(1)
    shared = int((a.sum(0) > 1).sum())
    hit = int(u.any(1).sum())
    passed = bool((per_point == 1).all()) and shared == 0 and hit == 0
    return Verdict(passed, {"max_active_per_point": int(per_point.max()),
                            "shared_neurons": shared, "unseen_points_hit": hit})


def flattest_found_generalises(found, *, bound: float, max_ratio: float = 1.5,
                               max_train_loss: float = 1e-3, min_accuracy: float = 0.9,
                               others=()) -> Verdict:
    r"""The approximately flattest interpolators that a search finds
    (:func:`toolkit.sharpness.minimise_sharpness`, one per initialisation) generalise: the
    empirical side of Wen, Li & Ma's scenario (1), "flatness implies generalisation"
    (arXiv 2307.11007; the paper *proves* it under assumptions we could not read, so this checks
    what our search finds, not the theorem).

    ``found`` (one or several :class:`toolkit.sharpness.FlatnessReport`\ s, tr(H) measured on the
    final nets) holds when every net interpolates (train loss ≤ ``max_train_loss``), is nearly
    flattest (tr(H) ≤ ``max_ratio`` × ``bound``, the closed-form least tr(H) of an interpolator,
    :func:`toolkit.sharpness.trace_lower_bound`), is flatter than every net in ``others`` (e.g.
    the GD and SAM solutions) and scores test accuracy ≥ ``min_accuracy``. At toy size (d = 10,
    n = 128, data seed 0, inits 0–2) the bias-free search gave tr(H) 16.97–17.26 against the bound
    4√10 = 12.65 (ratio ≤ 1.37) at test accuracy 1.0; with biases 14.09–14.62 against 13.82.
    Fails on shuffled labels (no interpolation, accuracy ≈ ½) and without the penalty (tr(H) ≈ 20
    times the bound).

    Values: ``max_trace``, ``trace_ratio`` (max trace / bound), ``others_min_trace``,
    ``min_accuracy``, ``max_train_loss``, ``n``.
    """
    found = _reports(found)
    if not bound > 0:
        raise ValueError(f"bound must be a positive lower bound on tr(H), got {bound!r}; use "
                         "toolkit.sharpness.trace_lower_bound.")
    others = list(others) if isinstance(others, Sequence) else [others]
    max_trace = max(r.trace for r in found)
    others_min = min((r.trace for r in others), default=float("inf"))
    acc = min(r.test_accuracy for r in found)
    loss = max(r.train_loss for r in found)
    passed = (loss <= max_train_loss and max_trace <= max_ratio * bound
              and max_trace < others_min and acc >= min_accuracy)
    return Verdict(passed, {"max_trace": max_trace, "trace_ratio": max_trace / bound,
                            "others_min_trace": others_min, "min_accuracy": acc,
                            "max_train_loss": loss, "n": len(found)})
