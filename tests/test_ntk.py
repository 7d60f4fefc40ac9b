"""Tests of toolkit.ntk (empirical, structured, analytic, predict, linearize, callbacks,
surrogates): each one fails if the math is wrong (closed forms, identities, and agreement of
independent methods). float64 wherever a tolerance matters."""

import math

import pytest
import torch
import torch.nn.utils.prune
from _models import TinyViT
from torch import nn

from toolkit import models, ntk, train
from toolkit.ntk import empirical

# torch's forward-mode AD loads TorchScript decompositions on first use; not our warning
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

DT = torch.float64
METHODS = ("jacobian", "ntk_vp", "structured")


def _mlp(seed=0, parameterization="ntk", widths=(16, 12), out=3, activation="tanh", **kw):
    torch.manual_seed(seed)
    return models.MLP(5, list(widths), out, activation=activation,
                      parameterization=parameterization, **kw).to(DT)


def _x(n, d=5, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _all_methods(model, x1, x2=None, mode="full", **kw):
    return {m: ntk.empirical_ntk(model, x1, x2, mode=mode, method=m, progress=False, **kw)
            for m in METHODS}


# ------------------------------------------------------------------------------ closed forms


@pytest.mark.parametrize("method", METHODS)
def test_linear_model_kernel_is_inner_product_plus_one(method):
    """f(x) = W x + b: df_o/dW_oj = x_j, df_o/db_o = 1, so Θ = (x1·x2 + 1) I_O."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3).to(DT)
    x1, x2 = _x(7), _x(4, seed=2)
    k = ntk.empirical_ntk(model, x1, x2, mode="full", method=method, progress=False)
    expected = (x1 @ x2.T + 1)[:, :, None, None] * torch.eye(3, dtype=DT)
    torch.testing.assert_close(k, expected, rtol=1e-12, atol=1e-12)


def test_linear_model_without_bias_and_ntk_scales():
    """NTKLinear: f = s_w W x + s_b b, so Θ = s_w² x1·x2 + s_b² (the scales enter squared)."""
    torch.manual_seed(0)
    layer = models.NTKLinear(5, 2, sigma_w=1.7, sigma_b=0.4).to(DT)
    x1, x2 = _x(6), _x(3, seed=2)
    for method in METHODS:
        k = ntk.empirical_ntk(layer, x1, x2, method=method, progress=False)
        expected = 1.7**2 / 5 * (x1 @ x2.T) + 0.4**2
        torch.testing.assert_close(k, expected, rtol=1e-12, atol=1e-12)
    no_bias = nn.Linear(5, 2, bias=False).to(DT)
    k = ntk.empirical_ntk(no_bias, x1, x2, method="structured", progress=False)
    torch.testing.assert_close(k, x1 @ x2.T, rtol=1e-12, atol=1e-12)


def test_modes_are_consistent():
    """trace = mean over outputs of diagonal; diagonal = the o = q entries of full."""
    model, x1, x2 = _mlp(), _x(6), _x(5, seed=3)
    full = ntk.empirical_ntk(model, x1, x2, mode="full", progress=False)
    diag = ntk.empirical_ntk(model, x1, x2, mode="diagonal", progress=False)
    trace = ntk.empirical_ntk(model, x1, x2, mode="trace", progress=False)
    torch.testing.assert_close(diag, torch.diagonal(full, dim1=2, dim2=3))
    torch.testing.assert_close(trace, diag.mean(-1))


# -------------------------------------------------------------------- methods agree with each other


@pytest.mark.parametrize("mode", ntk.MODES)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_methods_agree_on_mlp(mode, parameterization):
    model = _mlp(parameterization=parameterization, sigma_b=0.3)
    ks = _all_methods(model, _x(7), _x(4, seed=2), mode=mode)
    for m in ("ntk_vp", "structured"):
        torch.testing.assert_close(ks[m], ks["jacobian"], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("mode", ["trace", "full"])
def test_methods_agree_on_cnn_with_strides_and_padding(mode):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(4, 3, 2, dilation=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 3 * 3, 5),
    ).to(DT)
    x = torch.randn(5, 2, 8, 8, dtype=DT)
    ks = _all_methods(model, x, mode=mode)
    for m in ("ntk_vp", "structured"):
        torch.testing.assert_close(ks[m], ks["jacobian"], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("mode", ["trace", "diagonal", "full"])
def test_bias_term_read_off_the_output_gradient_gram(mode):
    """A Linear on (N, P, d) inputs (P = 2 positions share the weight) with a bias, where the cost
    model takes position Grams: the bias term, read off the output-gradient Gram as
    sum_{p,p'} delta_p.delta'_p', equals the Jacobian method's in every mode."""
    from toolkit.ntk.structured import _layer_costs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten()).to(DT)
    x = torch.randn(3, 2, 16, generator=torch.Generator().manual_seed(4), dtype=DT)
    ctx = empirical._make_context(model, x)
    first = ctx.layers[0]
    assert first.n_pos == 2 and ctx.n_out == 2
    gram, explicit = _layer_costs(first, 3, 3, ctx.n_out, mode)
    assert gram <= explicit  # the Gram route, which now yields the bias term too
    ks = _all_methods(model, x, mode=mode)
    torch.testing.assert_close(ks["structured"], ks["jacobian"], rtol=1e-10, atol=1e-12)
    weights_only = ntk.empirical_ntk(model, x, mode=mode, method="structured", progress=False,
                                     params="*.weight")
    assert not torch.allclose(weights_only, ks["structured"])  # the bias term is not zero here


def test_methods_agree_on_small_cnn_model():
    torch.manual_seed(0)
    model = models.SmallCNN(width=4).to(DT)
    x = torch.randn(4, 64, dtype=DT)
    ks = _all_methods(model, x, mode="trace")
    torch.testing.assert_close(ks["structured"], ks["jacobian"], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(ks["ntk_vp"], ks["jacobian"], rtol=1e-5, atol=1e-8)


def test_structured_falls_back_for_other_parameters():
    """LayerNorm's affine parameters, a module applied twice and a pruned layer go to the generic
    path; the kernel is still exact."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(5, 8)
            self.shared = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)
            self.out = nn.Linear(8, 2)

        def forward(self, x):
            h = torch.tanh(self.inp(x))
            h = torch.tanh(self.shared(torch.tanh(self.shared(h))))
            return self.out(self.norm(h))

    torch.manual_seed(0)
    model = Twice().to(DT)
    nn.utils.prune.l1_unstructured(model.out, "weight", amount=0.5)
    x = _x(6)
    assert 0.0 < ntk.structured_coverage(model, x) < 1.0
    ks = _all_methods(model, x, mode="full")
    torch.testing.assert_close(ks["structured"], ks["jacobian"], rtol=1e-5, atol=1e-8)


def test_frozen_parameters_are_excluded():
    """Only trainable parameters count: freezing the first layer removes exactly its term."""
    model = _mlp(widths=(8,), out=1)
    x = _x(5)
    k_all = ntk.empirical_ntk(model, x, method="jacobian", progress=False)
    model.features[1].requires_grad_(False)
    for method in METHODS:
        k_part = ntk.empirical_ntk(model, x, method=method, progress=False)
        assert torch.all(torch.diagonal(k_part) < torch.diagonal(k_all))
        torch.testing.assert_close(
            k_part, ntk.empirical_ntk(model, x, method="jacobian", progress=False))


def test_sequence_inputs_share_a_linear_layer():
    """A Linear applied at several positions: the structured path sums over position pairs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Flatten(), nn.Linear(24, 2)).to(DT)
    ks = _all_methods(model, torch.randn(5, 4, 3, dtype=DT), mode="full")
    torch.testing.assert_close(ks["structured"], ks["jacobian"], rtol=1e-5, atol=1e-8)


def test_batchnorm_in_eval_mode_is_fine():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).to(DT)
    model(_x(16))  # populate the running statistics
    model.eval()
    ks = _all_methods(model, _x(6), mode="trace")
    torch.testing.assert_close(ks["structured"], ks["jacobian"], rtol=1e-5, atol=1e-8)


# ------------------------------------------------------------------------ chunking and structure


@pytest.mark.parametrize("method", METHODS)
def test_chunked_equals_unchunked(method):
    model, x1, x2 = _mlp(), _x(11), _x(7, seed=2)
    for args in ((x1, None), (x1, x2)):
        whole = ntk.empirical_ntk(model, *args, mode="full", method=method, chunk_size=64,
                                  progress=False)
        blocks = ntk.empirical_ntk(model, *args, mode="full", method=method, chunk_size=3,
                                   progress=False)
        torch.testing.assert_close(blocks, whole, rtol=1e-10, atol=1e-12)


def test_tiny_memory_budget_gives_small_blocks_and_same_kernel():
    model, x = _mlp(), _x(9)
    ref = ntk.empirical_ntk(model, x, method="jacobian", progress=False)
    k = ntk.empirical_ntk(model, x, method="jacobian", memory_budget=1, progress=False)
    torch.testing.assert_close(k, ref)


def test_block_schedule_tiles_the_kernel_once():
    for n1, n2, c, sym in ((10, 10, 3, True), (10, 7, 4, False), (5, 5, 5, True)):
        seen = torch.zeros(n1, n2, dtype=torch.int64)
        for rows, cols in empirical._block_schedule(n1, n2, c, sym):
            seen[rows.start:rows.stop, cols.start:cols.stop] += 1
            if sym and cols.start != rows.start:
                seen[cols.start:cols.stop, rows.start:rows.stop] += 1
        assert torch.all(seen == 1)


def test_kernel_is_symmetric_and_positive_semidefinite():
    model, x = _mlp(activation="relu"), _x(12)
    k = ntk.empirical_ntk(model, x, mode="full", chunk_size=5, progress=False)
    flat = k.permute(0, 2, 1, 3).reshape(36, 36)
    torch.testing.assert_close(flat, flat.T)
    evals = torch.linalg.eigvalsh(flat)
    assert evals.min() > -1e-10 * evals.max()


def test_auto_uses_structured_for_mlps_and_agrees():
    model, x = _mlp(), _x(6)
    ctx = empirical._make_context(model, x)
    assert empirical._pick_method(ctx, 6, 6, "trace") == "structured"
    torch.testing.assert_close(
        ntk.empirical_ntk(model, x, progress=False),
        ntk.empirical_ntk(model, x, method="jacobian", progress=False))


def test_same_seed_same_kernel():
    k1 = ntk.empirical_ntk(_mlp(seed=3), _x(5), progress=False)
    k2 = ntk.empirical_ntk(_mlp(seed=3), _x(5), progress=False)
    assert torch.equal(k1, k2)


# ---------------------------------------------------------------------------- errors on bad input


def test_batchnorm_in_train_mode_raises():
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 1)).to(DT)
    with pytest.raises(ValueError, match=r"BatchNorm.*model\.eval\(\)"):
        ntk.empirical_ntk(model, _x(4))


def test_active_dropout_raises():
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 1)).to(DT)
    with pytest.raises(ValueError, match="Dropout"):
        ntk.empirical_ntk(model, _x(4))
    model.eval()
    ntk.empirical_ntk(model, _x(4), progress=False)


def test_bad_arguments_raise_clear_errors():
    model = _mlp()
    with pytest.raises(ValueError, match="mode"):
        ntk.empirical_ntk(model, _x(3), mode="sum")
    with pytest.raises(ValueError, match="method"):
        ntk.empirical_ntk(model, _x(3), method="fast")
    with pytest.raises(ValueError, match="per-sample shape"):
        ntk.empirical_ntk(model, _x(3), _x(3, d=4))
    with pytest.raises(ValueError, match="chunk_size"):
        ntk.empirical_ntk(model, _x(3), chunk_size=0)
    with pytest.raises(TypeError, match="x1"):
        ntk.empirical_ntk(model, [[1.0] * 5])
    with pytest.raises(ValueError, match=r"x1\.to\(torch\.float64\)"):
        ntk.empirical_ntk(model, _x(3).float())
    # nothing factorises: method="structured" is the generic Jacobian path (no error)
    norm_only = nn.Sequential(nn.LayerNorm(5)).to(DT)
    torch.testing.assert_close(
        ntk.empirical_ntk(norm_only, _x(3), method="structured", mode="full"),
        ntk.empirical_ntk(norm_only, _x(3), method="ntk_vp", mode="full"))


def test_device_mismatch_raises():
    model = _mlp()
    x_meta = torch.empty(3, 5, dtype=DT, device="meta")
    with pytest.raises(ValueError, match=r"x2 is on meta.*\.to\('cpu'\)"):
        ntk.empirical_ntk(model, _x(3), x_meta)


# ------------------------------------------------------------------------------- analytic kernels


def test_analytic_relu_one_hidden_layer_closed_form():
    r"""depth 1, sigma_b = 0: Θ = σ⁴ (|x||x'|/d)/(2π) (sin t + (π - t) cos t)
    + σ⁴ (x·x'/d)(π - t)/(2π), t the angle between x and x'."""
    x1, x2 = _x(6), _x(4, seed=5)
    sw = 1.3
    k = ntk.analytic_ntk(x1, x2, depth=1, activation="relu", sigma_w=sw)
    n1, n2 = x1.norm(dim=1)[:, None], x2.norm(dim=1)[None, :]
    dot = x1 @ x2.T
    t = torch.arccos((dot / (n1 * n2)).clamp(-1, 1))
    d = x1.shape[1]
    nngp = sw**4 * n1 * n2 / d / (2 * math.pi) * (torch.sin(t) + (math.pi - t) * torch.cos(t))
    expected = nngp + sw**4 * dot / d * (math.pi - t) / (2 * math.pi)
    torch.testing.assert_close(k, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ntk.analytic_ntk(x1, x2, depth=1, sigma_w=sw, kernel="nngp"), nngp)


def test_analytic_erf_one_hidden_layer_closed_form():
    x1, x2 = _x(5), _x(3, seed=5)
    sw, sb, d = 1.1, 0.2, 5
    s12 = sw**2 * x1 @ x2.T / d + sb**2
    s11 = (sw**2 * (x1**2).sum(1) / d + sb**2)[:, None]
    s22 = (sw**2 * (x2**2).sum(1) / d + sb**2)[None, :]
    prod = (1 + 2 * s11) * (1 + 2 * s22)
    nngp = sw**2 * 2 / math.pi * torch.arcsin(2 * s12 / prod.sqrt()) + sb**2
    expected = nngp + sw**2 * 4 / math.pi / (prod - 4 * s12**2).sqrt() * s12
    k = ntk.analytic_ntk(x1, x2, depth=1, activation="erf", sigma_w=sw, sigma_b=sb)
    torch.testing.assert_close(k, expected, rtol=1e-12, atol=1e-12)


def test_analytic_identity_is_deep_linear_kernel():
    """Linear activations: Σ^l = σ^{2l} x·x'/d and Θ^{L+1} = (L + 1) σ^{2(L+1)} x·x'/d."""
    x = _x(4)
    k = ntk.analytic_ntk(x, depth=3, activation="identity", sigma_w=1.2)
    torch.testing.assert_close(k, 4 * 1.2**8 * (x @ x.T) / 5)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_analytic_matches_monte_carlo_of_wide_networks(activation):
    """The average empirical NTK of wide NTK-parameterised MLPs approaches analytic_ntk, and so
    does the output covariance (NNGP)."""
    x = _x(5)
    kwargs = dict(depth=2, activation=activation, sigma_w=1.4, sigma_b=0.3)
    ks, outs = [], []
    for seed in range(8):
        torch.manual_seed(seed)
        net = models.MLP(5, [384, 384], 40, activation=activation, parameterization="ntk",
                         sigma_w=1.4, sigma_b=0.3).to(DT)
        ks.append(ntk.empirical_ntk(net, x, progress=False))
        with torch.no_grad():
            outs.append(net(x))
    k_mc = torch.stack(ks).mean(0)
    k_inf = ntk.analytic_ntk(x, **kwargs)
    assert (k_mc - k_inf).norm() / k_inf.norm() < 0.05
    out = torch.cat(outs, 1)
    nngp_mc = out @ out.T / out.shape[1]
    nngp = ntk.analytic_ntk(x, kernel="nngp", **kwargs)
    assert (nngp_mc - nngp).norm() / nngp.norm() < 0.2
    assert (nngp_mc - nngp).norm() < 0.5 * (nngp_mc - k_inf).norm()  # it is the NNGP, not the NTK


def test_analytic_argument_errors():
    with pytest.raises(ValueError, match="depth"):
        ntk.analytic_ntk(_x(2), depth=-1)
    with pytest.raises(ValueError, match="activation"):
        ntk.analytic_ntk(_x(2), depth=1, activation="swish")
    with pytest.raises(ValueError, match="kernel"):
        ntk.analytic_ntk(_x(2), depth=1, kernel="cntk")


# ----------------------------------------------------------------------------- kernel regression


def _kernel_problem(n=8, m=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n + m, 3, generator=g, dtype=DT)
    k_all = (z @ z.T + 1) ** 2
    y = torch.randn(n, 2, generator=g, dtype=DT)
    f0 = torch.randn(n + m, 2, generator=g, dtype=DT)
    return k_all[:n, :n], k_all[n:, :n], y, f0[:n], f0[n:]


def test_kernel_regression_limits():
    k, ks, y, f0, f0s = _kernel_problem()
    at_inf = ntk.kernel_regression(k, y, ks, f0_train=f0, f0_test=f0s)
    torch.testing.assert_close(at_inf, f0s + ks @ torch.linalg.solve(k, y - f0))
    at_zero = ntk.kernel_regression(k, y, ks, t=0.0, f0_train=f0, f0_test=f0s)
    torch.testing.assert_close(at_zero, f0s)
    # on the training points the prediction at t = infinity interpolates the targets
    torch.testing.assert_close(ntk.kernel_regression(k, y, k, f0_train=f0, f0_test=f0), y)
    ridge = ntk.kernel_regression(k, y, ks, ridge=0.7)
    torch.testing.assert_close(ridge, ks @ torch.linalg.solve(k + 0.7 * torch.eye(8, dtype=DT), y))


def test_kernel_regression_solves_the_gradient_flow_ode():
    """d f_t / dt = -lr K (f_t - y) on the training inputs (central finite difference)."""
    k, _, y, f0, _ = _kernel_problem()
    k = k / torch.linalg.eigvalsh(k).max()
    t, h, lr = 1.3, 1e-4, 2.0
    f = lambda s: ntk.kernel_regression(k, y, k, t=s, lr=lr, f0_train=f0, f0_test=f0)
    deriv = (f(t + h) - f(t - h)) / (2 * h)
    torch.testing.assert_close(deriv, -lr * k @ (f(t) - y), rtol=1e-6, atol=1e-7)
    several = ntk.kernel_regression(k, y, k, t=[0.5, t], lr=lr, f0_train=f0, f0_test=f0)
    torch.testing.assert_close(several[1], f(t))


def test_kernel_regression_full_kernel_matches_per_output_kernel():
    """A full (N, N, O, O) kernel of the form K ⊗ I gives the per-output kernel's predictions."""
    k, ks, y, _, _ = _kernel_problem()
    eye = torch.eye(2, dtype=DT)
    full = ntk.kernel_regression(k[..., None, None] * eye, y, ks[..., None, None] * eye, t=0.3)
    torch.testing.assert_close(full, ntk.kernel_regression(k, y, ks, t=0.3))


def test_kernel_regression_shape_errors():
    k, ks, y, _, _ = _kernel_problem()
    with pytest.raises(ValueError, match="k_test_train"):
        ntk.kernel_regression(k, y, ks[:, :3])
    with pytest.raises(ValueError, match="y_train"):
        ntk.kernel_regression(k, y[:3], ks)


# ------------------------------------------------------------------------------------ linearize


def _set_params(lin, direction, scale):
    with torch.no_grad():
        for n, p in lin.params.items():
            p.copy_(getattr(lin, "theta0__" + n) + scale * direction[n])


def test_linearized_model_is_the_taylor_expansion():
    model, x = _mlp(), _x(6)
    lin = ntk.linearize(model)
    torch.testing.assert_close(lin(x), model(x))
    direction = {n: torch.randn_like(p) for n, p in lin.params.items()}
    outs = {}
    for scale in (0.0, 1e-3, 2e-3):
        _set_params(lin, direction, scale)
        outs[scale] = lin(x).detach()
    torch.testing.assert_close(outs[2e-3] - outs[0.0], 2 * (outs[1e-3] - outs[0.0]))  # linear

    def taylor_error(scale):
        net = _mlp()
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.add_(scale * direction[name.replace(".", "__")])
            return (net(x) - outs[scale]).abs().max()

    # f(θ0 + δ) - f_lin(θ0 + δ) = O(|δ|²): halving δ divides the error by about 4
    ratio = taylor_error(2e-3) / taylor_error(1e-3)
    assert 3.5 < ratio < 4.5


def test_linearized_training_is_kernel_gradient_descent():
    """train.fit on the linearised model (full-batch GD, mean MSE) = kernel_regression with the
    initial NTK in discrete time, exactly."""
    model = _mlp(out=2)
    x_train, x_test = _x(10), _x(4, seed=7)
    y = torch.sin(x_train[:, :2])
    k = ntk.empirical_ntk(model, x_train, mode="full", progress=False)
    ks = ntk.empirical_ntk(model, x_test, x_train, mode="full", progress=False)
    with torch.no_grad():
        f0, f0s = model(x_train), model(x_test)
    lin = ntk.linearize(model)
    lr, epochs = 0.05, 25
    train.fit(lin, (x_train, y), loss="mse", lr=lr, epochs=epochs, device="cpu", progress=False)
    pred = ntk.kernel_regression(k, y, ks, t=epochs, lr=ntk.gd_kernel_lr(lr, 10, 2),
                                 f0_train=f0, f0_test=f0s, discrete=True)
    with torch.no_grad():
        torch.testing.assert_close(lin(x_test), pred, rtol=1e-8, atol=1e-10)
        # and its NTK did not move
        k_after = ntk.empirical_ntk(lin, x_train, mode="full", progress=False)
    torch.testing.assert_close(k_after, k, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------- drift


def test_kernel_drift_callback():
    model, x = _mlp(), _x(6)
    cb = ntk.kernel_drift(x)
    assert cb(0, model) == {"kernel_drift": 0.0}
    k0 = cb.k0.clone()
    with torch.no_grad():
        model.head.weight.mul_(2.0)
    drift = cb(1, model)["kernel_drift"]
    k1 = ntk.empirical_ntk(model, x, progress=False)
    assert drift > 0
    assert math.isclose(drift, float((k1 - k0).norm() / k0.norm()), rel_tol=1e-12)


def test_output_recorder_records_each_call():
    model, x = _mlp(), _x(4)
    rec = ntk.OutputRecorder(x)
    rec(0, model)
    rec(3, model)
    assert rec.epochs == [0, 3] and rec.outputs.shape == (2, 4, 3)


# ------------------------------------------------------------------------- gated (2101.04243)


def _gated(widths=(24, 16, 12), out=2, seed=0, **kw):
    torch.manual_seed(seed)
    return ntk.GatedReLUMLP(5, list(widths), out, sigma_b=0.3, **kw).to(DT)


def test_gated_net_equals_relu_net_at_initialisation():
    gated, x = _gated(), _x(20)
    h = x
    for layer in gated.hidden:
        h = torch.relu(layer(h))
    torch.testing.assert_close(gated(x), gated.head(h))


@pytest.mark.parametrize("widths", [(24,), (24, 16, 12)])
def test_to_relu_is_exact_on_the_data(widths):
    gated, x = _gated(widths), _x(40)
    with torch.no_grad():
        for p in gated.parameters():
            p.add_(0.5 * torch.randn_like(p))  # trained weights now differ from the gates
    relu_net = ntk.to_relu(gated, x)
    linears = [m for m in relu_net if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears[:-1]] == [2 * w for w in widths]
    assert all(isinstance(m, nn.Linear | nn.ReLU | nn.Flatten) for m in relu_net)
    out = gated(x)
    torch.testing.assert_close(relu_net(x), out, rtol=1e-9, atol=1e-9 * out.abs().max().item())
    # a too-small M breaks the construction (so the margin matters)
    broken = ntk.to_relu(gated, x[:1])
    assert (broken(x) - out).abs().max() > 1e-3


def test_to_relu_errors():
    with pytest.raises(TypeError, match="GatedReLUMLP"):
        ntk.to_relu(nn.Linear(2, 2), _x(2))
    gated = _gated((4,))
    with torch.no_grad():
        gated.gate_bias_0.zero_()
    with pytest.raises(ValueError, match="exactly 0"):
        ntk.to_relu(gated, torch.zeros(1, 5, dtype=DT))


def _gd(model, x, y, lr, steps):
    losses, kernels = [], [ntk.empirical_ntk(model, x, progress=False)]
    hist = train.fit(model, (x, y), loss="mse", lr=lr, epochs=steps, device="cpu", progress=False)
    kernels.append(ntk.empirical_ntk(model, x, progress=False))
    losses = torch.tensor(hist["train_loss"].to_numpy(), dtype=DT)
    return losses, kernels


def test_gated_one_hidden_layer_with_frozen_head_has_a_constant_kernel_and_linear_rate():
    """f is linear in W₁, so Θ is constant and the mean-MSE residual obeys
    r_t = (I - η' K) r_0: loss_t <= (1 - η' λ_min)^{2t} loss_0."""
    gated = _gated((256,), out=1, train_head=False)
    x = _x(12)
    y = torch.sin(x[:, :1] * 2)
    k0 = ntk.empirical_ntk(gated, x, progress=False)
    lr = 0.5
    eta = ntk.gd_kernel_lr(lr, 12, 1)
    evals = torch.linalg.eigvalsh(k0)
    assert eta * evals.max() < 1  # stable step
    losses, (ka, kb) = _gd(gated, x, y, lr, steps=60)
    torch.testing.assert_close(kb, ka, rtol=1e-10, atol=1e-10)
    bound = losses[0] * (1 - eta * evals.min()) ** (2 * torch.arange(61, dtype=DT))
    assert torch.all(losses <= bound * (1 + 1e-9))
    # and the ReLU network with the same initialisation does move its kernel
    torch.manual_seed(0)
    relu = models.MLP(5, [256], 1, parameterization="ntk", sigma_b=0.3).to(DT)
    relu.head.requires_grad_(False)
    _, (ra, rb) = _gd(relu, x, y, lr, steps=60)
    assert ntk.relative_change(ra, rb) > 1e3 * ntk.relative_change(ka, kb)


def test_structured_ntk_of_gated_net_matches_jacobian():
    gated, x = _gated(), _x(7)
    ks = _all_methods(gated, x, mode="full")
    torch.testing.assert_close(ks["structured"], ks["jacobian"], rtol=1e-5, atol=1e-8)


def test_output_scale_multiplies_the_kernel_by_alpha_squared():
    model, x = _mlp(), _x(5)
    k = ntk.empirical_ntk(model, x, progress=False)
    k_scaled = ntk.empirical_ntk(ntk.OutputScale(model, 0.25), x, progress=False)
    torch.testing.assert_close(k_scaled, 0.0625 * k)


def test_as_relu_mlp_is_the_same_network_at_initialisation():
    gated, x = _gated(), _x(10)
    torch.testing.assert_close(gated.as_relu_mlp()(x), gated(x))


# ------------------------------------------------------- primitives of notebook 01's experiments


def test_residual_modes_is_exact_for_a_linear_model_trained_by_gd():
    """f(x) = W x + b is linear in its parameters, so GD on mean MSE is exactly kernel GD with
    Θ = x x'ᵀ + 1: each mode of the residual decays as (1 - η'λ)^t to rounding error."""
    torch.manual_seed(0)
    model = nn.Linear(5, 1).to(DT)
    x = _x(8)
    y = torch.sin(x[:, :1] * 2)
    k = ntk.empirical_ntk(model, x, progress=False)
    torch.testing.assert_close(k, x @ x.T + 1, rtol=1e-12, atol=1e-12)
    lr = ntk.stable_lr(k, target=1.5) / 2  # η'λ_max = 0.75
    record = ntk.OutputRecorder(x)
    train.fit(model, (x, y), loss="mse", lr=lr, epochs=20, device="cpu", callbacks=[record],
              callback_every=2, progress=False)
    residuals = record.outputs[..., 0] - y[:, 0]
    table = ntk.residual_modes(k, residuals, ntk.gd_kernel_lr(lr, 8), steps=record.epochs,
                               n_modes=4)
    assert len(table) == len(record.epochs) * 4 and set(table["mode"]) == {1, 2, 3, 4}
    diff = (table["measured"] - table["predicted"]).abs().max()
    assert diff < 1e-10
    assert table[table.step == 0]["measured"].eq(1.0).all()
    at_20 = table[table.step == 20].sort_values("mode")
    assert at_20["eigenvalue"].is_monotonic_decreasing
    assert at_20["predicted"].is_monotonic_increasing  # large eigenvalues are learned first


def test_residual_modes_follows_the_kernel_gd_recursion():
    """Feed the exact kernel GD trajectory (kernel_regression, discrete time) as residuals, with
    steps not starting at 0 and a step size above 1/λ_max (signs alternate): measured = predicted."""
    k, _, y, f0, _ = _kernel_problem()
    k, y, f0 = k / torch.linalg.eigvalsh(k).max(), y[:, :1], f0[:, :1]
    steps, eta = list(range(3, 30, 3)), 1.7
    traj = ntk.kernel_regression(k, y, k, t=steps, lr=eta, f0_train=f0, f0_test=f0,
                                 discrete=True)
    table = ntk.residual_modes(k[:, :, None, None], traj - y, eta, steps=steps, n_modes=3)
    torch.testing.assert_close(torch.tensor(table["measured"].to_numpy()),
                               torch.tensor(table["predicted"].to_numpy()), rtol=1e-8, atol=1e-12)
    assert (table["predicted"] < 0).any()  # 1 - η'λ_1 < 0: the sign is kept, not only |.|
    assert table[table.step == 3]["predicted"].eq(1.0).all()  # counted from the first row


def test_residual_modes_argument_errors():
    k, _, y, _, _ = _kernel_problem()
    r = torch.randn(4, 8, dtype=DT)
    with pytest.raises(ValueError, match="residuals"):
        ntk.residual_modes(k, r[:, :5], 0.1)
    with pytest.raises(ValueError, match="steps"):
        ntk.residual_modes(k, r, 0.1, steps=[0, 1])
    with pytest.raises(ValueError, match="n_modes"):
        ntk.residual_modes(k, r, 0.1, n_modes=9)
    with pytest.raises(ValueError, match="lr"):
        ntk.residual_modes(k, r, -1.0)
    with pytest.raises(ValueError, match="square"):
        ntk.residual_modes(k[:, :5], r, 0.1)


def test_stable_lr_sets_the_function_space_step():
    k, _, _, _, _ = _kernel_problem()
    lr = ntk.stable_lr(k, target=0.5)
    assert math.isclose(ntk.gd_kernel_lr(lr, 8) * float(torch.linalg.eigvalsh(k).max()), 0.5,
                        rel_tol=1e-12)


def test_trained_net_starts_on_its_kernel_prediction():
    """The notebook's equivalence procedure on the primitives: at t = 0 the network and kernel
    regression with its own Θ₀ and f₀ coincide; later they differ by a small gap."""
    x = torch.linspace(-1, 1, 6, dtype=DT)[:, None]
    y, xs = torch.sin(3 * x), torch.linspace(-1, 1, 9, dtype=DT)[:, None]
    lr = ntk.stable_lr(ntk.analytic_ntk(x, depth=1, sigma_b=1.0), target=0.5)
    torch.manual_seed(0)
    net = models.MLP(1, [32], 1, parameterization="ntk", sigma_b=1.0).to(DT)
    k, k_s = (ntk.empirical_ntk(net, x, progress=False),
              ntk.empirical_ntk(net, xs, x, progress=False))
    record = ntk.OutputRecorder(torch.cat([x, xs]))
    train.fit(net, (x, y), loss="mse", lr=lr, epochs=3, device="cpu", callbacks=[record],
              progress=False)
    f_net = record.outputs
    f_kernel = ntk.kernel_regression(k, y, k_s, t=record.epochs, lr=ntk.gd_kernel_lr(lr, 6),
                                     f0_train=f_net[0, :6], f0_test=f_net[0, 6:], discrete=True)
    assert record.epochs == [0, 1, 2, 3] and f_kernel.shape == (4, 9, 1)
    torch.testing.assert_close(f_net[0, 6:], f_kernel[0])  # t = 0: both are f_0
    gap = float((f_net[:, 6:] - f_kernel).pow(2).mean().sqrt())
    assert 0 < gap < 0.5


def test_empirical_ntk_converges_to_the_analytic_kernel_with_width():
    x = _x(6)
    k_inf = ntk.analytic_ntk(x, depth=1)
    errors = {}
    for width in (16, 1024):
        errs = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            net = models.MLP(5, [width], 1, parameterization="ntk").to(DT)
            errs.append(ntk.relative_change(k_inf, ntk.empirical_ntk(net, x, progress=False)))
        errors[width] = sum(errs) / 2
    assert errors[1024] < 0.5 * errors[16]


def test_check_ntk_ready_refuses_training_mode_batchnorm_and_returns_the_model():
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8))
    with pytest.raises(ValueError, match=r"BatchNorm1d.*NTK.*model\.eval\(\)"):
        ntk.check_ntk_ready(model)
    assert ntk.check_ntk_ready(model.eval()) is model
    with pytest.raises(TypeError, match="nn.Module"):
        ntk.check_ntk_ready("not a model")


# ------------------------------------------------------------------ deprecated names (one release)


def test_deprecated_names_warn_and_work():
    from toolkit.utils import loglog_slope

    widths = [16, 64, 256, 1024]
    with pytest.warns(DeprecationWarning, match="toolkit.utils.loglog_slope"):
        old_slope = ntk.loglog_slope
    assert old_slope is loglog_slope
    assert math.isclose(old_slope(widths, [3 * w**-0.5 for w in widths]), -0.5, rel_tol=1e-12)
    with pytest.warns(DeprecationWarning, match="block_schedule is internal now"):
        schedule = ntk.block_schedule
    assert schedule(4, 4, 2, True) == empirical._block_schedule(4, 4, 2, True)
    with pytest.warns(DeprecationWarning, match="default_memory_budget"):
        budget = ntk.default_memory_budget
    assert budget(torch.device("cpu")) == 1 << 30
    with pytest.raises(AttributeError, match="width_convergence"):
        ntk.width_convergence  # noqa: B018  (an experiment driver: removed, now notebook cells)


def test_equivalence_panel_moved_to_widgets():
    from toolkit.plotting import ntk as ntk_plots
    from toolkit.widgets import ntk as ntk_widgets

    with pytest.warns(DeprecationWarning, match="toolkit.widgets.ntk.equivalence_panel"):
        old = ntk_plots.equivalence_panel
    assert old is ntk_widgets.equivalence_panel


def test_no_ntk_module_imports_the_training_core():
    import ast
    from pathlib import Path

    for path in Path(empirical.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names]
        names += [f"{node.module}." + ".".join(a.name for a in node.names)
                  for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        assert not any("train" in n.split(".") for n in names), path.name


def test_layer_applied_to_a_reshaped_batch_falls_back():
    """A Linear applied to (N*T, d) rows (batch folded into the rows) is not sample-wise: the
    structured path must not treat it as a layer and the kernel stays exact."""

    class Folded(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(3, 4)
            self.out = nn.Linear(16, 2)

        def forward(self, x):  # x: (N, 4, 3)
            h = torch.tanh(self.inner(x.reshape(-1, 3)))
            return self.out(h.reshape(len(x), 16))

    torch.manual_seed(0)
    model = Folded().to(DT)
    x = torch.randn(5, 4, 3, dtype=DT)
    assert ntk.structured_coverage(model, x) < 1.0
    ks = _all_methods(model, x, mode="full")
    torch.testing.assert_close(ks["structured"], ks["jacobian"], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("widths", [(24,), (24, 16, 12)])
def test_to_relu_is_exact_where_required_margin_says_and_not_beyond(widths):
    gated, x_fit, x_new = _gated(widths), _x(20), _x(200, seed=7)
    with torch.no_grad():
        for p in gated.parameters():
            p.add_(0.5 * torch.randn_like(p))
    required = ntk.surrogates.required_margin(gated, x_fit, x_new)
    assert (ntk.surrogates.required_margin(gated, x_fit, x_fit) <= 1 + 1e-12).all()
    out = gated(x_new)
    for margin in (2.0, 50.0):
        with torch.no_grad():
            err = (ntk.to_relu(gated, x_fit, margin=margin)(x_new) - out).abs().amax(1)
        covered = required <= margin
        assert covered.any() and (err[covered] < 1e-8).all()  # the guarantee
    # the scale is chosen on x_fit: on unseen inputs beyond the margin the outputs differ
    with torch.no_grad():
        err = (ntk.to_relu(gated, x_fit, margin=2.0)(x_new) - out).abs().amax(1)
    assert (err[required > 2.0] > 1e-6).any()


def test_structured_path_covers_mup_layers():
    # MuPLinear is a ScaledLinear: the structured engine reads its scales, and agrees with Jacobians
    torch.manual_seed(0)
    net = models.MLP(4, [32, 32], 3, parameterization="mup", base_width=8).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    assert ntk.structured_coverage(net, x) == 1.0
    torch.testing.assert_close(ntk.empirical_ntk(net, x, method="structured", mode="full"),
                               ntk.empirical_ntk(net, x, method="jacobian", mode="full"))


# ------------------------------------------------ attention, parameter filters (issue 17)


def _TinyViT(d=8, seed=0):
    return TinyViT(d=d, seed=seed, final_norm=True)


def _dense_jacobian(model, x, names=None):
    """(N, O, P) by plain autograd, one backward pass per output entry (no torch.func, no
    fused-kernel switches: the model runs as a user would call it, in training-free eval mode)."""
    params = [(n, p) for n, p in model.named_parameters()
              if p.requires_grad and (names is None or n in names)]
    out = model(x)
    rows = []
    for i in range(out.shape[0]):
        for o in range(out.shape[1]):
            grads = torch.autograd.grad(out[i, o], [p for _, p in params], retain_graph=True,
                                        allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                                   for (_, p), g in zip(params, grads)]))
    return torch.stack(rows).reshape(out.shape[0], out.shape[1], -1)


def _func_reference(model, x, names=None):
    """J J^T from torch.func.jacrev of the whole batch (the Jacobian-product reference)."""
    from torch.func import functional_call, jacrev

    params = {n: p.detach() for n, p in model.named_parameters()
              if p.requires_grad and (names is None or n in names)}
    with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
        jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    j = torch.cat([v.reshape(x.shape[0], -1, v[0, 0].numel()) for v in jac.values()], dim=2)
    n, o, _ = j.shape
    return (j.reshape(n * o, -1) @ j.reshape(n * o, -1).T).reshape(n, o, n, o).permute(0, 2, 1, 3)


def test_transformer_kernel_equals_jacobian_product_references():
    model = _TinyViT().to(DT).eval()
    x = torch.randn(5, 5, 4, generator=torch.Generator().manual_seed(0), dtype=DT)
    ref = _func_reference(model, x)
    j = _dense_jacobian(model, x)
    torch.testing.assert_close(torch.einsum("aop,bqp->aboq", j, j), ref, rtol=1e-10, atol=1e-10)
    for method in (*METHODS, "auto"):
        k = ntk.empirical_ntk(model, x, mode="full", method=method, progress=False)
        torch.testing.assert_close(k, ref, rtol=1e-9, atol=1e-9, msg=method)
    x2 = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1), dtype=DT)
    k12 = ntk.empirical_ntk(model, x, x2, mode="trace", method="structured", chunk_size=2,
                            progress=False)
    j2 = _dense_jacobian(model, x2)
    torch.testing.assert_close(k12, torch.einsum("aop,bop->ab", j, j2) / 3, rtol=1e-9, atol=1e-9)
    # the fast-path switch is restored afterwards
    assert torch.backends.mha.get_fastpath_enabled()
    # the linearised transformer (one jvp through attention) equals the network at theta_0
    torch.testing.assert_close(ntk.linearize(model)(x), model(x), rtol=1e-12, atol=1e-12)


def test_structured_coverage_names_attention_and_layernorm():
    model = _TinyViT().to(DT).eval()
    x = torch.randn(4, 5, 4, dtype=DT)
    cov = ntk.structured_coverage(model, x)
    uncovered = set(cov.uncovered)
    expected = {f"encoder.layers.{i}.{m}" for i in range(2)
                for m in ("self_attn", "self_attn.out_proj", "norm1", "norm2")} | {"norm"}
    assert uncovered == expected, uncovered
    assert "MultiheadAttention" in cov.uncovered["encoder.layers.0.self_attn"]
    assert "out_proj" in cov.uncovered["encoder.layers.1.self_attn.out_proj"]
    n = {name: p.numel() for name, p in model.named_parameters()}
    assert set(cov.fallback) == {name for name in n if any(name.startswith(m + ".")
                                                           for m in expected)}
    assert math.isclose(cov, 1 - sum(n[f] for f in cov.fallback) / sum(n.values()))
    assert ntk.structured_coverage(_mlp(), _x(3)).uncovered == {}
    assert ntk.structured_coverage(model, x, params="head.*") == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_params_filter_is_the_kernel_of_the_selected_jacobian_columns(method):
    model = _TinyViT().to(DT).eval()
    x = torch.randn(4, 5, 4, generator=torch.Generator().manual_seed(2), dtype=DT)
    names = [n for n, _ in model.named_parameters()]
    head = [n for n in names if n.startswith("head.")]
    j = _dense_jacobian(model, x, head)
    k = ntk.empirical_ntk(model, x, mode="full", method=method, params="head.*", progress=False)
    torch.testing.assert_close(k, torch.einsum("aop,bqp->aboq", j, j), rtol=1e-10, atol=1e-12)
    # a module name selects its parameters; a list of patterns selects their union
    torch.testing.assert_close(ntk.empirical_ntk(model, x, mode="full", method=method,
                                                 params="head", progress=False), k)
    # a partition of the parameters: the kernels add up to the full NTK
    parts = ["embed.*", "encoder.layers.0.*",
             ["encoder.layers.1.self_attn.*", "encoder.layers.1.norm?.*"],
             ["encoder.layers.1.linear*", "norm", "head.*"]]
    covered = []
    total = 0
    for part in parts:
        total = total + ntk.empirical_ntk(model, x, mode="full", method=method, params=part,
                                          progress=False)
        covered += list(empirical._trainable(model, part))
    assert sorted(covered) == sorted(names)  # a partition: every parameter exactly once
    torch.testing.assert_close(total, ntk.empirical_ntk(model, x, mode="full", method=method,
                                                        progress=False), rtol=1e-9, atol=1e-9)


def test_params_filter_errors_name_the_argument():
    model = _mlp()
    with pytest.raises(ValueError, match=r"params pattern 'nope\*' matches no trainable"):
        ntk.empirical_ntk(model, _x(3), params="nope*", progress=False)
    with pytest.raises(TypeError, match="params must be"):
        ntk.empirical_ntk(model, _x(3), params=3, progress=False)


def test_non_finite_inputs_and_device_dtype_mismatch_raise_clear_errors():
    model = _mlp()
    x = _x(4)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"x1 has 1 non-finite values.*clean or drop"):
        ntk.empirical_ntk(model, x, progress=False)
    x2 = _x(3)
    x2[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"x2 has 1 non-finite"):
        ntk.empirical_ntk(model, _x(4), x2, progress=False)
    with pytest.raises(ValueError, match=r"x1 has dtype torch.float32 .*x1.to\(torch.float64\)"):
        ntk.empirical_ntk(model, _x(4).float(), progress=False)
    with pytest.raises(ValueError, match=r"x1 is on meta .*x1.to\('cpu'\)"):
        ntk.empirical_ntk(model, torch.empty(4, 5, dtype=DT, device="meta"), progress=False)


def test_conv_layers_on_the_explicit_jacobian_path_blocks_and_memory_model():
    """Convolutions with many positions and few channels: the cost model picks explicit weight
    Jacobians (not position Grams); diagonal blocks reuse one Jacobian; the kernel is exact in
    any blocking, and the memory model charges no P^2 position Grams per pair for such layers."""
    from toolkit.ntk.structured import _layer_costs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1),
                          nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).to(DT)
    x = torch.randn(7, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=DT)
    ctx = empirical._make_context(model, x)
    convs = [s for s in ctx.layers if s.kind == "conv2d"]
    assert len(convs) == 2
    for s in convs:
        gram, explicit = _layer_costs(s, 7, 7, 3, "trace")
        assert explicit < gram
    ref = ntk.empirical_ntk(model, x, mode="full", method="jacobian", progress=False)
    for chunk in (2, 7):
        k = ntk.empirical_ntk(model, x, mode="full", method="structured", chunk_size=chunk,
                              progress=False)
        torch.testing.assert_close(k, ref, rtol=1e-10, atol=1e-12)
    per, pair = empirical._bytes_per_sample(ctx, "structured", "trace", 7)
    assert pair == 2.0 * 1**2 * (1 + 3) * 8  # only the head's one-position Gram (O = 3, f64)
    per_gram, pair_gram = empirical._bytes_per_sample(ctx, "structured", "trace", None)
    assert pair_gram == 2.0 * 16**2 * (1 + 3) * 8  # as if the Grams of the 16 positions were built


def test_cnn_with_eval_batchnorm_falls_back_for_the_norm_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3)).to(DT)
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(6, 1, 4, 4, dtype=DT)
    cov = ntk.structured_coverage(model, x)
    assert set(cov.uncovered) == {"1"} and "BatchNorm2d" in cov.uncovered["1"]
    assert cov.fallback == ["1.weight", "1.bias"]
    ks = _all_methods(model, x, mode="full")
    j = _dense_jacobian(model, x)
    for m in METHODS:
        torch.testing.assert_close(ks[m], torch.einsum("aop,bqp->aboq", j, j), rtol=1e-9,
                                   atol=1e-10, msg=m)
    with pytest.raises(ValueError, match="eval"):
        ntk.empirical_ntk(model.train(), x, progress=False)
