"""Negative controls for the claims of notebook 10 (toolkit.claims.sharpness).

The notebook's procedure at toy size: SAM on the 2-sparse parity (data seed 0), nets on seeds 0, 1,
2, and the hand-built memorising interpolator. Each predicate holds there and fails on a control:
SAM on shuffled labels; the construction without its optimal rescaling, or SAM's own solution in
its place; the same recipe without biases, or a trained net, for the isolation mechanism.
"""

from functools import cache

import pytest
import torch

from toolkit import claims, models, presets, sharpness, train
from toolkit.claims import sharpness as sharpness_claims
from toolkit.widgets import sharpness as sharpness_widgets

pytestmark = pytest.mark.control

P = presets.get_preset("sharpness", "toy")
SEEDS = (0, 1, 2)


@cache
def _data():
    return sharpness.sparse_parity(P.n_train, P.d, P.k, seed=0, n_test=P.n_test)


@cache
def _sam(seed: int, shuffled: bool = False):
    (x, y), test = _data()
    if shuffled:
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(100 + seed))]
    torch.manual_seed(seed)
    net = models.MLP(P.d, list(P.widths), 1)
    train.fit(net, (x, y), loss="mse", optimizer="sam", rho=P.rho, lr=P.lr, epochs=P.epochs,
              device="cpu", seed=seed, metrics=("loss",), progress=False)
    return net, sharpness.measure(net, (x, y), test, method="exact")


def _memoriser(scale=None):
    (x, y), test = _data()
    net = sharpness.memorising_interpolator(x, y, width=P.widths[0], scale=scale)
    return net, sharpness.measure(net, (x, y), test, method="exact")


@pytest.mark.parametrize("seed", SEEDS)
def test_sam_generalises_real(seed):
    verdict = sharpness_claims.sam_generalises(_sam(seed)[1])
    assert verdict, verdict


@pytest.mark.parametrize("seed", SEEDS)
def test_sam_generalises_fails_on_shuffled_labels(seed):
    verdict = sharpness_claims.sam_generalises(_sam(seed, shuffled=True)[1])
    assert not verdict and verdict["min_accuracy"] < 0.7, verdict


def test_flattest_yet_memorises_real():
    reports = [_sam(s)[1] for s in SEEDS]
    verdict = claims.sharpness.flattest_yet_memorises(_memoriser()[1], reports)
    assert verdict, verdict
    assert verdict["trace"] == pytest.approx(sharpness.trace_lower_bound(P.d), rel=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
def test_flattest_yet_memorises_holds_against_each_seed(seed):
    assert sharpness_claims.flattest_yet_memorises(_memoriser()[1], _sam(seed)[1])


def test_flattest_yet_memorises_fails_for_the_unscaled_construction():
    reports = [_sam(s)[1] for s in SEEDS]
    verdict = sharpness_claims.flattest_yet_memorises(_memoriser(scale=1.0)[1], reports)
    assert not verdict and verdict["trace"] == pytest.approx(26.0, rel=1e-4), verdict
    assert verdict["test_accuracy"] == 0.5                  # it fails on flatness alone


@pytest.mark.parametrize("seed", SEEDS)
def test_flattest_yet_memorises_fails_for_sams_own_solution(seed):
    others = [_sam(s)[1] for s in SEEDS if s != seed]
    verdict = sharpness_claims.flattest_yet_memorises(_sam(seed)[1], others,
                                                      max_train_loss=1.0)
    assert not verdict and verdict["test_accuracy"] > 0.9, verdict


def test_isolates_training_points_real_and_controls():
    (x, y), (xt, _) = _data()
    memo = _memoriser()[0]
    verdict = sharpness_claims.isolates_training_points(sharpness.firing_pattern(memo, x),
                                                        sharpness.firing_pattern(memo, xt))
    assert verdict, verdict
    no_bias = sharpness.memorising_interpolator(x, y, width=P.widths[0], bias=False)
    verdict = sharpness_claims.isolates_training_points(sharpness.firing_pattern(no_bias, x),
                                                        sharpness.firing_pattern(no_bias, xt))
    assert not verdict and verdict["unseen_points_hit"] > len(xt) // 2, verdict
    sam_net = _sam(0)[0]
    verdict = sharpness_claims.isolates_training_points(sharpness.firing_pattern(sam_net, x),
                                                        sharpness.firing_pattern(sam_net, xt))
    assert not verdict, verdict


def test_panel_drawn_on_the_rescaling_panel():
    (x, y), _ = _data()
    p = sharpness_widgets.rescaling_panel(x, y, sam_traces=[20.0, 25.0])
    assert claims.panel_drawn(p, n_axes=2)
    assert p.figure.axes[0].get_title().endswith(f"tr(H) = {sharpness.trace_lower_bound(P.d):.2f}")
    options = p.controls["scale"].options
    p.controls["scale"].value = options[0][1]
    assert p.n_draws == 2 and claims.panel_drawn(p, n_axes=2)
    alpha = options[0][1]
    assert p.figure.axes[0].get_title() == (
        f"α = {alpha:.2f}: tr(H) = {sharpness.interpolator_trace(alpha, P.d):.2f}")


# ------------------------------------------------ the flattest interpolators the search finds


@cache
def _search(seed: int, bias: bool, shuffled: bool = False, penalty: bool = True):
    (x, y), test = _data()
    if shuffled:
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(100 + seed))]
    torch.manual_seed(seed)
    net = models.MLP(P.d, list(P.widths), 1, bias=bias)
    sharpness.minimise_sharpness(net, x, y, weights=P.search_weights if penalty else (0.0, 0.0),
                                 steps=P.search_steps, fit_steps=P.search_fit_steps,
                                 lr=P.search_lr, device="cpu", seed=seed)
    return sharpness.measure(net, (x, y), test, n_samples=P.trace_samples)


def _bound(bias: bool) -> float:
    (_, y), _ = _data()
    return sharpness.trace_lower_bound(P.d, bias=False) if not bias else \
        sharpness.trace_lower_bound(P.d, labels=y)


@pytest.mark.parametrize("bias", [False, True])
def test_flattest_found_generalises_real(bias):
    found = [_search(s, bias) for s in SEEDS]
    others = [_sam(s)[1] for s in SEEDS] if bias else ()
    verdict = sharpness_claims.flattest_found_generalises(found, bound=_bound(bias),
                                                          others=others)
    assert verdict and verdict["n"] == 3, verdict
    assert verdict["trace_ratio"] >= 1 - 1e-3              # never below the closed-form bound


@pytest.mark.parametrize("seed", SEEDS)
def test_flattest_found_generalises_fails_on_shuffled_labels(seed):
    verdict = sharpness_claims.flattest_found_generalises(_search(seed, False, shuffled=True),
                                                          bound=_bound(False))
    assert not verdict and verdict["min_accuracy"] < 0.7, verdict


@pytest.mark.parametrize("seed", SEEDS)
def test_flattest_found_generalises_fails_without_the_penalty(seed):
    # plain Adam fits and generalises, but is far from flattest: the predicate fails on flatness
    verdict = sharpness_claims.flattest_found_generalises(_search(seed, False, penalty=False),
                                                          bound=_bound(False), max_train_loss=1.0)
    assert not verdict and verdict["trace_ratio"] > 5 and verdict["min_accuracy"] > 0.9, verdict


def test_flattest_found_generalises_fails_for_the_memoriser_and_a_sharper_search():
    memo = _memoriser()[1]                                  # at the zero-output-bias bound
    verdict = sharpness_claims.flattest_found_generalises(memo, bound=_bound(True))
    assert not verdict and verdict["min_accuracy"] == 0.5, verdict
    found = _search(0, True)
    verdict = sharpness_claims.flattest_found_generalises(found, bound=_bound(True),
                                                          others=[memo, found])
    assert not verdict, verdict                            # not flatter than itself
    with pytest.raises(ValueError, match="bound"):
        sharpness_claims.flattest_found_generalises(found, bound=0.0)


def test_a_memoriser_with_output_bias_shares_the_bound_the_biased_search_reaches():
    # output bias = majority label, one neuron per minority point (output weight -2 y_maj / α)
    # at the balanced scale α = √2 (d+1)^{1/4}: exactly the label-aware bound, at chance, so the
    # biased search's generalising nets are not the only flattest interpolators (scenario 3)
    (x, y), test = _data()
    maj = 1.0 if float((y > 0).double().mean()) > 0.5 else -1.0
    alpha = 2**0.5 * sharpness.optimal_scale(P.d)
    net = sharpness.memorising_interpolator(x, y, width=P.widths[0], scale=alpha)
    minority = y.reshape(-1) != maj
    with torch.no_grad():
        net.head.bias.fill_(maj)
        net.head.weight[0, :len(y)] = torch.where(minority, -2 * maj / alpha, 0.0)
        net.features[1].weight[:len(y)][~minority] = 0.0
        net.features[1].bias[:len(y)][~minority] = -1.0
    rep = sharpness.measure(net, (x, y), test, method="exact")
    assert rep.train_loss < 1e-10
    assert rep.trace == pytest.approx(_bound(True), rel=1e-6)
    found = [_search(s, True) for s in SEEDS]
    assert max(r.trace for r in found) < 1.1 * rep.trace     # the search ends near it ...
    verdict = sharpness_claims.flattest_found_generalises(rep, bound=_bound(True))
    assert not verdict and abs(verdict["min_accuracy"] - 0.5) < 0.05, verdict   # ... at chance
