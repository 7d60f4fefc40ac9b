"""toolkit.sharpness: the sparse parity, the hand-built interpolators and their tr(H), checked
against dense float64 Hessians, Hutch++ and closed forms on tiny cases."""

import math

import numpy as np
import pytest
import torch

from toolkit import hessian, models, sharpness


def _tiny(n=8, d=5, k=2, seed=0):
    return sharpness.sparse_parity(n, d, k, seed=seed)


def test_sparse_parity_is_distinct_unseen_and_labelled_by_the_parity():
    (x, y), (xt, yt) = sharpness.sparse_parity(40, 7, 3, seed=1)
    assert x.shape == (40, 7) and xt.shape == (2**7 - 40, 7) and y.shape == (40, 1)
    both = torch.cat([x, xt])
    assert len(torch.unique(both, dim=0)) == 2**7           # distinct, and the test set is the rest
    assert set(both.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(y, x[:, :3].prod(1, keepdim=True))
    assert torch.equal(yt, xt[:, :3].prod(1, keepdim=True))
    (x2, _), _ = sharpness.sparse_parity(40, 7, 3, seed=1)
    assert torch.equal(x, x2)                               # seeded


def test_sparse_parity_in_high_dimension_draws_distinct_points():
    (x, _), (xt, _) = sharpness.sparse_parity(50, 24, 2, seed=0, n_test=70)
    assert len(torch.unique(torch.cat([x, xt]), dim=0)) == 120


@pytest.mark.parametrize("kwargs, match", [({"n": 4, "d": 3, "k": 4}, "k must be at most d"),
                                           ({"n": 6, "d": 3, "k": 2, "n_test": 5}, "exceeds"),
                                           ({"n": 0, "d": 3, "k": 2}, "n must be")])
def test_sparse_parity_refuses_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sharpness.sparse_parity(**kwargs)


def test_memoriser_interpolates_fires_only_on_its_point_and_predicts_zero_elsewhere():
    (x, y), (xt, yt) = _tiny(n=12, d=6)
    net = sharpness.memorising_interpolator(x, y, width=20)
    assert isinstance(net, models.MLP) and net.widths == [20]
    with torch.no_grad():
        assert torch.allclose(net(x), y, atol=1e-6)
        assert torch.equal(net(xt), torch.zeros_like(yt))   # exactly 0 on every unseen point
    active = sharpness.firing_pattern(net, x)
    assert torch.equal(active[:, :12], torch.eye(12, dtype=torch.bool))
    assert not active[:, 12:].any()
    assert not sharpness.firing_pattern(net, xt).any()
    assert sharpness.sign_accuracy(net(xt).detach(), yt) == 0.5


def test_memoriser_refuses_what_it_cannot_build():
    (x, y), _ = _tiny()
    with pytest.raises(ValueError, match="width must be at least"):
        sharpness.memorising_interpolator(x, y, width=3)
    with pytest.raises(ValueError, match="repeated points"):
        sharpness.memorising_interpolator(torch.cat([x, x[:1]]), torch.cat([y, y[:1]]))
    with pytest.raises(ValueError, match="±1"):
        sharpness.memorising_interpolator(x * 0.5, y)


def test_rescaling_keeps_the_function_and_follows_the_closed_form_trace():
    (x, y), (xt, _) = _tiny(n=10, d=5)
    ref = sharpness.memorising_interpolator(x, y, scale=1.0)
    for scale in (0.3, 1.0, 2.5):
        net = sharpness.memorising_interpolator(x, y, scale=scale)
        with torch.no_grad():
            assert torch.allclose(net(torch.cat([x, xt])), ref(torch.cat([x, xt])), atol=1e-5)
        assert sharpness.gauss_newton_trace(net, (x, y)) == pytest.approx(
            sharpness.interpolator_trace(scale, 5), rel=1e-5)


def test_the_scale_that_minimises_the_trace_is_the_closed_form_one():
    (x, y), _ = _tiny(n=10, d=7)
    grid = np.geomspace(0.3, 6.0, 301)
    measured = [sharpness.gauss_newton_trace(
        sharpness.memorising_interpolator(x, y, scale=float(s)), (x, y)) for s in grid]
    best = grid[int(np.argmin(measured))]
    assert best == pytest.approx(sharpness.optimal_scale(7), rel=0.02)
    assert sharpness.optimal_scale(7) == pytest.approx(8 ** 0.25)
    assert min(measured) == pytest.approx(sharpness.trace_lower_bound(7), rel=1e-4)


def test_memoriser_trace_matches_a_dense_float64_hessian_and_hutchpp():
    (x, y), _ = _tiny(n=8, d=5)
    net = sharpness.memorising_interpolator(x, y)
    dense = float(hessian.hessian_matrix(net, "mse", (x, y)).trace())
    assert dense == pytest.approx(sharpness.trace_lower_bound(5), rel=1e-5)
    assert sharpness.gauss_newton_trace(net, (x, y)) == pytest.approx(dense, rel=1e-5)
    n_params = models.count_parameters(net)
    est = hessian.trace(net, "mse", (x, y), method="hutch++", n_samples=3 * n_params,
                        progress=False)
    assert est.trace == pytest.approx(dense, rel=1e-4)


def test_gauss_newton_trace_is_the_exact_trace_for_two_layer_relu_nets_off_interpolation():
    # the residual term of H has zero trace (every diagonal second derivative of f vanishes), so
    # the per-sample-gradient formula equals the dense trace at generic parameters too
    (x, y), _ = _tiny(n=16, d=6)
    torch.manual_seed(0)
    net = models.MLP(6, [9], 1).eval()
    with torch.no_grad():
        net.features[1].bias.normal_()
    with torch.no_grad():
        loss = float(((net(x) - y) ** 2).mean())
    assert loss > 0.1                                      # far from interpolation
    H = hessian.hessian_matrix(net, "mse", (x, y))
    parts = sharpness.gauss_newton_trace(net, (x, y), by_parameter=True)
    assert sum(parts.values()) == pytest.approx(float(H.trace()), rel=1e-5)
    gn = hessian.hessian_matrix(net, "mse", (x, y), part="gauss_newton")
    assert float(gn.trace()) == pytest.approx(float(H.trace()), rel=1e-5)
    # but not for a deeper net, whose residual term has a non-zero trace
    torch.manual_seed(0)
    deep = models.MLP(6, [5, 5], 1, activation="tanh").eval()
    Hd = hessian.hessian_matrix(deep, "mse", (x, y))
    assert abs(sharpness.gauss_newton_trace(deep, (x, y)) - float(Hd.trace())) > 1e-4


def test_lookup_net_generalises_at_the_same_trace():
    (x, y), (xt, yt) = _tiny(n=12, d=6, k=3)
    memo = sharpness.memorising_interpolator(x, y)
    look = sharpness.lookup_interpolator(6, 3, width=12)
    with torch.no_grad():
        assert torch.allclose(look(torch.cat([x, xt])), torch.cat([y, yt]), atol=1e-6)
    assert sharpness.firing_pattern(look, torch.cat([x, xt])).sum(1).eq(1).all()
    assert sharpness.gauss_newton_trace(look, (x, y)) == pytest.approx(
        sharpness.gauss_newton_trace(memo, (x, y)), rel=1e-5)
    with pytest.raises(ValueError, match="2\\^k"):
        sharpness.lookup_interpolator(6, 3, width=7)


def test_no_interpolator_beats_the_lower_bound():
    # random interpolators of the parity: the lookup net with its neurons split into copies of
    # random positive shares, so several active neurons per point (off the equality case)
    (x, y), _ = _tiny(n=12, d=6)
    net = sharpness.lookup_interpolator(6, 2, width=12)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w, b, a = (net.features[1].weight[:4].clone(), net.features[1].bias[:4].clone(),
                   net.head.weight[0, :4].clone())
        for copy in range(3):
            share = torch.rand(4, generator=g) * 2 + 0.1
            sl = slice(4 * copy, 4 * copy + 4)
            net.features[1].weight[sl] = w * share[:, None]
            net.features[1].bias[sl] = b * share
            net.head.weight[0, sl] = a / share / 3
        assert torch.allclose(net(x), y, atol=1e-5)
    assert sharpness.gauss_newton_trace(net, (x, y)) > sharpness.trace_lower_bound(6) + 1e-3


def test_lower_bound_with_labels_and_without_biases():
    y = torch.tensor([1.0, 1.0, 1.0, -1.0])
    assert sharpness.trace_lower_bound(3, labels=y) == pytest.approx(2 + 8 * 2 * 0.25)
    assert sharpness.trace_lower_bound(3, labels=torch.tensor([1.0, -1.0])) == pytest.approx(
        sharpness.trace_lower_bound(3))
    assert sharpness.trace_lower_bound(9, bias=False) == pytest.approx(12.0)


def test_bias_free_recipe_cannot_isolate_a_point():
    (x, y), (xt, _) = _tiny(n=12, d=6)
    net = sharpness.memorising_interpolator(x, y, bias=False)
    assert not any(n for n, _ in net.named_parameters() if n.endswith("bias"))
    cube = torch.cat([x, xt])
    counts = sharpness.firing_pattern(net, cube).sum(0)[:12]
    assert (counts > 1).all()                               # every neuron fires on many points
    with torch.no_grad():
        assert not torch.allclose(net(x), y, atol=1e-2)     # and the net does not interpolate


def test_sign_accuracy_counts_ties_as_half():
    out = torch.tensor([1.0, -2.0, 0.0, 0.5])
    assert sharpness.sign_accuracy(out, torch.tensor([1.0, 1.0, 1.0, 1.0])) == pytest.approx(
        (1 + 0 + 0.5 + 1) / 4)


def test_measure_reports_exact_and_hutchpp_alike():
    (x, y), test = _tiny(n=8, d=5)
    net = sharpness.memorising_interpolator(x, y)
    exact = sharpness.measure(net, (x, y), test, method="exact")
    est = sharpness.measure(net, (x, y), test, n_samples=120)
    assert exact.trace == pytest.approx(est.trace, rel=1e-4) and exact.trace_stderr == 0.0
    assert exact.train_loss < 1e-10 and exact.test_accuracy == 0.5
    assert exact.test_loss == pytest.approx(1.0)
    assert set(exact.as_dict()) == {"train_loss", "trace", "trace_stderr", "test_accuracy",
                                    "test_loss"}
    assert math.isfinite(est.trace_stderr)


# ------------------------------------------------------------------ the flatness search


def _brute_force_penalty(net, x):
    total = 0.0
    for xi in x:
        out = net(xi.unsqueeze(0)).reshape(-1)
        for k in range(len(out)):
            grads = torch.autograd.grad(out[k], list(net.parameters()), retain_graph=True)
            total += sum(float(g.double().pow(2).sum()) for g in grads)
    return 2 * total / (len(x) * len(out))


def test_flatness_penalty_is_the_dense_trace_at_an_interpolator_and_a_per_sample_loop():
    (x, y), _ = _tiny(n=8, d=5)
    net = sharpness.memorising_interpolator(x, y, width=10).double()
    x64, y64 = x.double(), y.double()
    pen = sharpness.flatness_penalty(net, x64)
    assert pen.requires_grad and pen.ndim == 0
    pen = pen.detach()
    dense = float(hessian.hessian_matrix(net, "mse", (x64, y64)).trace())
    assert float(pen) == pytest.approx(dense, rel=1e-10)
    assert float(pen) == pytest.approx(_brute_force_penalty(net, x64), rel=1e-10)
    est = hessian.trace(net, "mse", (x64, y64), method="hutch++",
                        n_samples=3 * models.count_parameters(net), progress=False)
    assert est.trace == pytest.approx(float(pen), rel=1e-6)


def test_flatness_penalty_off_interpolation_and_for_several_outputs():
    (x, y), _ = _tiny(n=12, d=6)
    torch.manual_seed(0)
    net = models.MLP(6, [7], 1).double()
    x64 = x.double()
    pen = float(sharpness.flatness_penalty(net, x64).detach())
    assert pen == pytest.approx(float(hessian.hessian_matrix(net, "mse", (x64, y.double()))
                                      .trace()), rel=1e-8)   # residual part has zero trace
    wide = models.MLP(6, [7], 3).double()
    assert float(sharpness.flatness_penalty(wide, x64).detach()) == pytest.approx(
        _brute_force_penalty(wide, x64), rel=1e-10)
    assert float(sharpness.flatness_penalty(wide, x64).detach()) == pytest.approx(
        sharpness.gauss_newton_trace(wide, (x64, y.double())), rel=1e-10)


def test_flatness_penalty_gradient_matches_finite_differences():
    # double backward through the per-sample gradients: d(penalty)/dθ against central differences
    (x, _), _ = _tiny(n=10, d=5)
    torch.manual_seed(1)
    net = models.MLP(5, [6], 1).double()
    x64 = x.double()
    g = torch.autograd.grad(sharpness.flatness_penalty(net, x64), list(net.parameters()),
                            allow_unused=True)              # the output bias's share is constant
    g = [torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, net.parameters())]
    gen = torch.Generator().manual_seed(0)
    direction = [torch.randn(p.shape, generator=gen, dtype=torch.float64)
                 for p in net.parameters()]
    analytic = sum(float((gi * v).sum()) for gi, v in zip(g, direction))
    eps, values = 1e-6, []
    for sign in (1, -1):
        with torch.no_grad():
            for p, v in zip(net.parameters(), direction):
                p.add_(sign * eps * v)
        values.append(float(sharpness.flatness_penalty(net, x64).detach()))
        with torch.no_grad():
            for p, v in zip(net.parameters(), direction):
                p.sub_(sign * eps * v)
    assert analytic == pytest.approx((values[0] - values[1]) / (2 * eps), rel=1e-5)
    assert abs(analytic) > 1e-3


def test_flatness_penalty_refuses_a_frozen_model():
    net = models.MLP(3, [4], 1)
    for p in net.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        sharpness.flatness_penalty(net, torch.ones(2, 3))


def test_minimise_sharpness_interpolates_far_flatter_than_plain_training():
    (x, y), _ = _tiny(n=24, d=6)
    traces = {}
    for name, weights in (("search", (0.1, 1e-3)), ("plain", (0.0, 0.0))):
        torch.manual_seed(0)
        net = models.MLP(6, [24], 1, bias=False)
        hist = sharpness.minimise_sharpness(net, x, y, weights=weights, steps=300, fit_steps=50,
                                            device="cpu")
        assert list(hist.columns) == ["step", "phase", "weight", "train_loss", "penalty"]
        assert hist["phase"].iloc[0] == "fit" and hist["phase"].iloc[-1] == "final"
        final = hist.iloc[-1]
        assert final["train_loss"] < 1e-2
        assert final["penalty"] == pytest.approx(sharpness.gauss_newton_trace(net, (x, y)),
                                                 rel=1e-4)
        traces[name] = final["penalty"]
    assert traces["search"] >= sharpness.trace_lower_bound(6, bias=False) - 1e-2
    assert traces["search"] < 0.5 * traces["plain"]
    weights = hist["weight"][hist["phase"] == "flatten"].to_numpy()
    assert np.all(np.diff(weights) <= 0)


@pytest.mark.parametrize("kwargs, match", [({"weights": (1e-3, 0.1)}, "decreasing"),
                                           ({"weights": (0.1, 0.0)}, "decreasing"),
                                           ({"weights": (0.1,)}, "start, end"),
                                           ({"optimizer": "lbfgs"}, "optimizer"),
                                           ({"steps": 0}, "steps")])
def test_minimise_sharpness_refuses_bad_arguments(kwargs, match):
    (x, y), _ = _tiny()
    with pytest.raises(ValueError, match=match):
        sharpness.minimise_sharpness(models.MLP(5, [4], 1), x, y, device="cpu", **kwargs)


def test_bias_free_parity_net_computes_the_parity_at_the_bias_free_bound():
    (x, y), (xt, yt) = _tiny(n=16, d=6)
    net = sharpness.bias_free_parity_interpolator(6, width=9)
    assert not any(n.endswith("bias") for n, _ in net.named_parameters())
    with torch.no_grad():
        assert torch.allclose(net(torch.cat([x, xt])), torch.cat([y, yt]), atol=1e-6)
    assert sharpness.gauss_newton_trace(net, (x, y)) == pytest.approx(
        sharpness.trace_lower_bound(6, bias=False), rel=1e-6)
    dense = float(hessian.hessian_matrix(net, "mse", (x, y)).trace())
    assert dense == pytest.approx(4 * math.sqrt(6), rel=1e-6)
    # off the balanced scale it is sharper; its other pair of neurons sits at the kink
    assert sharpness.gauss_newton_trace(sharpness.bias_free_parity_interpolator(6, scale=1.0),
                                        (x, y)) > 4 * math.sqrt(6) + 0.1
    with torch.no_grad():
        pre = net.features[1](x)[:, :4]
    assert ((pre == 0).sum(1) == 2).all() and ((pre > 0).sum(1) == 1).all()
    with pytest.raises(ValueError, match="width must be at least 4"):
        sharpness.bias_free_parity_interpolator(6, width=3)


def test_search_paths_and_the_scatter_draw_every_run():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from toolkit.plotting import sharpness as plots

    (x, y), _ = _tiny(n=12, d=5)
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        runs.append(sharpness.minimise_sharpness(models.MLP(5, [12], 1), x, y, steps=20,
                                                 fit_steps=5, device="cpu", record_every=5))
    ax = plots.search_paths({"with biases": runs}, bounds={"with biases": 7.0})
    assert len(ax.lines) == 2 * 2 + 1                       # tr(H) and loss per run, the bound
    assert np.allclose(ax.lines[0].get_ydata(), runs[0]["penalty"])
    table = pd.DataFrame([{"method": "flattest found", "trace": 10.0, "test_accuracy": 1.0},
                          {"method": "GD", "trace": 20.0, "test_accuracy": 0.9}])
    ax = plots.trace_vs_accuracy(table)
    colours = [tuple(c.get_facecolor()[0]) for c in ax.collections]
    assert colours[0] != colours[1] and len(ax.collections) == 2
