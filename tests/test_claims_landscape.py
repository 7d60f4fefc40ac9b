"""Controls for notebook 02's claims: every predicate of ``toolkit.claims.landscape`` fails on a
negative control (the phenomenon absent) and holds on the notebook's toy procedure, on seeds
0, 1, 2 where the claim depends on the seed."""

import copy

import ipywidgets as widgets
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

import toolkit
from toolkit import claims, data, hessian, landscape, models, presets, train
from toolkit.widgets.landscape import surface_panel
from toolkit.widgets.panel import panel

pytestmark = pytest.mark.control

P = presets.get_preset("landscape", "toy")
SEEDS = (0, 1, 2)
C = claims.landscape


def _mixture_run(seed, n_classes=P.n_classes):
    train_set, _ = data.gaussian_mixture(P.n_samples, n_classes, P.dim,
                                         separation=P.separation, seed=seed)
    toolkit.seed_everything(seed)
    model = models.MLP(P.dim, P.widths, n_classes)
    init = copy.deepcopy(model)
    rec = landscape.TrajectoryRecorder()
    train.fit(model, train_set, epochs=P.epochs, batch_size=P.batch_size, lr=P.lr,
              momentum=P.momentum, callbacks=[rec], seed=seed, device="cpu", progress=False)
    return {"train": train_set, "init": init.eval(), "model": model.eval(), "rec": rec}


@pytest.fixture(scope="module")
def mixture():
    return {s: _mixture_run(s) for s in SEEDS}


# ------------------------------------------------------------------------------------- §1


@pytest.mark.parametrize("seed", SEEDS)
def test_monotone_path_holds_from_init_to_solution(mixture, seed):
    run = mixture[seed]
    path = landscape.interpolate(run["init"], "ce", run["train"], target=run["model"],
                                 alphas=np.linspace(-0.5, 1.5, 41), progress=False)
    assert C.monotone_path(path)


def test_monotone_path_fails_between_two_trained_nets(mixture):
    a, b = mixture[0]["model"], mixture[1]["model"]
    path = landscape.interpolate(a, "ce", mixture[0]["train"], target=b,
                                 alphas=np.linspace(-0.5, 1.5, 41), progress=False)
    verdict = C.monotone_path(path)
    assert not verdict and verdict["max_rise"] > 0.1


# ------------------------------------------------------------------------------------- §2


def _skip_runs(seed):
    digits, _ = data.load_digits(seed=seed)
    subset = data.subsample(digits, P.skip_n_train, seed=seed)
    runs = {}
    for skip in (True, False):
        toolkit.seed_everything(seed)
        net = models.ResNetMini(in_dim=64, width=P.skip_width, depth=P.skip_depth,
                                n_classes=10, skip=skip)
        rec = landscape.TrajectoryRecorder()
        h = train.fit(net, subset, optimizer="adam", lr=P.skip_lr, epochs=P.skip_epochs,
                      batch_size=P.skip_batch, callbacks=[rec], seed=seed, device="cpu",
                      progress=False)
        runs[skip] = (net, rec, h["train_loss"].to_numpy())
    return subset, runs


def _surface_at(net, rec, epoch, subset, seed):
    at = landscape.with_parameters(net, rec.trajectory[rec.epochs.index(epoch)])
    d1 = landscape.random_direction(at, normalization="filter", seed=seed + 1)
    d2 = landscape.random_direction(at, normalization="filter", seed=seed + 2)
    surf = landscape.surface_2d(at, "ce", subset, d1, d2, steps=P.steps, progress=False)
    return landscape.nonconvexity(surf)


@pytest.fixture(scope="module")
def skip_runs():
    return {s: _skip_runs(s) for s in SEEDS}


@pytest.mark.parametrize("seed", SEEDS)
def test_smoother_with_skips_at_matched_loss(skip_runs, seed):
    subset, runs = skip_runs[seed]
    target = max(losses[-1] for _, _, losses in runs.values())
    ncvx, loss = {}, {}
    for skip, (net, rec, losses) in runs.items():
        epoch = int(np.argmin(np.abs(np.log(losses / target))))
        ncvx[skip], loss[skip] = _surface_at(net, rec, epoch, subset, seed), losses[epoch]
    assert C.smoother_with_skips(ncvx[True], ncvx[False], loss[True], loss[False])


def test_smoother_with_skips_fails_for_two_nets_with_skips(skip_runs):
    subset, runs = skip_runs[0]
    net, rec, losses = runs[True]
    epoch = len(losses) - 1
    a = _surface_at(net, rec, epoch, subset, seed=0)
    b = _surface_at(net, rec, epoch, subset, seed=10)  # other random directions, same net
    verdict = C.smoother_with_skips(a, b, losses[epoch], losses[epoch])
    assert not verdict and verdict["loss_ratio"] == 1


def test_smoother_with_skips_fails_at_unmatched_loss():
    # a well-trained net against a badly trained one measures training, not architecture
    verdict = C.smoother_with_skips(0.1, 0.3, loss_skip=0.006, loss_plain=0.64)
    assert not verdict and verdict["loss_ratio"] > 100


def _rescale_surfaces(model, rescaled, train_set):
    x, _ = train_set.tensors
    same = torch.allclose(model(x), rescaled(x), rtol=1e-4, atol=1e-4)
    out = {}
    for norm in ("filter", "none"):
        surfs = []
        for net in (model, rescaled):
            e1 = landscape.random_direction(net, normalization=norm, seed=1)
            e2 = landscape.random_direction(net, normalization=norm, seed=2)
            span = 1.0 if norm == "filter" else 0.5
            surfs.append(landscape.surface_2d(net, "ce", train_set, e1, e2,
                                              xrange=(-span, span), yrange=(-span, span),
                                              steps=9, metrics=("loss",), progress=False))
        out[norm] = landscape.relative_difference(*surfs)
    return same, out["filter"], out["none"]


def test_filter_normalisation_invariant_under_balanced_rescaling(mixture):
    run = mixture[0]
    rescaled = landscape.balanced_rescale(run["model"], P.rescale_alpha)
    assert C.filter_normalisation_invariant(*_rescale_surfaces(run["model"], rescaled,
                                                               run["train"]))


def test_filter_normalisation_invariant_fails_for_a_one_layer_rescaling(mixture):
    run = mixture[0]
    changed = copy.deepcopy(run["model"])
    first = next(m for m in changed.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        first.weight.mul_(P.rescale_alpha)  # not compensated in the next layer
    verdict = C.filter_normalisation_invariant(*_rescale_surfaces(run["model"], changed,
                                                                  run["train"]))
    assert not verdict and not verdict["same_function"]


# ------------------------------------------------------------------------------------- §3


@pytest.mark.parametrize("seed", SEEDS)
def test_trajectory_in_pca_plane(mixture, seed):
    rec = mixture[seed]["rec"]
    plane = landscape.pca_directions(rec)
    verdict = C.trajectory_in_plane(rec.trajectory, plane.d1, plane.d2)
    assert verdict
    assert verdict["captured"] == pytest.approx(plane.explained_variance_ratio.sum(), rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_trajectory_not_in_a_random_plane(mixture, seed):
    run = mixture[seed]
    r1 = landscape.random_direction(run["model"], normalization="filter", seed=seed + 11)
    r2 = landscape.random_direction(run["model"], normalization="filter", seed=seed + 12)
    verdict = C.trajectory_in_plane(run["rec"].trajectory, r1, r2)
    assert not verdict and verdict["captured"] < 0.05


# ------------------------------------------------------------------------------------- §4


@pytest.mark.parametrize("seed", SEEDS)
def test_class_outliers_on_the_trained_mixture_net(mixture, seed):
    run = mixture[seed]
    top = hessian.top_eigenvalues(run["model"], "ce", run["train"], k=P.hess_k)
    assert C.class_outliers(top.eigenvalues, P.n_classes)


def test_class_outliers_fail_without_classes():
    # least squares on isotropic inputs: a Marchenko-Pastur bulk, no class structure
    g = torch.Generator().manual_seed(0)
    x = torch.randn(P.n_samples, P.dim, generator=g)
    y = torch.randn(P.n_samples, 1, generator=g)
    net = torch.nn.Linear(P.dim, 1)
    top = hessian.top_eigenvalues(net, "mse", TensorDataset(x, y), k=P.hess_k)
    verdict = C.class_outliers(top.eigenvalues, P.n_classes)
    assert not verdict and verdict["gap"] < 2


def test_class_outliers_fail_for_the_wrong_number_of_classes():
    run = _mixture_run(0, n_classes=6)
    top = hessian.top_eigenvalues(run["model"], "ce", run["train"], k=P.hess_k)
    assert C.class_outliers(top.eigenvalues, 6)
    assert not C.class_outliers(top.eigenvalues, P.n_classes)


@pytest.mark.parametrize("seed", SEEDS)
def test_slq_matches_hutchpp_within_standard_errors(mixture, seed):
    run = mixture[seed]
    tr = hessian.trace(run["model"], "ce", run["train"], n_samples=P.trace_samples,
                       method="hutch++", progress=False)
    density = hessian.spectral_density(run["model"], "ce", run["train"], n_vectors=P.slq_vectors,
                                       steps=P.slq_steps, seed=seed, progress=False)
    verdict = C.slq_matches_trace(density, tr)
    assert verdict, verdict


def test_slq_does_not_match_the_trace_of_another_hessian(mixture):
    run = mixture[0]
    # the same function, rescaled (section 2): a different Hessian with a different trace
    rescaled = landscape.balanced_rescale(run["model"], 2.0)
    other = hessian.trace(rescaled, "ce", run["train"], n_samples=P.trace_samples,
                          method="hutch++", progress=False)
    density = hessian.spectral_density(run["model"], "ce", run["train"], n_vectors=P.slq_vectors,
                                       steps=P.slq_steps, seed=0, progress=False)
    verdict = C.slq_matches_trace(density, other)
    assert not verdict and verdict["z"] > 3


# ------------------------------------------------------------------------------------- §5


def _flat_lambda(seed, **kw):
    digits, _ = data.load_digits(seed=seed)
    subset = data.subsample(digits, P.flat_n_train, seed=seed)
    toolkit.seed_everything(seed)
    net = models.MLP(64, P.flat_widths, 10)
    train.fit(net, subset, lr=P.flat_lr, seed=seed, device="cpu", progress=False, **kw)
    return hessian.top_eigenvalues(net.eval(), "ce", subset).eigenvalues[0]


@pytest.fixture(scope="module")
def flat():
    small = dict(batch_size=P.flat_small_batch, epochs=P.flat_small_epochs)
    return {s: {"sgd": _flat_lambda(s, **small),
                "gd": _flat_lambda(s, batch_size=None, epochs=P.flat_gd_epochs),
                "sam": _flat_lambda(s, optimizer="sam", rho=P.flat_rho, **small),
                "sam_rho0": _flat_lambda(s, optimizer="sam", rho=1e-4, **small)}
            for s in SEEDS}


@pytest.mark.parametrize("seed", SEEDS)
def test_sharpness_order(flat, seed):
    lam = flat[seed]
    assert C.sharpness_order(lam["gd"], lam["sgd"], lam["sam"])


@pytest.mark.parametrize("seed", SEEDS)
def test_sharpness_order_fails_without_large_batch_or_sam_radius(flat, seed):
    lam = flat[seed]
    # "GD" replaced by the same small-batch SGD, SAM by SAM with a vanishing radius
    assert not C.sharpness_order(lam["sgd"], lam["sgd"], lam["sam_rho0"])


# ------------------------------------------------------------------------------------- §6


def _eos_history(seed, lr):
    digits, _ = data.load_digits(seed=seed)
    subset = data.subsample(digits, P.eos_n_train, seed=seed)
    toolkit.seed_everything(seed)
    net = models.MLP(64, P.eos_widths, 10, activation="tanh", sigma_w=P.eos_sigma_w)
    tracker = hessian.LambdaMaxTracker("mse", subset, tol=3e-2)
    return train.fit(net, subset, loss="mse", lr=lr, epochs=P.eos_epochs, callbacks=[tracker],
                     callback_every=P.eos_every, seed=seed, device="cpu", progress=False)


@pytest.fixture(scope="module")
def eos():
    return {(s, lr): _eos_history(s, lr) for s in SEEDS for lr in (P.eos_lr, P.eos_control_lr)}


@pytest.mark.parametrize("seed", SEEDS)
def test_edge_of_stability_at_large_step(eos, seed):
    verdict = C.edge_of_stability(eos[seed, P.eos_lr], P.eos_lr)
    assert verdict, verdict


@pytest.mark.parametrize("seed", SEEDS)
def test_edge_of_stability_fails_at_small_step(eos, seed):
    assert not C.edge_of_stability(eos[seed, P.eos_control_lr], P.eos_control_lr)
    assert C.below_stability_threshold(eos[seed, P.eos_control_lr], P.eos_control_lr)


@pytest.mark.parametrize("seed", SEEDS)
def test_below_stability_threshold_fails_at_the_edge(eos, seed):
    assert not C.below_stability_threshold(eos[seed, P.eos_lr], P.eos_lr)


def test_edge_of_stability_fails_for_a_single_late_crossing():
    # the old toy run's shape: sharpening, one crossing late in the run, a 20 % overshoot
    epochs = np.arange(0, 241)
    lam = np.where(epochs % 12 == 0, np.linspace(0.6, 1.2, len(epochs)), np.nan)
    hist = pd.DataFrame({"epoch": epochs, "lambda_max": lam,
                         "train_loss": np.linspace(0.2, 0.01, len(epochs))})
    verdict = C.edge_of_stability(hist, 2.0)
    assert not verdict and verdict["crossings"] == 1


# ------------------------------------------------------------------------------------- §7


def _class_table(seed, balanced):
    digits, _ = data.load_digits(seed=seed)
    imb = data.imbalance(digits, ratio=P.imb_ratio, profile="step", seed=seed)
    ds = data.subsample(digits, len(imb), seed=seed) if balanced else imb
    toolkit.seed_everything(seed)
    net = models.MLP(64, P.imb_widths, 10)
    train.fit(net, ds, lr=P.imb_lr, momentum=0.9, epochs=P.imb_epochs, batch_size=P.imb_batch,
              seed=seed, device="cpu", progress=False)
    return hessian.class_hessian(net.eval(), "ce", ds, tol=1e-2, progress=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_minority_saddles_with_imbalance(seed):
    table = _class_table(seed, balanced=False)
    minority = sorted(table.loc[table["n_samples"] < table["n_samples"].max(), "class"])
    verdict = C.minority_saddles(table)
    assert verdict, verdict
    assert C.minority_saddles(table, minority=minority).values == verdict.values


@pytest.mark.parametrize("seed", SEEDS)
def test_minority_saddles_fail_on_balanced_classes(seed):
    imb_minority = range(5, 10)  # the classes the step profile makes small
    table = _class_table(seed, balanced=True)
    assert not C.minority_saddles(table, minority=imb_minority)


# ------------------------------------------------------------------------------------- §8


def test_panel_draws_the_surface_panel(mixture):
    run = mixture[0]
    p = surface_panel(run["model"], "ce", run["train"], run["rec"], steps=5, seed=0)
    assert claims.panel_drawn(p, min_axes=2)


@pytest.mark.parametrize("draw", ["nothing", "empty axes"])
def test_panel_draws_fails_for_a_panel_that_draws_nothing(draw):
    def draw_fn(fig, n):
        if draw == "empty axes":
            fig.subplots(1, 2)

    p = panel(draw_fn, n=widgets.IntSlider(value=1, min=0, max=2))
    assert not claims.panel_drawn(p, min_axes=2)
