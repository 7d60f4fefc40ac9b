"""toolkit.hessian: every estimate is checked against an exact dense computation or a closed form."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from toolkit import hessian, models, train


def _problem(n=40, d=5, classes=3, hidden=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    torch.manual_seed(seed)
    model = models.MLP(d, [hidden], classes, activation="tanh")
    return model, x, y


def _exact_hessian(model, loss_fn, x, y):
    """Dense Hessian from torch.autograd.functional.hessian (independent of toolkit)."""
    named = dict(model.named_parameters())
    names = list(named)

    def f(*flat):
        return loss_fn(functional_call(model, dict(zip(names, flat)), (x,)), y)

    blocks = torch.autograd.functional.hessian(f, tuple(p.detach() for p in named.values()))
    sizes = [named[n].numel() for n in names]
    return torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j])
                                 for j in range(len(names))], dim=1)
                      for i in range(len(names))], dim=0).double()


@pytest.mark.parametrize("method", hessian.HVP_METHODS)
def test_hvp_matches_explicit_hessian_accumulated_over_batches(method):
    model, x, y = _problem()
    exact = _exact_hessian(model, F.cross_entropy, x, y)
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(exact.shape[0], generator=gen)
    # batches of 15 + 15 + 10: the mean over batches must be weighted by their sizes
    hv = hessian.hvp(model, F.cross_entropy, (x, y), v, batch_size=15, method=method)
    torch.testing.assert_close(hv.double(), exact @ v.double(), rtol=1e-4, atol=1e-6)
    # dict form, and a DataLoader as data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    op = hessian.HessianOperator(model, F.cross_entropy, loader)
    hv_dict = hessian.hvp(model, F.cross_entropy, loader, op.unflatten(v), method=method)
    torch.testing.assert_close(op.flatten(hv_dict).double(), exact @ v.double(), rtol=1e-4,
                               atol=1e-6)


def test_forward_over_reverse_equals_reverse_over_reverse_and_dense_is_symmetric():
    model, x, y = _problem(hidden=8, seed=3)
    a = hessian.HessianOperator(model, "ce", (x, y), method="fwd-rev").dense().double()
    b = hessian.HessianOperator(model, "ce", (x, y), method="rev-rev").dense().double()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a, a.T, rtol=1e-4, atol=1e-6)


def test_hvp_restricted_to_some_parameters_is_the_principal_block():
    model, x, y = _problem()
    exact = _exact_hessian(model, F.cross_entropy, x, y)
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    start = sum(sizes[:2])  # head.weight, head.bias are the last two
    op = hessian.HessianOperator(model, "ce", (x, y), params=names[2:])
    torch.testing.assert_close(op.dense().double(), exact[start:, start:], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_top_eigenvalues_match_dense_eigvalsh(which):
    model, x, y = _problem(hidden=8, seed=2)
    exact = torch.linalg.eigvalsh(_exact_hessian(model, F.cross_entropy, x, y)).numpy()
    res = hessian.top_eigenvalues(model, F.cross_entropy, (x, y), k=3, which=which, tol=1e-6,
                                  max_iter=300)
    expected = exact[::-1][:3] if which == "largest" else exact[:3]
    np.testing.assert_allclose(res.eigenvalues, expected, rtol=1e-3, atol=1e-5)
    assert exact.min() < 0 < exact.max()  # a non-convex point: both ends are meaningful
    # the eigenvectors satisfy H u = λ u
    op = hessian.HessianOperator(model, F.cross_entropy, (x, y))
    for lam, u in zip(res.eigenvalues, res.eigenvectors):
        u = op.flatten(u)
        assert abs(float(u.norm()) - 1) < 1e-4
        torch.testing.assert_close(op.matvec(u), lam * u, rtol=0, atol=1e-3 * abs(lam) + 1e-5)


@pytest.fixture(scope="module")
def trained_digits_nets():
    """Digits MLPs 64-24-10 (1,810 parameters) trained to low loss on 400 samples, in float64,
    with their dense Hessian spectra: thousands of eigenvalues within 1e-3·λ_max of 0 and a few
    hundred small negative ones, the cluster that fools a shifted, restarted Lanczos."""
    from torch.utils.data import TensorDataset

    from toolkit import data, models, train

    digits = data.subsample(data.load_digits(seed=0)[0], 400, seed=0)
    digits = TensorDataset(digits.tensors[0].double(), digits.tensors[1])
    nets = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        model = models.MLP(64, [24], 10).double()
        train.fit(model, digits, epochs=60, batch_size=50, lr=0.1, momentum=0.9, seed=seed,
                  progress=False)
        model.eval()
        op = hessian.HessianOperator(model, "ce", digits.tensors)
        dense = op.dense()
        nets.append((model, digits.tensors, torch.linalg.eigvalsh((dense + dense.T) / 2).numpy()))
    return nets


@pytest.mark.parametrize("index", [0, 1, 2])
def test_smallest_eigenvalues_of_trained_nets_match_dense_eigvalsh(trained_digits_nets, index):
    model, (x, y), exact = trained_digits_nets[index]
    assert (np.abs(exact) < 1e-3 * exact[-1]).sum() > 1000 and exact[0] < 0  # the cluster is there
    for k in (1, 3):
        res = hessian.top_eigenvalues(model, "ce", (x, y), k=k, which="smallest", tol=1e-3)
        assert res.converged
        # within tol of the true k smallest (relative to each value), never an interior value
        np.testing.assert_allclose(res.eigenvalues, exact[:k], rtol=2e-3)
        assert res.n_hvp <= 3 * 100 * k + k


@pytest.mark.parametrize("index", [0, 1, 2])
def test_largest_eigenvalues_tested_every_step_match_dense_and_the_arpack_path(
        trained_digits_nets, index, monkeypatch):
    """The unrestarted Lanczos for the largest end meets its guarantee (within tol·θ of the true
    values) in no more products than ARPACK, which is used when the basis would not fit in memory
    (forced here) and gives the same values."""
    from toolkit.hessian import eigen

    model, (x, y), exact = trained_digits_nets[index]
    for k in (1, 3):
        res = hessian.top_eigenvalues(model, "ce", (x, y), k=k, tol=1e-3)
        assert res.converged
        np.testing.assert_allclose(res.eigenvalues, exact[::-1][:k], rtol=1e-3)
        with monkeypatch.context() as m:
            m.setattr(eigen, "_basis_capacity", lambda op, minimum: minimum)
            arpack = hessian.top_eigenvalues(model, "ce", (x, y), k=k, tol=1e-3)
        np.testing.assert_allclose(arpack.eigenvalues, res.eigenvalues, rtol=1e-3)
        assert res.n_hvp <= arpack.n_hvp  # ARPACK fills its Krylov space before testing


def test_largest_eigenvalue_reports_not_converged_when_the_budget_is_too_small(
        trained_digits_nets):
    model, (x, y), exact = trained_digits_nets[0]
    with pytest.warns(UserWarning, match="did not converge"):
        res = hessian.top_eigenvalues(model, "ce", (x, y), tol=1e-12, max_iter=3)
    assert not res.converged and res.n_hvp == 3
    assert res.eigenvalues[0] <= exact[-1] + 1e-12  # a Ritz value: a lower bound on λ_max


def test_smallest_eigenvalue_reports_not_converged_when_the_budget_is_too_small(
        trained_digits_nets):
    model, (x, y), exact = trained_digits_nets[0]
    with pytest.warns(UserWarning, match="did not converge"):
        res = hessian.top_eigenvalues(model, "ce", (x, y), which="smallest", tol=1e-3, max_iter=8)
    assert not res.converged
    assert res.eigenvalues[0] >= exact[0] - 1e-12  # a Ritz value: an upper bound on λ_min


def test_power_iteration_with_deflation_on_a_convex_quadratic():
    # linear least squares: H = 2 XᵀX / N (bias column included), positive semi-definite
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 6, generator=gen), torch.randn(50, 1, generator=gen)
    model = nn.Linear(6, 1)
    xb = torch.cat([x, torch.ones(50, 1)], dim=1).double()
    exact = np.sort(torch.linalg.eigvalsh(2 * xb.T @ xb / 50).numpy())[::-1]
    res = hessian.top_eigenvalues(model, F.mse_loss, (x, y), k=2, method="power", tol=1e-9,
                                  max_iter=2000)
    np.testing.assert_allclose(res.eigenvalues, exact[:2], rtol=1e-4)
    low = hessian.top_eigenvalues(model, F.mse_loss, (x, y), which="smallest", method="power",
                                  tol=1e-10, max_iter=5000)
    np.testing.assert_allclose(low.eigenvalues[0], exact[-1], rtol=1e-2, atol=1e-4)


def test_hutchinson_is_within_its_standard_error_of_the_exact_trace():
    model, x, y = _problem(hidden=8, seed=4)
    h = _exact_hessian(model, F.cross_entropy, x, y)
    exact = float(torch.trace(h))
    est = hessian.trace(model, F.cross_entropy, (x, y), n_samples=400, seed=0, progress=False)
    # the variance of zᵀHz for Rademacher z is 2 Σ_{i≠j} H_ij²: use the exact standard error
    sd = math.sqrt(2 * (float((h**2).sum()) - float((torch.diagonal(h) ** 2).sum())) / 400)
    assert abs(est.trace - exact) < 4 * sd
    assert est.n_hvp == 400
    assert abs(est.stderr - sd) < 0.5 * sd  # the reported standard error is honest


def test_hutch_plus_plus_is_exact_for_low_rank_hessians():
    # least squares with 3 samples and 10 weights: rank(H) = 3 <= n_samples // 3
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 10, generator=gen), torch.randn(3, 1, generator=gen)
    model = nn.Linear(10, 1, bias=False)
    exact = float(torch.trace(2 * x.T @ x / 3))
    res = hessian.trace(model, F.mse_loss, (x, y), n_samples=12, method="hutch++",
                        progress=False)
    assert res.trace == pytest.approx(exact, rel=1e-4)
    plain = hessian.trace(model, F.mse_loss, (x, y), n_samples=12, progress=False)
    assert abs(plain.trace - exact) > 1e-3  # plain Hutchinson is not exact here


def test_lanczos_quadrature_weights_are_squared_first_components():
    # Gauss quadrature with m nodes is exact for polynomials of degree <= 2m-1:
    # vᵀA^k v = Σ_j τ_j θ_j^k with τ_j = (U_1j)², for ‖v‖ = 1.
    gen = torch.Generator().manual_seed(0)
    b = torch.randn(30, 30, generator=gen, dtype=torch.float64)
    a = (b + b.T) / 2
    v = torch.randn(30, generator=gen, dtype=torch.float64)
    v /= v.norm()
    alpha, beta = hessian.lanczos(lambda u: a @ u, v, steps=5)
    theta, u = np.linalg.eigh(np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1))
    tau = u[0] ** 2
    for k in range(10):
        exact = float(v @ torch.linalg.matrix_power(a, k) @ v)
        assert np.sum(tau * theta**k) == pytest.approx(exact, rel=1e-8, abs=1e-8)
    assert abs(np.sum(np.abs(u[0]) * theta) - float(v @ a @ v)) > 1e-3  # unsquared is wrong


def test_spectral_density_integrates_to_one_and_its_mean_is_trace_over_n():
    model, x, y = _problem(hidden=4, seed=5)
    h = _exact_hessian(model, F.cross_entropy, x, y)
    n = h.shape[0]
    dens = hessian.spectral_density(model, F.cross_entropy, (x, y), n_vectors=30, steps=8,
                                    progress=False)
    assert dens.integral() == pytest.approx(1.0, abs=1e-3)
    for w in dens.weights:
        assert np.sum(w) == pytest.approx(1.0, abs=1e-6)
    # each vector's first moment is zᵀHz/n (Rademacher z): mean over 30 vectors
    sd = math.sqrt(2 * (float((h**2).sum()) - float((torch.diagonal(h) ** 2).sum())) / 30) / n
    assert abs(dens.moment(1) - float(torch.trace(h)) / n) < 4 * sd
    assert dens.trace_estimate == pytest.approx(n * dens.moment(1))
    # with n Lanczos steps the Ritz values are the exact eigenvalues
    full = hessian.spectral_density(model, F.cross_entropy, (x, y), n_vectors=1, steps=n,
                                    progress=False)
    exact = torch.linalg.eigvalsh(h).numpy()
    assert full.nodes[0].max() == pytest.approx(exact.max(), rel=1e-3)
    assert full.nodes[0].min() == pytest.approx(exact.min(), rel=1e-3, abs=1e-5)


def test_class_hessian_matches_the_dense_hessian_of_each_class_loss():
    model, x, y = _problem(n=60, hidden=6, seed=6)
    table = hessian.class_hessian(model, F.cross_entropy, (x, y), tol=1e-6, max_iter=300,
                                  progress=False)
    assert list(table["class"]) == [0, 1, 2]
    for row in table.itertuples():
        sel = y == row[1]
        ev = torch.linalg.eigvalsh(_exact_hessian(model, F.cross_entropy, x[sel], y[sel]))
        assert row.n_samples == int(sel.sum())
        assert row.lambda_max == pytest.approx(float(ev.max()), rel=1e-3)
        assert row.lambda_min == pytest.approx(float(ev.min()), rel=1e-3, abs=1e-5)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sharpness_on_a_quadratic_matches_the_closed_form(adaptive):
    # L(θ) = ‖Xw + b − y‖²/N is exactly quadratic: L(θ+ε) − L(θ) = gᵀε + ½ εᵀHε
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=gen), torch.randn(30, 1, generator=gen)
    model = nn.Linear(4, 1)
    xb = torch.cat([x, torch.ones(30, 1)], dim=1).double()
    theta = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()]).double()
    g = 2 * xb.T @ (xb @ theta - y.double().reshape(-1)) / 30
    h = 2 * xb.T @ xb / 30
    t = theta.abs() + 0.01 if adaptive else torch.ones_like(theta)  # ASAM: T = |θ| + η
    eps = 0.1 * t**2 * g / (t * g).norm()
    expected = float(g @ eps + 0.5 * eps @ h @ eps)
    res = hessian.sharpness(model, F.mse_loss, (x, y), rho=0.1, adaptive=adaptive)
    assert res.sharpness == pytest.approx(expected, rel=1e-3)
    assert res.grad_norm == pytest.approx(float((t * g).norm()), rel=1e-4)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_on_a_quadratic_matches_the_closed_form(adaptive):
    # L(θ) = ½ θᵀAθ − bᵀθ: one SAM step is θ' = θ − η ∇L(θ + ε), ε = ρ T²g / ‖Tg‖, g = Aθ − b,
    # T = I (SAM, Foret et al. 2021) or diag(|θ|) + η (ASAM, Kwon et al. 2021, η = 0.01).
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    a = m @ m.T + torch.eye(5, dtype=torch.float64)
    b = torch.randn(5, generator=gen, dtype=torch.float64)
    theta0 = torch.randn(5, generator=gen, dtype=torch.float64)
    lr, rho = 0.05, 0.2
    p = nn.Parameter(theta0.clone())
    opt = train.SAM([p], torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr)

    def closure():
        opt.zero_grad()
        loss = 0.5 * p @ a @ p - b @ p
        loss.backward()
        return loss

    opt.step(closure)
    g = a @ theta0 - b
    t = theta0.abs() + 0.01 if adaptive else torch.ones(5, dtype=torch.float64)
    eps = rho * t**2 * g / (t * g).norm()
    expected = theta0 - lr * (a @ (theta0 + eps) - b)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-10)
    # and it is not the plain gradient step
    assert float((expected - (theta0 - lr * g)).norm()) > 1e-3


def test_asam_perturbs_zero_weights_through_its_offset():
    # Kwon et al. 2021: T = |w| + η. With η = 0 a zero-initialised bias is never perturbed.
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    nn.init.zeros_(model.bias)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    with_offset = hessian.sharpness(model, F.cross_entropy, (x, y), rho=0.1, adaptive=True)
    without = hessian.sharpness(model, F.cross_entropy, (x, y), rho=0.1, adaptive=True,
                                asam_eta=0.0)
    assert float(with_offset.epsilon["bias"].abs().min()) > 0
    assert float(without.epsilon["bias"].abs().max()) == 0
    # ‖T⁻¹ε‖ = ρ exactly: the constraint the first-order maximiser saturates
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    eps = torch.cat([with_offset.epsilon[n].reshape(-1) for n, _ in model.named_parameters()])
    assert float((eps / train.sam_scale(theta, True)).norm()) == pytest.approx(0.1, rel=1e-5)


def test_batchnorm_in_train_mode_is_refused_and_eval_mode_works():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        hessian.top_eigenvalues(model, "ce", (x, y))
    model.eval()
    assert np.isfinite(hessian.top_eigenvalues(model, "ce", (x, y)).eigenvalues[0])


class _Noisy(nn.Module):
    """Stochastic in training mode, but not a Dropout/BatchNorm subclass."""

    def forward(self, x):
        return x + 0.1 * torch.randn_like(x) if self.training else x


def test_nondeterministic_model_is_detected_by_two_identical_products():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), _Noisy(), nn.Linear(8, 2))
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    with pytest.raises(RuntimeError, match=r"model\.eval\(\)"):
        hessian.trace(model, "ce", (x, y), n_samples=3, progress=False)
    model.eval()
    hessian.trace(model, "ce", (x, y), n_samples=3, progress=False)


def test_bad_arguments_raise_clear_errors():
    model, x, y = _problem()
    with pytest.raises(ValueError, match="which"):
        hessian.top_eigenvalues(model, "ce", (x, y), which="middle")
    with pytest.raises(ValueError, match="k="):
        hessian.top_eigenvalues(model, "ce", (x, y), k=10_000)
    with pytest.raises(ValueError, match="method"):
        hessian.trace(model, "ce", (x, y), method="exact")
    with pytest.raises(ValueError, match="not parameters"):
        hessian.HessianOperator(model, "ce", (x, y), params=["nope.weight"])
    with pytest.raises(ValueError, match="shape"):
        hessian.hvp(model, "ce", (x, y), {"head.bias": torch.zeros(7)})
    with pytest.raises(TypeError, match="loss_fn"):
        hessian.trace(model, 3, (x, y))


def test_same_seed_same_numbers():
    model, x, y = _problem()
    a = hessian.trace(model, "ce", (x, y), n_samples=5, seed=3, progress=False)
    b = hessian.trace(model, "ce", (x, y), n_samples=5, seed=3, progress=False)
    assert a.trace == b.trace
    d1 = hessian.spectral_density(model, "ce", (x, y), n_vectors=2, steps=10, seed=1,
                                  progress=False)
    d2 = hessian.spectral_density(model, "ce", (x, y), n_vectors=2, steps=10, seed=1,
                                  progress=False)
    np.testing.assert_array_equal(d1.density, d2.density)


def test_lambda_max_tracker_in_fit_reports_the_top_eigenvalue():
    model, x, y = _problem(seed=7)
    tracker = hessian.LambdaMaxTracker(F.cross_entropy, (x, y), tol=1e-6, max_iter=300)
    hist = train.fit(model, (x, y), epochs=3, lr=0.5, callbacks=[tracker], progress=False)
    assert "lambda_max" in hist.columns and hist["lambda_max"].notna().all()
    exact = torch.linalg.eigvalsh(_exact_hessian(model.eval(), F.cross_entropy, x, y)).max()
    assert hist["lambda_max"].iloc[-1] == pytest.approx(float(exact), rel=1e-3)


def test_minority_majority_splits_by_class_size():
    import pandas as pd
    table = pd.DataFrame({"class": [0, 1, 2, 3], "n_samples": [50, 50, 10, 5],
                          "lambda_min": [-0.01, -0.03, -0.2, -0.4]})
    minority, majority = hessian.minority_majority(table)
    assert minority == pytest.approx(-0.3) and majority == pytest.approx(-0.02)
    with pytest.raises(ValueError, match="no minority"):
        hessian.minority_majority(table.assign(n_samples=50))


def test_old_name_eigen_warns_and_is_the_result_class():
    model, x, y = _problem()
    with pytest.warns(DeprecationWarning, match="Eigenpairs"):
        old = hessian.Eigen
    assert old is hessian.Eigenpairs
    assert isinstance(hessian.top_eigenvalues(model, "ce", (x, y)), old)


# ---------------------------------------------------- first-order graph reuse (PyHessian-style)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_graph_reuse_hvp_equals_the_streaming_hvp_and_the_dense_hessian(loss):
    model, x, y = _problem(hidden=7, seed=2)
    if loss == "mse":
        y = torch.randn(len(x), 3, generator=torch.Generator().manual_seed(4))
    loss_fn = F.cross_entropy if loss == "ce" else F.mse_loss
    exact = _exact_hessian(model, loss_fn, x, y)
    kept = hessian.HessianOperator(model, loss_fn, (x, y), batch_size=15, method="rev-rev")
    streamed = hessian.HessianOperator(model, loss_fn, (x, y), batch_size=15, method="rev-rev",
                                       graph_budget=0)
    assert kept.uses_graph and not streamed.uses_graph
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):  # the kept graph serves many products
        v = torch.randn(kept.numel, generator=gen)
        hv = kept.matvec(v)
        torch.testing.assert_close(hv, streamed.matvec(v), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(hv.double(), exact @ v.double(), rtol=1e-4, atol=1e-6)
    assert kept.n_hvp == 3
    torch.testing.assert_close(kept.dense().double(), exact, rtol=1e-4, atol=1e-6)


def test_graph_reuse_on_a_parameter_block_is_the_principal_block():
    model, x, y = _problem()
    names = [n for n, _ in model.named_parameters()]
    exact = _exact_hessian(model, F.cross_entropy, x, y)
    op = hessian.HessianOperator(model, "ce", (x, y), params=names[2:], method="rev-rev")
    assert op.uses_graph
    k = exact.shape[0] - op.numel
    torch.testing.assert_close(op.dense().double(), exact[k:, k:], rtol=1e-4, atol=1e-6)


def test_graph_reuse_falls_back_to_streaming_above_the_budget_and_for_loaders():
    from toolkit.hessian import _graph as _hessian_graph

    model, x, y = _problem()
    op = hessian.HessianOperator(model, "ce", (x, y), method="rev-rev")
    need = _hessian_graph.graph_bytes(op, op._batches)
    assert op.uses_graph and need > 0
    assert hessian.HessianOperator(model, "ce", (x, y), method="rev-rev",
                                   graph_budget=need).uses_graph
    assert not hessian.HessianOperator(model, "ce", (x, y), method="rev-rev",
                                       graph_budget=need - 1).uses_graph
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    assert not hessian.HessianOperator(model, "ce", loader, method="rev-rev").uses_graph
    assert not hessian.HessianOperator(model, "ce", (x, y), method="fwd-rev").uses_graph
    # the estimate grows with the data: the budget decides by size
    big = hessian.HessianOperator(model, "ce", (x.repeat(4, 1), y.repeat(4)), method="rev-rev")
    assert _hessian_graph.graph_bytes(big, big._batches) > need


@pytest.mark.parametrize("graph_budget", [None, 0])
def test_nondeterminism_is_detected_with_and_without_the_kept_graph(graph_budget):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), _Noisy(), nn.Linear(8, 2))
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    with pytest.raises(RuntimeError, match=r"model\.eval\(\)"):
        hessian.HessianOperator(model, "ce", (x, y), method="rev-rev", graph_budget=graph_budget)
    model.eval()
    op = hessian.HessianOperator(model, "ce", (x, y), method="rev-rev", graph_budget=graph_budget)
    assert op.uses_graph == (graph_budget is None)


def test_a_kept_graph_is_rebuilt_when_the_parameters_change_in_place():
    model, x, y = _problem()
    op = hessian.HessianOperator(model, "ce", (x, y), method="rev-rev")
    v = torch.randn(op.numel, generator=torch.Generator().manual_seed(0))
    before = op.matvec(v)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # as an optimiser step would: the operator's parameters are views
    after = op.matvec(v)
    assert op.uses_graph and float((after - before).norm()) > 1e-3 * float(before.norm())
    torch.testing.assert_close(after.double(), _exact_hessian(model, F.cross_entropy, x, y)
                               @ v.double(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("graph_budget", [None, 0])
def test_non_finite_gradients_and_products_raise(graph_budget):
    """The kept-graph check spends no product: a non-finite gradient is refused at
    construction, and every product is checked as it is made."""
    model, x, y = _problem()
    op = hessian.HessianOperator(model, "ce", (x, y), graph_budget=graph_budget)
    v = op.random_vector(torch.Generator().manual_seed(0))
    assert torch.isfinite(op.matvec(v)).all()
    v[3] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        op.matvec(v)
    with torch.no_grad():
        model.head.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="not finite"):
        hessian.HessianOperator(model, "ce", (x, y), graph_budget=graph_budget)


def test_lanczos_basis_stays_orthonormal_without_ghost_ritz_values():
    """Three-term recurrence plus one Gram-Schmidt pass (a second when DGKS asks): the float32
    basis of 80 steps on a spectrum with well-separated top values and a dense cluster is
    orthonormal to rounding, and the top Ritz values match the top eigenvalues once each (plain
    Lanczos would repeat the converged ones as ghosts)."""
    from toolkit.hessian._lanczos import lanczos_steps

    gen = torch.Generator().manual_seed(0)
    diag = torch.cat([torch.tensor([10.0, 8.0, 6.5]), torch.rand(2000, generator=gen)])
    v0 = torch.randn(diag.numel(), generator=gen)
    for alphas, betas, _beta, basis in lanczos_steps(lambda v: diag * v, v0, 80):  # noqa: B007
        pass
    gram = basis.double() @ basis.double().T
    assert float((gram - torch.eye(80, dtype=torch.float64)).abs().max()) < 1e-5
    t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    ritz = np.linalg.eigvalsh(t)[::-1]
    np.testing.assert_allclose(ritz[:3], [10.0, 8.0, 6.5], rtol=1e-5)
    assert ritz[3] < 1.0 + 1e-4  # no second copy of a converged top value


def test_lanczos_works_on_its_own_vectors_and_leaves_the_callers_products_alone():
    """The step updates its vectors in place; a product the caller's matvec hands back (here
    one kept tensor, overwritten and returned each call) is copied first, never changed, and
    the tridiagonal equals that of a matvec returning fresh tensors."""
    from toolkit.hessian.density import lanczos

    gen = torch.Generator().manual_seed(1)
    diag = torch.rand(300, generator=gen) + 0.5
    v0 = torch.randn(300, generator=gen)
    kept = torch.empty(300)
    seen = []

    def into_kept(v):
        torch.mul(diag, v, out=kept)
        seen.append(kept.clone())
        return kept

    a1, b1 = lanczos(into_kept, v0, 12)
    a2, b2 = lanczos(lambda v: diag * v, v0, 12)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    assert torch.equal(kept, seen[-1])  # the last product as the matvec left it
