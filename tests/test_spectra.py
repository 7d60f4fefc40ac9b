"""Tests for toolkit.spectra: ESDs, the power-law fit, Marchenko–Pastur, layer reports."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from toolkit import spectra
from toolkit.spectra import esd, layer_report, powerlaw_alpha, shuffle_weights

# ----------------------------------------------------------------------------------------- esd


def test_esd_of_diagonal_matrix_is_squared_diagonal():
    d = torch.tensor([3.0, -2.0, 0.5, 1.0])
    ev = esd(torch.diag(d))
    assert torch.allclose(ev, torch.sort(d.double().square()).values)


def test_esd_of_orthogonal_matrix_is_all_ones():
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64))
    assert torch.allclose(esd(q), torch.ones(20, dtype=torch.float64), atol=1e-12)


def test_esd_of_rank_one_matrix_has_one_nonzero_eigenvalue():
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(7, generator=g, dtype=torch.float64), torch.randn(5, generator=g,
                                                                         dtype=torch.float64)
    ev = esd(torch.outer(u, v))
    assert ev.shape == (5,)
    assert math.isclose(float(ev[-1]), float(u.square().sum() * v.square().sum()), rel_tol=1e-12)
    assert float(ev[:-1].abs().max()) < 1e-20 * float(ev[-1]) + 1e-24


def test_esd_matches_eigenvalues_of_gram_matrix_and_svdvals():
    w = torch.randn(30, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gram = torch.linalg.eigvalsh(w.T @ w)  # an independent route: eigenvalues of W^T W
    assert torch.allclose(esd(w), gram, rtol=1e-9, atol=1e-9)
    assert torch.allclose(esd(w), torch.sort(torch.linalg.svdvals(w) ** 2).values)


def test_esd_conv_conventions():
    conv = nn.Conv2d(4, 6, 3)
    w = conv.weight.detach().double()
    slices = esd(conv)  # WeightWatcher: one (out, in) matrix per kernel position, pooled
    expected = torch.cat([torch.linalg.svdvals(w[:, :, i, j]) ** 2
                          for i in range(3) for j in range(3)])
    assert slices.shape == (9 * 4,)
    assert torch.allclose(slices, torch.sort(expected).values)
    reshaped = esd(conv, conv="reshape")
    assert reshaped.shape == (6,)
    assert torch.allclose(reshaped, torch.sort(torch.linalg.svdvals(w.reshape(6, -1)) ** 2).values)
    # both conventions keep the Frobenius norm: trace(W^T W) = sum of eigenvalues
    assert math.isclose(float(slices.sum()), float(w.square().sum()), rel_tol=1e-10)
    assert math.isclose(float(reshaped.sum()), float(w.square().sum()), rel_tol=1e-10)


def test_esd_uses_effective_weight_of_pruned_and_ntk_layers():
    from torch.nn.utils import prune

    from toolkit.models import NTKLinear

    layer = nn.Linear(5, 4)
    mask = (torch.arange(20).reshape(4, 5) % 3 != 0).float()
    prune.custom_from_mask(layer, "weight", mask)
    w = (layer.weight_orig * mask).detach()
    assert torch.allclose(esd(layer), esd(w))
    ntk = NTKLinear(8, 3)
    assert torch.allclose(esd(ntk), esd(ntk.weight.detach() * ntk.weight_scale))


def test_esd_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        esd(torch.randn(5))
    with pytest.raises(ValueError, match="conv must be one of"):
        esd(torch.randn(3, 3, 2, 2), conv="im2col")
    with pytest.raises(TypeError):
        esd([[1.0, 2.0]])


# --------------------------------------------------------------------------------- power laws


def _pareto(alpha, n, xmin=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return xmin * (1 - rng.random(n)) ** (-1.0 / (alpha - 1.0))  # density ∝ x^-alpha, x >= xmin


def _brute_force_fit(x):
    """Independent loop over candidates, written from the textbook definitions."""
    x = np.sort(x[x > 0])
    cands = np.unique(x)[:-2]
    best = None
    for xmin in cands:
        tail = x[x >= xmin]
        m = len(tail)
        alpha = 1 + m / np.sum(np.log(tail / xmin))
        values = np.unique(tail)
        below = np.searchsorted(tail, values, side="left")  # tail samples strictly below
        ks = np.max(np.abs((1 - (values / xmin) ** (1 - alpha)) - below / m))
        if best is None or ks < best[2]:
            best = (alpha, xmin, ks)
    return best


@pytest.mark.parametrize("alpha", [2.0, 2.5, 3.5])
def test_powerlaw_alpha_recovers_pareto_exponent(alpha):
    x = _pareto(alpha, 5000, xmin=1.0, seed=int(alpha * 10))
    fit = powerlaw_alpha(x)
    assert abs(fit.alpha - alpha) < 0.1
    assert fit.n_tail > 500
    assert fit.valid


def test_powerlaw_alpha_fixed_xmin_is_the_closed_form_mle():
    x = _pareto(2.5, 2000, seed=3) * 0.7
    xmin = float(np.quantile(x, 0.3))
    tail = x[x >= xmin]
    expected = 1 + len(tail) / np.sum(np.log(tail / xmin))
    fit = powerlaw_alpha(x, xmin=xmin)
    assert math.isclose(fit.alpha, expected, rel_tol=1e-12)
    assert fit.n_tail == len(tail)
    assert math.isclose(fit.sigma, (expected - 1) / math.sqrt(len(tail)), rel_tol=1e-12)


@pytest.mark.parametrize("n", [60, 700])  # 700 distinct values exercises the screened search
def test_powerlaw_alpha_matches_brute_force_search(n):
    rng = np.random.default_rng(n)
    w = rng.standard_t(3, size=(n, n // 2 + 3))
    ev = np.linalg.svd(w, compute_uv=False) ** 2
    ev = np.concatenate([ev, _pareto(2.2, n, xmin=float(np.median(ev)), seed=n)])
    alpha, xmin, ks = _brute_force_fit(ev)
    for keep in (False, True):
        fit = powerlaw_alpha(ev, keep_candidates=keep)
        assert fit.xmin == xmin
        assert math.isclose(fit.alpha, alpha, rel_tol=1e-9)
        assert math.isclose(fit.ks, ks, rel_tol=1e-9, abs_tol=1e-12)
    full = powerlaw_alpha(ev, keep_candidates=True).candidates
    assert len(full) == len(np.unique(ev)) - 2
    assert math.isclose(full["ks"].min(), ks, rel_tol=1e-9)


def test_powerlaw_alpha_handles_ties_like_empirical_cdf():
    x = np.repeat(_pareto(2.5, 300, seed=5), 2)  # every value twice
    alpha, xmin, ks = _brute_force_fit(x)
    fit = powerlaw_alpha(x)
    assert fit.xmin == xmin and math.isclose(fit.alpha, alpha, rel_tol=1e-9)


def test_powerlaw_alpha_agrees_with_powerlaw_package():
    powerlaw = pytest.importorskip("powerlaw")
    import warnings

    rng = np.random.default_rng(7)
    mats = [rng.standard_t(3, size=(150, 120)),
            rng.pareto(1.5, size=(160, 100)) * rng.choice([-1, 1], size=(160, 100)),
            rng.standard_normal((120, 120))]
    for w in mats:
        ev = np.linalg.svd(w, compute_uv=False) ** 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = powerlaw.Fit(ev, parameter_ranges={"alpha": [1, 50]}, verbose=0)
            ref_default = powerlaw.Fit(ev, verbose=0)  # 2.x default range: alpha in [0, 3]
        ours = powerlaw_alpha(ev)
        assert ours.xmin == ref.xmin
        assert abs(ours.alpha - ref.alpha) < 1e-6
        assert abs(ours.ks - ref.D) < 1e-6
        ours_default = powerlaw_alpha(ev, alpha_range=(0, 3))
        assert ours_default.xmin == ref_default.xmin
        assert abs(ours_default.alpha - ref_default.alpha) < 1e-6


def test_default_range_caveat_skips_thin_tails():
    # a Gaussian matrix's ESD has no heavy tail: the best fits have alpha > 3, which the
    # [0, 3] range forbids, so the restricted search must settle elsewhere, on a worse KS distance
    ev = esd(torch.randn(200, 200, generator=torch.Generator().manual_seed(0)))
    wide, narrow = powerlaw_alpha(ev), powerlaw_alpha(ev, alpha_range=(0, 3))
    assert wide.alpha > 3
    assert narrow.alpha <= 3
    assert narrow.ks >= wide.ks


def test_powerlaw_alpha_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 4 distinct"):
        powerlaw_alpha([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="1-D"):
        powerlaw_alpha(np.ones((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        powerlaw_alpha([1.0, np.nan, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="xmin"):
        powerlaw_alpha(_pareto(2.5, 100), xmin=-1.0)
    with pytest.raises(ValueError, match="alpha_range"):
        powerlaw_alpha(_pareto(2.5, 100), alpha_range=(3, 1))


# ------------------------------------------------------------------------ Marchenko–Pastur


def test_marchenko_pastur_edges_and_density_match_a_random_matrix():
    n_rows, n_cols, sigma = 800, 400, 0.5
    w = sigma * torch.randn(n_rows, n_cols, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64)
    ev = esd(w).numpy()
    lo, hi = spectra.marchenko_pastur_edges(n_rows, n_cols, sigma**2)
    assert abs(ev.max() / hi - 1) < 0.05
    assert abs(ev.min() / lo - 1) < 0.15
    grid = np.linspace(lo, hi, 20001)
    dens = spectra.marchenko_pastur_density(grid, n_rows, n_cols, sigma**2)
    cdf = np.concatenate([[0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(grid))])
    assert abs(cdf[-1] - 1) < 1e-3  # a probability density
    empirical = np.searchsorted(np.sort(ev), grid, side="right") / len(ev)
    assert np.max(np.abs(empirical - cdf)) < 0.03  # Kolmogorov distance to the MP law


def test_marchenko_pastur_density_is_symmetric_in_shape():
    x = np.linspace(1, 2000, 50)
    assert np.allclose(spectra.marchenko_pastur_density(x, 300, 100, 1.0),
                       spectra.marchenko_pastur_density(x, 100, 300, 1.0))


# ------------------------------------------------------------------------------------ reports


class _TwoLayer(nn.Module):
    def __init__(self, w1, w2):
        super().__init__()
        self.fc1 = nn.Linear(w1.shape[1], w1.shape[0], bias=False)
        self.fc2 = nn.Linear(w2.shape[1], w2.shape[0], bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(w1)
            self.fc2.weight.copy_(w2)


def test_layer_report_columns_and_identities():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(200, 100, generator=g) / 10
    spike = 3.0 * torch.outer(torch.randn(200, generator=g), torch.randn(100, generator=g)) / 100
    q, _ = torch.linalg.qr(torch.randn(50, 50, generator=g))
    model = _TwoLayer(noise + spike, q)
    report = layer_report(model)
    assert list(report["name"]) == ["fc1", "fc2"]
    for col in ("alpha", "xmin", "ks", "spectral_norm", "stable_rank", "frobenius",
                "effective_rank", "mp_edge", "n_spikes", "n_spikes_random", "alpha_random"):
        assert col in report
    w1 = (noise + spike).double()
    row = report.iloc[0]
    assert math.isclose(row["spectral_norm"], float(torch.linalg.matrix_norm(w1, 2)) ** 2,
                        rel_tol=1e-9)
    assert math.isclose(row["frobenius"], float(w1.square().sum()), rel_tol=1e-9)
    assert 1 <= row["stable_rank"] <= 100
    assert row["n_spikes"] >= 1 and row["n_spikes_random"] == 0  # planted spike; shuffled: none
    orth = report.iloc[1]  # equal singular values: every rank measure is the full dimension
    assert math.isclose(orth["effective_rank"], 50, rel_tol=1e-6)
    assert math.isclose(orth["stable_rank"], 50, rel_tol=1e-6)


def test_random_layers_have_no_spikes_and_small_heads_get_nan():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 400), nn.ReLU(), nn.Linear(400, 3))
    report = layer_report(model, randomize=False)
    assert report.loc[0, "n_spikes"] <= 1  # i.i.d. init: the spectrum stays in the MP bulk
    assert math.isnan(report.loc[1, "alpha"])  # 3 eigenvalues: no tail fit
    assert "alpha_random" not in report


def test_layer_report_rejects_models_without_layers():
    with pytest.raises(ValueError, match="no nn.Linear"):
        layer_report(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="conv must be one of"):
        layer_report(nn.Linear(3, 3), conv="bad")


def test_shuffle_weights_permutes_entries_per_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Conv1d(8, 4, 3))
    before = [p.detach().clone() for p in model.parameters()]
    shuffled = shuffle_weights(model, seed=3)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)  # input untouched
    for layer in (0, 2):
        w, ws = model[layer].weight.detach(), shuffled[layer].weight.detach()
        assert torch.equal(torch.sort(w.flatten()).values, torch.sort(ws.flatten()).values)
        assert not torch.equal(w, ws)
    assert torch.equal(model[0].bias, shuffled[0].bias)
    again = shuffle_weights(model, seed=3)
    assert torch.equal(again[0].weight, shuffled[0].weight)


# ------------------------------------------------------------------------------------ figures


def test_esd_plot_draws_the_fitted_power_law_with_slope_minus_alpha():
    from toolkit.plotting import spectra as spectra_plots

    x = _pareto(2.5, 3000, seed=11)
    fit = powerlaw_alpha(x)
    ax = spectra_plots.esd_plot(x, fit=fit, mp=(300, 100, 1.0), label="pareto")
    tail = [ln for ln in ax.get_lines() if "tail fit" in str(ln.get_label())][0]
    lx, ly = np.log(tail.get_xdata()), np.log(tail.get_ydata())
    assert math.isclose((ly[-1] - ly[0]) / (lx[-1] - lx[0]), -fit.alpha, rel_tol=1e-9)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_layer_esds_has_one_panel_per_layer():
    from toolkit.plotting import spectra as spectra_plots

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 60), nn.ReLU(), nn.Linear(60, 50))
    fig = spectra_plots.layer_esds({"a": model, "shuffled": shuffle_weights(model)})
    assert len(fig.axes) == 2


def test_old_name_randomized_warns_and_still_shuffles():
    from toolkit import spectra

    model = nn.Sequential(nn.Linear(6, 5))
    with pytest.warns(DeprecationWarning, match="shuffle_weights"):
        old = spectra.randomized
    assert old is shuffle_weights
    w0, w1 = model[0].weight.detach(), old(model, seed=1)[0].weight.detach()
    assert torch.equal(torch.sort(w0.reshape(-1)).values, torch.sort(w1.reshape(-1)).values)


def test_esd_plot_leaves_out_zero_eigenvalues_and_says_how_many():
    import matplotlib
    matplotlib.use("Agg")
    from toolkit.plotting.spectra import esd_plot

    torch.manual_seed(0)
    w = torch.randn(50, 50, dtype=torch.float64)
    w[:20] = 0  # rank 30: 20 eigenvalues of W^T W are zero up to rounding
    ax = esd_plot(torch.linalg.svdvals(w) ** 2, label="pruned")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "pruned (20 zero eigenvalues not drawn)"
    assert min(line.get_xdata().min() for line in ax.get_lines()) > 1e-6  # nothing at a floor


# ---------------------------------------------------------------------------------- path-norms
# Brute force: build the network's DAG by hand (node -> list of (source, weight), bias) and
# enumerate every path (from an input, or from a neuron's bias, to an output) explicitly.


def _brute_path_norm(graph: dict, inputs: list, outputs: list, p: float) -> float:
    def products(v):  # the list of path products ending at node v
        if v in inputs:
            return [1.0]
        edges, bias = graph[v]
        out = [abs(bias) ** p] if bias is not None else []
        for u, w in edges:
            out += [q * abs(w) ** p for q in products(u)]
        return out
    return sum(sum(products(o)) for o in outputs) ** (1.0 / p)


def _add_linear(graph, src: list, layer: nn.Linear, tag: str, extra=None) -> list:
    w = layer.weight.detach().double()
    b = layer.bias.detach().double() if layer.bias is not None else None
    nodes = []
    for i in range(w.shape[0]):
        edges = [(u, float(w[i, j])) for j, u in enumerate(src)]
        if extra is not None:
            edges.append((extra[i], 1.0))  # a skip connection: an edge of weight 1
        graph[(tag, i)] = (edges, None if b is None else float(b[i]))
        nodes.append((tag, i))
    return nodes


def _tiny_mlp(seed=0, bias=True):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4, bias=bias), nn.ReLU(), nn.Linear(4, 3, bias=bias),
                         nn.ReLU(), nn.Linear(3, 2, bias=bias)).double()


def _mlp_graph(net):
    graph, inputs = {}, [("x", j) for j in range(3)]
    h = _add_linear(graph, inputs, net[0], "a")
    h = _add_linear(graph, h, net[2], "b")
    return graph, inputs, _add_linear(graph, h, net[4], "c")


@pytest.mark.parametrize("p", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_path_norm_of_mlp_with_biases_equals_brute_force_sum_over_paths(p, seed):
    net = _tiny_mlp(seed)
    graph, inputs, outputs = _mlp_graph(net)
    assert spectra.path_norm(net, (3,), p=p) == pytest.approx(
        _brute_path_norm(graph, inputs, outputs, p), rel=1e-10)


class _Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.fc1, self.fc2, self.head = (nn.Linear(2, 3), nn.Linear(3, 4),
                                                   nn.Linear(4, 3), nn.Linear(3, 2))

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.head(torch.relu(h + self.fc2(torch.relu(self.fc1(h)))))


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_path_norm_with_skip_connection_equals_brute_force(p):
    torch.manual_seed(3)
    net = _Res().double()
    graph, inputs = {}, [("x", j) for j in range(2)]
    h = _add_linear(graph, inputs, net.inp, "h")
    g = _add_linear(graph, h, net.fc1, "g")
    r = _add_linear(graph, g, net.fc2, "r", extra=h)  # relu(h + fc2(.)): skip edges weigh 1
    outputs = _add_linear(graph, r, net.head, "o")
    assert spectra.path_norm(net, (2,), p=p) == pytest.approx(
        _brute_path_norm(graph, inputs, outputs, p), rel=1e-10)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_path_norm_with_conv_and_max_pooling_equals_brute_force(p):
    torch.manual_seed(4)
    conv, pool, fc = nn.Conv1d(1, 2, kernel_size=2), nn.MaxPool1d(2), nn.Linear(4, 2)
    net = nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten(), fc).double()
    length = 9  # conv: 2 channels x 8, pooled to 2 x 4 = 8 features
    net[4] = fc = nn.Linear(8, 2).double()
    graph, inputs = {}, [("x", t) for t in range(length)]
    w, b = conv.weight.detach(), conv.bias.detach()
    for c in range(2):
        for t in range(length - 1):
            graph[("conv", c, t)] = ([(("x", t + s), float(w[c, 0, s])) for s in range(2)],
                                     float(b[c]))
    pooled = []
    for c in range(2):
        for t in range(4):  # a max-pool neuron: edges of weight 1 from its window, no bias
            graph[("pool", c, t)] = ([(("conv", c, 2 * t + s), 1.0) for s in range(2)], None)
            pooled.append(("pool", c, t))
    outputs = _add_linear(graph, pooled, fc, "o")
    expected = _brute_path_norm(graph, inputs, outputs, p)
    assert spectra.path_norm(net, (1, length), p=p) == pytest.approx(expected, rel=1e-10)


def test_path_norm_with_eval_batch_norm_equals_the_folded_network():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()
    net.train()
    net(torch.randn(32, 3, dtype=torch.float64))  # running statistics that are not (0, 1)
    net.eval()
    bn = net[1]
    a = bn.weight / (bn.running_var + bn.eps).sqrt()
    folded = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        folded[0].weight.copy_(a[:, None] * net[0].weight)
        folded[0].bias.copy_(a * (net[0].bias - bn.running_mean) + bn.bias)
        folded[2].load_state_dict(net[3].state_dict())
    x = torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(folded(x), net(x))
    for p in (1.0, 2.0):
        assert spectra.path_norm(net, (3,), p=p) == pytest.approx(
            spectra.path_norm(folded, (3,), p=p), rel=1e-10)


def test_path_norm_is_invariant_under_neuron_rescaling_while_norm_product_moves():
    net = _tiny_mlp(0)
    scales = torch.tensor([1e-3, 1e2, 1.0, 30.0], dtype=torch.float64)
    moved = spectra.rescale_neurons(net, "0", scales)
    x = torch.randn(6, 3, dtype=torch.float64)
    assert torch.allclose(moved(x), net(x))
    for p in (1.0, 2.0):
        assert spectra.path_norm(moved, (3,), p=p) == pytest.approx(
            spectra.path_norm(net, (3,), p=p), rel=1e-10)

    def prod(m):
        return math.prod(float(torch.linalg.matrix_norm(m_.weight.detach(), 2))
                         for _, m_ in spectra.weight_layers(m))
    assert prod(moved) / prod(net) > 100


def test_path_norm_bounds_the_output_and_is_bounded_by_layer_norms():
    net = _tiny_mlp(2)
    pn1 = spectra.path_norm(net, (3,), p=1)
    x = 3 * torch.randn(50, 3, dtype=torch.float64)
    bound = pn1 * x.abs().amax(1).clamp_min(1.0)
    assert bool((net(x).abs().sum(1) <= bound + 1e-12).all())
    nobias = _tiny_mlp(2, bias=False)  # the layer-norm bounds hold for bias-free layered nets
    ws = [m.weight.detach() for _, m in spectra.weight_layers(nobias)]
    assert spectra.path_norm(nobias, (3,), p=1) <= 2 * math.prod(
        float(w.abs().sum(1).max()) for w in ws) + 1e-12
    assert spectra.path_norm(nobias, (3,), p=2) <= math.prod(float(w.norm()) for w in ws)


def test_path_norm_handles_pruned_layers_and_rejects_other_activations():
    from toolkit import pruning
    net = _tiny_mlp(1)
    pruned = pruning.prune(copy.deepcopy(net), method="magnitude", amount=0.5)
    dense = pruning.make_permanent(pruning.prune(copy.deepcopy(net), method="magnitude",
                                                 amount=0.5))
    assert spectra.path_norm(pruned, (3,)) == pytest.approx(spectra.path_norm(dense, (3,)))
    assert spectra.path_norm(pruned, (3,)) < spectra.path_norm(net, (3,))
    with pytest.raises(ValueError, match="DAG ReLU"):
        spectra.path_norm(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)), (3,))
    with pytest.raises(ValueError, match="input_shape"):
        spectra.path_norm(net, 3)


# ------------------------------------------------------------ attention (issue 17)


def _tiny_encoder(seed=0):
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(12, 3, 24, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.Linear(5, 12), nn.TransformerEncoder(layer, 2,
                                                                 enable_nested_tensor=False))


def test_layer_report_splits_in_proj_weight_into_q_k_v():
    model = _tiny_encoder()
    report = layer_report(model, randomize=False).set_index("name")
    attn = "1.layers.0.self_attn"
    assert [n for n in report.index if n.startswith(attn)] == [f"{attn}.{b}" for b in "qkv"] + [
        f"{attn}.out_proj"]
    assert len(report) == 1 + 2 * 6
    w = model[1].layers[0].self_attn.in_proj_weight.detach().double()
    for i, b in enumerate("qkv"):
        block = w[12 * i:12 * (i + 1)]
        row = report.loc[f"{attn}.{b}"]
        assert row["shape"] == (12, 12) and row["type"] == "MultiheadAttention"
        assert math.isclose(row["spectral_norm"], float(torch.linalg.matrix_norm(block, 2)) ** 2,
                            rel_tol=1e-9)
        assert math.isclose(row["frobenius"], float(block.square().sum()), rel_tol=1e-9)


def test_weight_matrices_of_pruned_attention_and_shuffle_per_block():
    from toolkit import pruning

    model = _tiny_encoder()
    pruning.prune(model, amount=0.5, scope="layer")
    mats = {m.name: m for m in spectra.weight_matrices(model)}
    q = mats["1.layers.1.self_attn.q"]
    mha = model[1].layers[1].self_attn
    expected = (mha.in_proj_weight_orig * mha.in_proj_weight_mask)[:12].detach()
    assert torch.equal(q.weight(), expected) and int((q.weight() == 0).sum()) == 72
    shuffled = shuffle_weights(model, seed=1)
    for name, m in {x.name: x for x in spectra.weight_matrices(shuffled)}.items():
        a, b = mats[name].weight(), m.weight()
        assert torch.equal(torch.sort(a.flatten()).values, torch.sort(b.flatten()).values), name
        assert not torch.equal(a, b), name  # each block permuted on its own, masks with it
