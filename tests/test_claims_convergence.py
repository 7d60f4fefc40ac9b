"""Negative controls for the claims of notebook 09 (toolkit.claims.convergence).

The notebook's procedure (a bias-free ReLU MLP trained with Adam on digits, per-object losses on
a filter-normalised plane, nested subsets in random orders) runs on seeds 0, 1, 2, where each
claim must hold. Controls where the surfaces do not average must fail: the per-object loss
itself (|ℓ_{k+1} − ℓ_k|), a fresh random subset for each k (consecutive surfaces share no
objects by construction), a bound with a deliberately wrong constant, and the top eigenvalue of a
single object's Hessian in place of the subset mean's.
"""

from functools import cache

import numpy as np
import pytest
import torch

from toolkit import claims, data, landscape, models, presets, train
from toolkit import landscape_convergence as lc
from toolkit.claims import convergence as convergence_claims
from toolkit.widgets import convergence as convergence_widgets

pytestmark = pytest.mark.control

P = presets.get_preset("landscape_convergence", "toy")
SEEDS = (0, 1, 2)


@cache
def _run(seed: int):
    train_set, _ = data.load_digits(seed=seed)
    torch.manual_seed(seed)
    net = models.MLP(64, list(P.widths), 10, bias=False)
    train.fit(net, train_set, epochs=P.epochs, batch_size=P.batch_size, lr=P.lr,
              optimizer=P.optimizer, seed=seed, device="cpu", progress=False)
    d1 = landscape.random_direction(net, seed=seed)
    d2 = landscape.random_direction(net, seed=seed + 1000)
    surf = lc.per_sample_surface(net, train_set, d1, d2, xrange=(-P.span, P.span),
                                 yrange=(-P.span, P.span), steps=P.steps)
    diffs = lc.consecutive_differences(surf, orders=P.orders, seed=seed)
    bound = lc.lemma2_bound(net, train_set, surf)
    rng = np.random.default_rng(seed)
    eigs = np.array([lc.subset_top_eigenvalues(net, train_set, P.eig_sizes,
                                               order=rng.permutation(surf.n))
                     for _ in range(P.eig_orders)])
    return net, train_set, surf, diffs, bound, eigs


@pytest.mark.parametrize("seed", SEEDS)
def test_difference_decays_real(seed):
    _, _, _, diffs, bound, _ = _run(seed)
    verdict = convergence_claims.difference_decays(diffs.k, diffs.mean, bound.at(diffs.k),
                                                   largest=diffs.max, k_min=P.k_min)
    assert verdict, verdict
    assert verdict["slope"] == pytest.approx(-1.0, abs=0.1)
    assert verdict["bound_ratio"] > 1e4   # the bound is loose by many orders of magnitude


def test_difference_decays_fails_for_the_per_object_loss():
    _, _, surf, _, _, _ = _run(0)
    rng = np.random.default_rng(0)
    flat = surf.losses.reshape(surf.n, -1)
    per = np.mean([np.abs(np.diff(flat[rng.permutation(surf.n)], axis=0)).mean(axis=1)
                   for _ in range(P.orders)], axis=0)
    verdict = convergence_claims.difference_decays(np.arange(1, surf.n), per, k_min=P.k_min)
    assert not verdict and abs(verdict["slope"]) < 0.3


def test_difference_decays_fails_for_a_fresh_subset_at_every_k():
    # L_{k+1} and L_k on independent random subsets (drawn with replacement, so there is no
    # finite-population shrinkage near k = N): they differ by the sampling noise, ~k^(-1/2)
    _, _, surf, _, _, _ = _run(0)
    rng = np.random.default_rng(0)
    flat = surf.losses.reshape(surf.n, -1)
    ks = np.unique(np.geomspace(1, surf.n - 1, 60).astype(int))
    fresh = np.array([np.mean([np.abs(flat[rng.integers(0, surf.n, k + 1)].mean(0)
                                      - flat[rng.integers(0, surf.n, k)].mean(0)).mean()
                               for _ in range(5)]) for k in ks])
    verdict = convergence_claims.difference_decays(ks, fresh, k_min=P.k_min)
    assert not verdict and verdict["slope"] == pytest.approx(-0.5, abs=0.15)


def test_difference_decays_fails_with_a_wrong_constant_in_the_bound():
    _, _, _, diffs, bound, _ = _run(0)
    wrong = bound.at(diffs.k) / 1e10
    verdict = convergence_claims.difference_decays(diffs.k, diffs.mean, wrong, largest=diffs.max,
                                                   k_min=P.k_min)
    assert not verdict and verdict["bound_ratio"] < 1 and verdict["slope"] < -0.8


@pytest.mark.parametrize("seed", SEEDS)
def test_eigenvalue_converges_real(seed):
    _, _, _, _, _, eigs = _run(seed)
    verdict = convergence_claims.eigenvalue_converges(P.eig_sizes, eigs)
    assert verdict, verdict


def test_eigenvalue_converges_fails_for_single_objects():
    # no averaging: λ_max of the Hessian of one object, the k-th of each ordering
    net, train_set, _, _, _, _ = _run(0)
    x, y = train_set.tensors
    rng = np.random.default_rng(0)
    single = np.array([[lc.subset_top_eigenvalues(net, (x[[i]], y[[i]]), [1])[0]
                        for i in rng.permutation(len(x))[np.array(P.eig_sizes) - 1]]
                       for _ in range(P.eig_orders)])
    verdict = convergence_claims.eigenvalue_converges(P.eig_sizes, single)
    assert not verdict and verdict["spread_last"] > 0.5 and verdict["slope"] > -0.5


def test_panel_drawn_on_the_difference_panel():
    _, _, surf, diffs, bound, _ = _run(0)
    p = convergence_widgets.difference_panel(surf, diffs, bound=bound)
    assert claims.panel_drawn(p, n_axes=3)
    before = p.png()
    k = p.controls["k"]
    k.value = k.options[0]
    assert p.n_draws == 2 and claims.panel_drawn(p, n_axes=3)
    assert p.png() != before
    assert f"L_{{{k.value + 1}}}" in p.figure.axes[0].get_title()
