"""toolkit.landscape_convergence: nested-subset surfaces (Kiselev & Grabovoy 2024, arXiv
2409.11995) checked against direct evaluation, the paper's identity and bounds on tiny nets."""

import numpy as np
import pytest
import torch

from toolkit import hessian, landscape, models
from toolkit import landscape_convergence as lc
from toolkit.utils import loglog_slope


def _tiny(seed=0, n=40, d=5, widths=(6,), k=3, bias=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    torch.manual_seed(seed)
    net = models.MLP(d, list(widths), k, bias=bias)
    return net, x, y


def _plane(net, seed=0, steps=5, span=0.5, x=None, y=None):
    d1 = landscape.random_direction(net, seed=seed)
    d2 = landscape.random_direction(net, seed=seed + 1)
    surf = lc.per_sample_surface(net, (x, y), d1, d2, xrange=(-span, span),
                                 yrange=(-span, span), steps=steps)
    return surf, d1, d2


def test_running_means_match_surface_2d_on_the_first_k_objects():
    net, x, y = _tiny()
    surf, d1, d2 = _plane(net, x=x, y=y)
    order = np.random.default_rng(0).permutation(len(x))
    means = lc.running_means(surf, order)
    for k in (1, 7, 40):
        sub = torch.as_tensor(order[:k])
        direct = landscape.surface_2d(net, "ce", (x[sub], y[sub]), d1, d2, xrange=(-0.5, 0.5),
                                      yrange=(-0.5, 0.5), steps=5, metrics=("loss",),
                                      progress=False)
        np.testing.assert_allclose(means[k - 1], direct.loss, rtol=1e-5, atol=1e-6)


def test_grid_layout_and_distance_match_the_plane():
    net, x, y = _tiny()
    surf, d1, d2 = _plane(net, x=x, y=y)
    r, c = 1, 4   # y index 1, x index 4
    theta = {n: p + surf.x[c] * d1[n] + surf.y[r] * d2[n]
             for n, p in landscape.parameters_of(net).items()}
    moved = landscape.with_parameters(net, theta)
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(moved(x), y, reduction="none").double()
    np.testing.assert_allclose(surf.losses[:, r, c], direct.numpy(), rtol=1e-5)
    delta = landscape.flatten({n: theta[n] - p for n, p in landscape.parameters_of(net).items()})
    assert surf.distance[r, c] == pytest.approx(float(delta.double().norm()), rel=1e-5)
    assert surf.radius == pytest.approx(surf.distance.max())
    np.testing.assert_allclose(surf.center, surf.losses[:, 2, 2], rtol=1e-6)


def test_equation_1_is_exact():
    rng = np.random.default_rng(1)
    losses = rng.exponential(size=(30, 4, 4))
    means = lc.running_means(losses)
    surf = lc.PlaneLosses(x=np.linspace(-1, 1, 4), y=np.linspace(-1, 1, 4), losses=losses,
                          center=losses[:, 0, 0], distance=np.ones((4, 4)))
    for k in (1, 5, 29):
        np.testing.assert_allclose(np.abs(means[k] - means[k - 1]), lc.difference_map(surf, k),
                                   rtol=1e-12)
        np.testing.assert_allclose(means[k] - means[k - 1],
                                   (losses[k] - means[k - 1]) / (k + 1), rtol=1e-12)
    diffs = lc.consecutive_differences(surf, shuffle=False)
    np.testing.assert_allclose(diffs.mean, np.abs(np.diff(means, axis=0)).mean(axis=(1, 2)))
    np.testing.assert_allclose(diffs.max, np.abs(np.diff(means, axis=0)).max(axis=(1, 2)))


def test_differences_decay_like_one_over_k():
    rng = np.random.default_rng(0)
    losses = rng.exponential(size=(2000, 3, 3))
    surf = lc.PlaneLosses(x=np.arange(3.0) - 1, y=np.arange(3.0) - 1, losses=losses,
                          center=losses[:, 1, 1], distance=np.ones((3, 3)))
    diffs = lc.consecutive_differences(surf, orders=40, seed=0)
    ks = np.unique(np.geomspace(10, 1999, 30).astype(int))
    assert loglog_slope(ks, diffs.mean[ks - 1]) == pytest.approx(-1.0, abs=0.1)


def test_theorem_1_closed_form_and_the_one_layer_case():
    for depth, mw, mx in [(3, 1.7, 2.0), (5, 0.6, 8.0)]:
        closed = (depth * np.sqrt(2) * mx**2 * mw ** (2 * depth)
                  + np.sqrt(2) * mw**2 * (mw ** (2 * depth) - 1) / (mw**2 - 1))
        assert lc.hessian_norm_bound(depth, mw, mx) == pytest.approx(closed, rel=1e-12)
    assert lc.hessian_norm_bound(1, 1.3, 2.0) == pytest.approx(np.sqrt(2) * 1.3**2 * (4 + 1))
    assert lc.hessian_norm_bound(4, 1.0, 2.0) == pytest.approx(4 * np.sqrt(2) * 4 + 4 * np.sqrt(2))


def test_gauss_newton_norms_match_dense_and_obey_theorem_1():
    net, x, y = _tiny(widths=(6, 5), n=12)
    norms = lc.per_sample_gauss_newton_norms(net, (x, y), chunk=5)
    for i in (0, 7, 11):
        H = hessian.hessian_matrix(net, "ce", (x[[i]], y[[i]]), part="gauss_newton")
        assert norms[i] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-8)
    bound = lc.theorem1_bound(net, x)
    assert bound.depth == 3 and np.all(norms <= bound.value)
    exact = [float(torch.linalg.matrix_norm(m.weight.detach().double(), ord=2))
             for m in net.modules() if isinstance(m, torch.nn.Linear)]
    np.testing.assert_allclose(bound.weight_norms, exact)
    assert bound.max_input_norm == pytest.approx(float(x.norm(dim=1).max()))
    assert next(net.parameters()).dtype == torch.float32  # the model itself is untouched


def test_lemma_2_bound_holds_on_a_tiny_net():
    net, x, y = _tiny(n=60, widths=(8, 8))
    surf, _, _ = _plane(net, x=x, y=y, span=1.0, steps=7)
    diffs = lc.consecutive_differences(surf, orders=10)
    bound = lc.lemma2_bound(net, (x, y), surf)
    assert bound.max_loss == pytest.approx(float(surf.center.max()))
    assert np.all(bound.at(diffs.k) >= diffs.max)
    np.testing.assert_allclose(bound.at([1, 9]), [2 / 2 * (bound.max_loss + bound.hessian.value
                                                            * bound.radius**2),
                                                  2 / 10 * (bound.max_loss + bound.hessian.value
                                                            * bound.radius**2)])


def test_subset_top_eigenvalues_match_dense_hessians():
    net, x, y = _tiny(n=30)
    order = np.random.default_rng(3).permutation(30)
    lam = lc.subset_top_eigenvalues(net, (x, y), [4, 30], order=order, tol=1e-8, max_iter=300)
    for k, value in zip((4, 30), lam):
        sub = torch.as_tensor(order[:k])
        H = hessian.hessian_matrix(net, "ce", (x[sub], y[sub]))
        assert value == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-4)


def test_edge_cases_raise_clear_errors():
    net, x, y = _tiny()
    surf, d1, d2 = _plane(net, x=x, y=y)
    with pytest.raises(ValueError, match="k must hold integers >= 1"):
        lc.difference_bound(0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        lc.difference_map(surf, 0)
    with pytest.raises(ValueError, match="choose k <= 39"):
        lc.difference_map(surf, 40)
    with pytest.raises(ValueError, match="empty"):
        lc.running_means(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="empty"):
        lc.per_sample_surface(net, (x[:0], y[:0]), d1, d2)
    one = lc.PlaneLosses(x=surf.x, y=surf.y, losses=surf.losses[:1], center=surf.center[:1],
                         distance=surf.distance)
    with pytest.raises(ValueError, match="at least 2 objects"):
        lc.consecutive_differences(one)
    with pytest.raises(ValueError, match="only 40 objects"):
        lc.subset_top_eigenvalues(net, (x, y), [41])
    with pytest.raises(ValueError, match="ks is empty"):
        lc.subset_top_eigenvalues(net, (x, y), [])
    with pytest.raises(TypeError, match="integer class indices"):
        lc.per_sample_surface(net, (x, y.float()), d1, d2)
    biased, _, _ = _tiny(bias=True)
    with pytest.raises(ValueError, match="bias=False"):
        lc.theorem1_bound(biased, x)
    ntk = models.MLP(5, [6], 3, bias=False, parameterization="ntk")
    with pytest.raises(ValueError, match="parameterization='standard'"):
        lc.theorem1_bound(ntk, x)
    tanh = models.MLP(5, [6], 3, bias=False, activation="tanh")
    with pytest.raises(ValueError, match="ReLU"):
        lc.theorem1_bound(tanh, x)
