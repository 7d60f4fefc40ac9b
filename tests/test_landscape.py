"""toolkit.landscape: directions, surfaces and cuts are checked against direct evaluation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from toolkit import _grid, landscape, models, train


def _data(n=60, d=6, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def _direct(model, loss_fn, x, y, origin, dirs, coefs):
    params = {n: t + sum(c * d[n] for c, d in zip(coefs, dirs)) for n, t in origin.items()}
    with torch.no_grad():
        out = functional_call(model, params, (x,))
        return float(loss_fn(out, y)), float((out.argmax(1) == y).float().mean())


class _ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 16, 3)

    def forward(self, x):
        x = x.view(-1, 1, 4, 4)
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class _Shared(nn.Module):
    """The first layer is applied twice: its output is not linear in the grid coordinates."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.lin(torch.tanh(self.lin(x)))))


# ------------------------------------------------------------------------------------ directions


def test_filter_normalisation_gives_each_filter_its_weights_norm_and_zero_biases():
    net = _ConvNet()
    d = landscape.random_direction(net, normalization="filter", seed=0)
    for name, p in net.named_parameters():
        if p.dim() <= 1:
            assert torch.all(d[name] == 0), f"{name} should be ignored (bias / norm layer)"
        else:
            rows_d = d[name].reshape(p.shape[0], -1).norm(dim=1)
            rows_w = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(rows_d, rows_w, rtol=1e-5, atol=1e-7)


def test_layer_and_none_normalisations_and_ignore_none():
    net = models.MLP(6, [8], 3, sigma_b=1.0)
    lay = landscape.random_direction(net, normalization="layer", ignore="none", seed=1)
    for name, p in net.named_parameters():
        assert float(lay[name].norm()) == pytest.approx(float(p.detach().norm()), rel=1e-5)
    raw = landscape.random_direction(net, normalization="none", ignore="none", seed=1)
    gen = torch.Generator().manual_seed(1)
    for name, p in net.named_parameters():  # plain N(0, 1) draws in parameter order
        torch.testing.assert_close(raw[name], torch.randn(p.shape, generator=gen,
                                                          dtype=torch.float64).float())


def test_same_seed_same_direction_and_different_seed_different_direction():
    net = models.MLP(6, [8], 3)
    a = landscape.random_direction(net, seed=3)
    b = landscape.random_direction(net, seed=3)
    c = landscape.random_direction(net, seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])


# ------------------------------------------------------------------------------------- surfaces


@pytest.mark.parametrize("mode", ["vmap", "loop", "fused"])
@pytest.mark.parametrize("batch_size", [None, 25])
def test_surface_equals_direct_evaluation_at_grid_points(mode, batch_size):
    torch.manual_seed(0)
    net = models.MLP(6, [10, 10], 3, activation="tanh")
    x, y = _data()
    d1 = landscape.random_direction(net, seed=1)
    d2 = landscape.random_direction(net, seed=2)
    surf = landscape.surface_2d(net, F.cross_entropy, (x, y), d1, d2, xrange=(-2, 1),
                                yrange=(-0.5, 1.5), steps=7, batch_size=batch_size, mode=mode,
                                chunk_size=5, progress=False)
    assert surf.loss.shape == (7, 7) and surf.accuracy.shape == (7, 7)
    origin = landscape.parameters_of(net)
    for i, j in [(0, 0), (3, 5), (6, 2), (6, 6)]:
        loss, acc = _direct(net, F.cross_entropy, x, y, origin, [d1, d2], [surf.x[j], surf.y[i]])
        assert surf.loss[i, j] == pytest.approx(loss, rel=1e-5)
        assert surf.accuracy[i, j] == pytest.approx(acc)


def test_surface_of_a_conv_bn_net_in_eval_mode_and_a_dataloader():
    torch.manual_seed(0)
    net = _ConvNet()
    x, y = _data(d=16)
    net.train()
    train.fit(net, (x, y), epochs=2, batch_size=20, progress=False)  # BN running stats move
    net.train()  # surface_2d must evaluate in eval mode and restore the mode
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    d1 = landscape.random_direction(net, seed=1)
    d2 = landscape.random_direction(net, seed=2)
    surf = landscape.surface_2d(net, "ce", loader, d1, d2, steps=5, progress=False)
    assert net.training
    net.eval()
    loss, _ = _direct(net, F.cross_entropy, x, y, landscape.parameters_of(net), [d1, d2],
                      [surf.x[1], surf.y[4]])
    assert surf.loss[4, 1] == pytest.approx(loss, rel=1e-5)


def test_first_layer_shortcut_is_used_only_when_valid_and_gives_the_same_numbers():
    torch.manual_seed(0)
    x, y = _data()
    mlp = models.MLP(6, [10], 3)
    assert _grid.first_linear_layer(mlp, x) == "features.1"
    shared = _Shared()
    assert _grid.first_linear_layer(shared, x) is None
    for net in (mlp, shared):
        d1 = landscape.random_direction(net, seed=1)
        d2 = landscape.random_direction(net, seed=2)
        surf = landscape.surface_2d(net, "ce", (x, y), d1, d2, steps=4, progress=False)
        loss, _ = _direct(net, F.cross_entropy, x, y, landscape.parameters_of(net), [d1, d2],
                          [surf.x[2], surf.y[1]])
        assert surf.loss[1, 2] == pytest.approx(loss, rel=1e-5)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(h + torch.relu(self.mid(h)))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.head = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.lin(x)
        return self.head(h if x.sum() > 0 else -h)  # data-dependent control flow: fx cannot


def test_linear_chain_is_recognised_only_for_linear_and_elementwise_chains():
    from torch.nn.utils import prune

    x, _ = _data()
    chains = {
        "mlp": models.MLP(6, [10, 10], 3),
        "sequential": nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.GELU(), nn.Dropout(0.2),
                                    nn.Linear(5, 3, bias=False), nn.Tanh()),
    }
    for name, net in chains.items():
        net.eval()
        chain = _grid.linear_chain(net, _grid.first_linear_layer(net, x))
        assert chain is not None, name
        assert all(isinstance(m, (nn.Linear, *_grid._ELEMENTWISE)) for _, m in chain)
    pruned = models.MLP(6, [10], 3)
    prune.l1_unstructured(pruned.head, "weight", amount=0.5)  # a forward pre-hook and weight_orig
    others = {
        "residual": _Residual(), "shared first layer": _Shared(), "untraceable": _Branchy(),
        "layernorm": nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3)),
        "conv": _ConvNet(), "pruned": pruned,
    }
    for name, net in others.items():
        net.eval()
        xin = _data(d=16)[0] if name == "conv" else x
        assert _grid.linear_chain(net, _grid.first_linear_layer(net, xin)) is None, name
        ev = _grid.GridEvaluator(net, F.cross_entropy, (xin, _data()[1]), None,
                                 landscape.parameters_of(net), [landscape.random_direction(net)],
                                 torch.zeros(3, 1), ("loss",))
        assert ev.mode != "fused", name
    with pytest.raises(ValueError, match=r"mode='fused' needs a model that is a chain.*'vmap'"):
        landscape.surface_2d(_Residual(), "ce", _data(), landscape.random_direction(_Residual()),
                             landscape.random_direction(_Residual()), steps=3, mode="fused",
                             progress=False)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_fused_mode_equals_vmap_and_loop_across_chunks_batches_and_cuts(loss):
    """Fused batched matmuls give the numbers of the per-point vmap and loop paths: chunks that
    do not divide the grid, several data batches, a Linear on (N, S, d) sequence inputs, an
    activation other than ReLU, a Linear without bias, accuracy, and 1-D cuts."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    cases = [(models.MLP(6, [10, 10], 3, activation="relu"), torch.randn(40, 6, generator=gen)),
             (nn.Sequential(nn.Linear(6, 7), nn.SiLU(), nn.Linear(7, 3, bias=False)),
              torch.randn(40, 5, 6, generator=gen))]  # outputs (N, S=5, 3)
    for net, x in cases:
        net.eval()
        out_shape = net(x).shape
        y = (torch.randint(0, 3, (40,), generator=gen) if loss == "ce" and len(out_shape) == 2
             else torch.randn(out_shape, generator=gen))
        lf = "ce" if y.dtype == torch.long else "mse"
        d1 = landscape.random_direction(net, seed=1)
        d2 = landscape.random_direction(net, seed=2)
        ref = landscape.surface_2d(net, lf, (x, y), d1, d2, steps=6, progress=False, mode="vmap")
        for mode, chunk, batch_size in [("fused", 7, None), ("fused", 1, 15), ("auto", None, 15),
                                        ("loop", None, None)]:
            got = landscape.surface_2d(net, lf, (x, y), d1, d2, steps=6, progress=False,
                                       mode=mode, chunk_size=chunk, batch_size=batch_size)
            for metric in ref.metrics:
                np.testing.assert_allclose(got.metrics[metric], ref.metrics[metric], rtol=2e-5,
                                           atol=1e-6, err_msg=f"{mode} {chunk} {metric}")
        cut = landscape.interpolate(net, lf, (x, y), direction=d1, progress=False, mode="fused")
        vcut = landscape.interpolate(net, lf, (x, y), direction=d1, progress=False, mode="vmap")
        np.testing.assert_allclose(cut.loss, vcut.loss, rtol=2e-5)
    mlp = cases[0][0]
    ev = _grid.GridEvaluator(mlp, F.cross_entropy, (cases[0][1], torch.zeros(40).long()), None,
                             landscape.parameters_of(mlp), [landscape.random_direction(mlp)],
                             torch.zeros(3, 1), ("loss",))
    assert ev.mode == "fused"  # auto picks it for a chain


def test_non_finite_losses_become_nan_and_are_not_raised():
    # the loss is finite near the origin and overflows far out along d1
    net = nn.Sequential(nn.Linear(2, 1))
    x, y = torch.ones(8, 2), torch.zeros(8, 1)
    loss_fn = lambda out, t: torch.exp(out).mean()  # noqa: E731
    d1 = {"0.weight": torch.full((1, 2), 50.0), "0.bias": torch.zeros(1)}
    d2 = {"0.weight": torch.zeros(1, 2), "0.bias": torch.ones(1)}
    surf = landscape.surface_2d(net, loss_fn, (x, y), d1, d2, xrange=(-1, 1), yrange=(-1, 1),
                                steps=5, progress=False)
    assert np.isnan(surf.loss[:, -1]).all()  # a = 1: exp(100 + ...) = inf
    assert np.isfinite(surf.loss[:, :3]).all()
    loss, _ = _direct(net, loss_fn, x, y, landscape.parameters_of(net), [d1, d2], [0.0, 0.5])
    assert surf.loss[3, 2] == pytest.approx(loss, rel=1e-5)


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_model_parameters_and_forward_are_untouched(mode):
    torch.manual_seed(0)
    net = models.MLP(6, [10], 3)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x, y = _data()
    d1 = landscape.random_direction(net, seed=1)
    d2 = landscape.random_direction(net, seed=2)
    out_before = net(x)
    landscape.surface_2d(net, "ce", (x, y), d1, d2, steps=5, progress=False, mode=mode)
    landscape.interpolate(net, "ce", (x, y), direction=d1, progress=False, mode=mode)

    calls = []

    def failing_loss(out, t):  # fails half-way through the grid, with a point loaded
        calls.append(1)
        if len(calls) == 12:
            raise KeyboardInterrupt
        return F.cross_entropy(out, t)

    with pytest.raises(KeyboardInterrupt):
        landscape.surface_2d(net, failing_loss, (x, y), d1, d2, steps=5, progress=False,
                             mode=mode, chunk_size=1)
    for n, p in net.named_parameters():
        assert torch.equal(p.detach(), before[n])
    assert all("forward" not in m.__dict__ for m in net.modules())  # no patched forward left
    assert torch.equal(net(x), out_before)


def test_loop_mode_handles_non_contiguous_parameters():
    """Loop mode writes each point into the module's parameters; a non-contiguous one (here a
    weight stored transposed, as channels_last stores conv weights) goes through a buffer."""
    torch.manual_seed(0)
    net = _ConvNet().eval()
    net.fc.weight = nn.Parameter(net.fc.weight.detach().T.contiguous().T)
    assert not net.fc.weight.is_contiguous()
    x, y = _data(d=16)
    d1 = landscape.random_direction(net, seed=1)
    d2 = landscape.random_direction(net, seed=2)
    origin = {n: p.detach().clone() for n, p in net.named_parameters()}
    loop = landscape.surface_2d(net, "ce", (x, y), d1, d2, steps=4, progress=False, mode="loop")
    vec = landscape.surface_2d(net, "ce", (x, y), d1, d2, steps=4, progress=False, mode="vmap")
    np.testing.assert_allclose(loop.loss, vec.loss, rtol=1e-5)
    loss, _ = _direct(net, F.cross_entropy, x, y, origin, [d1, d2], [loop.x[3], loop.y[0]])
    assert loop.loss[0, 3] == pytest.approx(loss, rel=1e-5)
    for n, p in net.named_parameters():
        assert torch.equal(p.detach(), origin[n])


@pytest.mark.parametrize("classes", [2, 10, 15, 40])  # 15: the largest the fast path takes
def test_fast_cross_entropy_equals_torch(classes):
    gen = torch.Generator().manual_seed(classes)
    logits = 5 * torch.randn(300, classes, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, classes, (300,), generator=gen)
    assert landscape._grid_loss("ce") is landscape._cross_entropy
    assert landscape._grid_loss(F.cross_entropy) is landscape._cross_entropy
    expected = F.cross_entropy(logits, labels)
    assert float(landscape._cross_entropy(logits, labels)) == pytest.approx(float(expected),
                                                                           rel=1e-12)
    labels[:7] = -100  # F.cross_entropy's ignore_index is honoured (falls back to torch)
    assert torch.equal(landscape._cross_entropy(logits, labels), F.cross_entropy(logits, labels))


def test_bad_arguments_raise_clear_errors():
    net = models.MLP(6, [10], 3)
    x, y = _data()
    d = landscape.random_direction(net, seed=1)
    bad_shape = {**d, "head.weight": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="head.weight"):
        landscape.surface_2d(net, "ce", (x, y), bad_shape, d, steps=3, progress=False)
    with pytest.raises(ValueError, match="not parameters"):
        landscape.surface_2d(net, "ce", (x, y), {"nope": torch.zeros(1)}, d, steps=3)
    with pytest.raises(ValueError, match="steps"):
        landscape.surface_2d(net, "ce", (x, y), d, d, steps=1)
    with pytest.raises(ValueError, match="xrange"):
        landscape.surface_2d(net, "ce", (x, y), d, d, xrange=(1, -1), steps=3)
    with pytest.raises(ValueError, match="normalization"):
        landscape.random_direction(net, normalization="row")
    with pytest.raises(ValueError, match="exactly one"):
        landscape.interpolate(net, "ce", (x, y))
    with pytest.raises(ValueError, match="flat direction"):
        landscape.surface_2d(net, "ce", (x, y), torch.zeros(5), d, steps=3)


# -------------------------------------------------------------------------- cuts and trajectories


def test_interpolation_endpoints_and_monotone_path_on_a_convex_problem():
    # least squares is convex: the loss along the segment init -> optimum never rises
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=gen), torch.randn(40, 1, generator=gen)
    start = nn.Linear(5, 1)
    xb = torch.cat([x, torch.ones(40, 1)], dim=1)
    sol = torch.linalg.lstsq(xb, y).solution.reshape(-1)
    target = {"weight": sol[:5].reshape(1, 5), "bias": sol[5:]}
    cut = landscape.interpolate(start, F.mse_loss, (x, y), target=target,
                                alphas=np.linspace(0, 1, 11), progress=False)
    assert cut.loss[0] == pytest.approx(float(F.mse_loss(start(x), y).detach()), rel=1e-5)
    assert cut.loss[-1] == pytest.approx(float(F.mse_loss(xb @ sol[:, None], y)), rel=1e-4)
    assert cut.max_increase(0, 1) == pytest.approx(0.0, abs=1e-6)
    assert cut.accuracy is None  # regression
    # a loss with a bump: max_increase reports its height
    bumpy = landscape.Interpolation(np.linspace(0, 1, 5), {"loss": np.array([3, 1, 2.5, 0.5, 0])})
    assert bumpy.max_increase() == pytest.approx(1.5)


def test_pca_directions_recover_a_planar_trajectory_exactly():
    torch.manual_seed(0)
    net = models.MLP(4, [5], 2)
    base = landscape.parameters_of(net)
    u = landscape.random_direction(net, normalization="none", ignore="none", seed=1)
    v = landscape.random_direction(net, normalization="none", ignore="none", seed=2)
    coefs = [(np.cos(t) * 3, np.sin(2 * t)) for t in np.linspace(0, 2, 9)]
    traj = [{n: base[n] + a * u[n] + b * v[n] for n in base} for a, b in coefs]
    plane = landscape.pca_directions(traj)
    assert plane.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-6)
    d1 = landscape.flatten(plane.d1)
    d2 = landscape.flatten(plane.d2)
    assert float(d1 @ d2) == pytest.approx(0.0, abs=1e-5)
    origin = landscape.flatten(plane.origin)
    for point, (a, b) in zip(traj, plane.coords):
        torch.testing.assert_close(origin + a * d1 + b * d2, landscape.flatten(point),
                                   rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(plane.coords[-1], 0.0, atol=1e-6)


def test_trajectory_recorder_in_fit_and_surface_on_its_pca_plane():
    torch.manual_seed(0)
    net = models.MLP(6, [8], 3)
    x, y = _data()
    rec = landscape.TrajectoryRecorder()
    train.fit(net, (x, y), epochs=5, lr=0.5, callbacks=[rec], progress=False)
    assert rec.epochs == [0, 1, 2, 3, 4, 5] and len(rec) == 6
    final = landscape.parameters_of(net)
    assert all(torch.equal(rec.trajectory[-1][n], final[n].cpu()) for n in final)
    plane = landscape.pca_directions(rec)
    surf = landscape.surface_2d(net, "ce", (x, y), plane.d1, plane.d2, xrange=(-1, 1),
                                yrange=(-1, 1), steps=3, center=plane.origin, progress=False)
    assert surf.loss[1, 1] == pytest.approx(train.evaluate(net, (x, y))["loss"], rel=1e-5)


def test_filter_normalised_surface_is_invariant_to_relu_rescaling():
    torch.manual_seed(0)
    net = models.MLP(6, [10], 3)
    big = landscape.balanced_rescale(net, 10.0)
    x, y = _data()
    torch.testing.assert_close(net(x), big(x), rtol=1e-4, atol=1e-5)
    surfaces = {}
    for norm in ("filter", "none"):
        for name, m in (("a", net), ("b", big)):
            d1 = landscape.random_direction(m, normalization=norm, seed=1)
            d2 = landscape.random_direction(m, normalization=norm, seed=2)
            surfaces[norm, name] = landscape.surface_2d(m, "ce", (x, y), d1, d2, steps=5,
                                                        metrics=("loss",), progress=False).loss
    np.testing.assert_allclose(surfaces["filter", "a"], surfaces["filter", "b"], rtol=1e-4)
    assert np.max(np.abs(surfaces["none", "a"] - surfaces["none", "b"])) > 0.1


def test_nonconvexity_is_zero_for_a_bowl_and_positive_for_a_saddle():
    xs = np.linspace(-1, 1, 11)
    gx, gy = np.meshgrid(xs, xs)
    bowl = landscape.Surface(xs, xs, {"loss": 1 + gx**2 + 2 * gy**2})
    saddle = landscape.Surface(xs, xs, {"loss": 3 + gx**2 - gy**2})
    assert landscape.nonconvexity(bowl) == 0.0
    assert landscape.nonconvexity(saddle) == 1.0
    lo, hi = landscape.curvature_map(bowl)
    np.testing.assert_allclose(lo, 2.0, atol=1e-8)  # exact second derivatives of a quadratic
    np.testing.assert_allclose(hi, 4.0, atol=1e-8)


# ------------------------------------------------------------------------------------- plotting


def test_log_levels_are_geometric_and_span_the_finite_values():
    from toolkit.plotting import landscape as lplot

    z = np.array([[0.5, 2.0], [np.nan, 50.0]])
    lv = lplot.log_levels(z, 5)
    assert lv[0] == pytest.approx(0.5) and lv[-1] == pytest.approx(50.0)
    np.testing.assert_allclose(lv[1:] / lv[:-1], 10 ** 0.5)
    with pytest.raises(ValueError, match="finite"):
        lplot.log_levels(np.full((2, 2), np.nan))


def test_contour_draws_the_trajectory_it_is_given():
    from toolkit.plotting import landscape as lplot

    xs = np.linspace(-1, 1, 7)
    gx, gy = np.meshgrid(xs, xs)
    surf = landscape.Surface(xs, xs, {"loss": 1 + gx**2 + gy**2})
    traj = np.array([[0.8, 0.6], [0.3, 0.2], [0.0, 0.0]])
    ax = lplot.contour(surf, trajectory=traj)
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "trajectory")
    np.testing.assert_allclose(np.c_[line.get_xdata(), line.get_ydata()], traj)


def test_relative_difference_of_surfaces():
    from toolkit.landscape import Surface, relative_difference
    grid = np.zeros(3)
    a = Surface(grid, grid, {"loss": np.array([[1.0, 2.0], [4.0, 3.0]])})
    b = Surface(grid, grid, {"loss": np.array([[1.0, 2.5], [4.0, 2.0]])})
    assert relative_difference(a, a) == 0.0
    assert relative_difference(a, b) == pytest.approx(1.0 / 4.0)  # max |a-b| = 1, max |a| = 4
    with pytest.raises(ValueError, match="different grids"):
        relative_difference(a, Surface(grid, grid, {"loss": np.zeros((3, 3))}))


def test_figures_say_when_values_are_drawn_at_a_floor():
    import matplotlib

    matplotlib.use("Agg")
    from types import SimpleNamespace

    from toolkit.plotting import hessian as hplot
    from toolkit.plotting import landscape as lplot

    grid = np.linspace(-1, 1, 50)
    density = SimpleNamespace(grid=grid, density=np.exp(-grid**2 / 0.001))
    ax = hplot.hessian_density(density)
    assert "1e-06" in ax.get_ylabel()
    ax = hplot.hessian_density(SimpleNamespace(grid=grid, density=np.ones_like(grid) / 2))
    assert ax.get_ylabel() == "density"
    ax = hplot.top_eigenvalue_gaps([3.0, 1.0, -0.5])
    assert "drawn at" in ax.get_ylabel()
    surf = landscape.Surface(x=grid[:5], y=grid[:5], metrics={"loss": np.zeros((5, 5))})
    ax = lplot.surface_3d(surf, log=True)
    assert "drawn at" in ax.get_zlabel()


# ------------------------------------------------- dict batches and batch-taking losses (issue 17)


class _KwMLP(nn.Module):
    """Hugging Face style: forward(input, labels=None) -> {"logits", "loss"?}."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = models.MLP(6, [8], 3)

    def forward(self, input, labels=None):
        out = {"logits": self.net(input)}
        if labels is not None:
            out["loss"] = F.cross_entropy(out["logits"], labels)
        return out


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_surface_on_dict_batches_equals_tuple_batches(mode):
    from toolkit import batches

    x, y = _data()
    kw = _KwMLP()
    plain = kw.net
    d1 = landscape.random_direction(plain, seed=1)
    d2 = landscape.random_direction(plain, seed=2)
    k1 = {f"net.{n}": t for n, t in d1.items()}
    k2 = {f"net.{n}": t for n, t in d2.items()}
    ref = landscape.surface_2d(plain, "ce", (x, y), d1, d2, steps=4, progress=False, mode=mode)

    @batches.takes_batch
    def from_batch(outputs, batch):
        return F.cross_entropy(outputs["logits"], batch["labels"])

    cols = {"input": x, "labels": y}
    ready = [{"input": x[:25], "labels": y[:25]}, {"input": x[25:], "labels": y[25:]}]
    for loss, data, bs in (("ce", cols, None), (from_batch, cols, 16), (None, ready, None)):
        got = landscape.surface_2d(kw, loss, data, k1, k2, steps=4, progress=False, mode=mode,
                                   batch_size=bs)
        np.testing.assert_allclose(got.loss, ref.loss, rtol=1e-5)
        np.testing.assert_allclose(got.accuracy, ref.accuracy)
    cut = landscape.interpolate(kw, from_batch, cols, direction=k1, alphas=[0.0, 0.5],
                                progress=False, mode=mode)
    ref_cut = landscape.interpolate(plain, "ce", (x, y), direction=d1, alphas=[0.0, 0.5],
                                    progress=False, mode=mode)
    np.testing.assert_allclose(cut.loss, ref_cut.loss, rtol=1e-5)
