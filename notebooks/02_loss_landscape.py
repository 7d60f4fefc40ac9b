# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Loss landscapes and curvature
#
# What does the loss look like around the parameters that training finds, and what does its
# shape say about optimisation and generalisation? This notebook looks in two complementary ways:
#
# * **slices**: the loss along one or two directions in parameter space (`toolkit.landscape`):
#   1-D interpolations, filter-normalised 2-D surfaces, the plane of the optimisation trajectory;
# * **curvature**: the Hessian of the loss through Hessian-vector products (`toolkit.hessian`):
#   its extreme eigenvalues (Lanczos), its trace (Hutchinson, Hutch++), its whole spectrum
#   (stochastic Lanczos quadrature), per-class Hessians and SAM's sharpness.
#
# Each section states a claim from a paper, tests it at toy scale, draws it, and ends with a
# **self-check** that asserts the claim. The toy preset runs in well under a minute on a laptop
# CPU; `PRESET = "full"` is the paper-scale version for a GPU.

# %%
# Install cell: written by `make hosting` from hosting.toml (the same in every notebook).
# On Colab, Kaggle or any kernel without the toolkit it pip-installs the package from the
# repository, keeps the torch already installed (a torch==<installed version> constraint), imports it.
import importlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile

try:
    import toolkit
except ModuleNotFoundError:
    host = ("Colab" if "google.colab" in sys.modules
            else "Kaggle" if "KAGGLE_KERNEL_RUN_TYPE" in os.environ else "plain")
    spec = os.environ.get("TOOLKIT_INSTALL_SPEC", "toolkit @ git+https://github.com/OWNER/REPO@main")
    try:
        torch_pin = "torch==" + importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_pin = ""  # no torch yet: pip installs its default build
    with tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False) as pins:
        pins.write(torch_pin + "\n")
    print(f"{host} kernel without the toolkit: pip install {spec!r}"
          + (f", keeping {torch_pin}" if torch_pin else "")
          + (" (needs the notebook's Internet setting on)" if host == "Kaggle" else ""))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--constraint", pins.name,
                    spec], check=True)
    importlib.invalidate_caches()
    import toolkit
print("toolkit", toolkit.__version__, "from", os.path.dirname(toolkit.__file__))

# %% tags=["parameters"]
PRESET = "toy"
SEED = 0
DEVICE = "auto"

# %%
import copy

import numpy as np
import pandas as pd
import torch

import toolkit
from toolkit import claims, data, hessian, landscape, models, plotting, presets, train
from toolkit.plotting import hessian as hplot
from toolkit.plotting import landscape as lplot
from toolkit.utils import self_check
from toolkit.widgets import landscape as landscape_widgets

preset = presets.get_preset("landscape", PRESET)
device = toolkit.get_device(DEVICE)
toolkit.seed_everything(SEED)
plotting.set_theme()
print(preset.name, "preset on", device)

# %%
from toolkit import exercises

ex = exercises.load("02")  # this notebook's exercises: ex.<name>.hint(), .check(...), .solution()

# %% [markdown]
# ## 1. The straight path from initialisation to solution is monotone
#
# **Claim** (Goodfellow, Vinyals & Saxe 2015, arXiv 1412.6544): along the straight line
# θ(α) = θ₀ + α(θ₁ − θ₀) from the initial parameters θ₀ to the trained θ₁, the loss of a
# network typically decreases monotonically — no barrier separates the start from the end,
# even though the landscape is non-convex.
#
# We train an MLP on a 4-class Gaussian mixture with SGD, keep every epoch's parameters
# (`TrajectoryRecorder`, used again in section 3) and evaluate the loss on 41 points of the
# line, all at once (`landscape.interpolate` vectorises over the points with `torch.func.vmap`).
# The claim is not automatic: between two networks trained from *different* seeds the same
# straight line crosses a barrier (≈ 0.5 in loss here; exercise 1 and the control test).

# %%
p = preset
train_set, test_set = data.gaussian_mixture(p.n_samples, p.n_classes, p.dim,
                                            separation=p.separation, seed=SEED)
n_classes = p.n_classes
toolkit.seed_everything(SEED)
model = models.MLP(p.dim, p.widths, n_classes)
init = copy.deepcopy(model)
recorder = landscape.TrajectoryRecorder()
history = train.fit(model, train_set, test=test_set, epochs=p.epochs, batch_size=p.batch_size,
                    lr=p.lr, momentum=p.momentum, callbacks=[recorder], seed=SEED,
                    device=device)
model.eval()
path = landscape.interpolate(init.to(device), "ce", train_set, target=model,
                             alphas=np.linspace(-0.5, 1.5, 41))
lplot.interpolation(path, title="loss from θ₀ (α=0) to θ₁ (α=1)")
print(history[["epoch", "train_loss", "train_acc", "test_acc"]].iloc[[0, -1]])

# %%
verdict = claims.landscape.monotone_path(path)
self_check(verdict, f"the loss falls monotonically from init ({verdict['start_loss']:.3f}) to the "
           f"solution ({verdict['end_loss']:.3f}); largest rise on [0, 1]: {verdict['max_rise']:.1e}")

# %% [markdown]
# ### Exercise 1.1 · The midpoint of the path, by hand
#
# Build the network halfway along the line, $\theta(\tfrac12) = (\theta_0 + \theta_1)/2$, from `init`
# ($\theta_0$) and `model` ($\theta_1$), and compute its cross-entropy on the whole `train_set` in eval
# mode. It should match the curve above at $\alpha = 0.5$. Hints: `ex.midpoint_loss.hint()`.

# %%
### BEGIN SOLUTION
mid = copy.deepcopy(model).eval()
with torch.no_grad():
    for p_mid, p0, p1 in zip(mid.parameters(), init.parameters(), model.parameters()):
        p_mid.copy_((p0 + p1) / 2)
    x, y = train_set.tensors
    answer = torch.nn.functional.cross_entropy(mid(x.to(device)), y.to(device))
### END SOLUTION
### STARTER answer = ...  # the training loss at (θ₀ + θ₁)/2

# %%
ex.midpoint_loss.check(answer, init=init, model=model, train_set=train_set)

# %% [markdown]
# ## 2. Filter-normalised surfaces: skip connections keep the landscape convex-looking
#
# **Claim** (Li, Xu, Taylor, Studer & Goldstein 2018, arXiv 1712.09913): plotting
# L(θ* + a·δ + b·η) for two random Gaussian directions, each *filter* (row) of δ rescaled to the
# norm of the same filter of θ*, makes surfaces of different networks comparable. Deep networks
# **without** skip connections have chaotic, highly non-convex surfaces; the same networks
# **with** skip connections have a smooth, nearly convex basin — and train much better.
#
# We train `ResNetMini` (residual MLP blocks) with and without its shortcuts on digits and
# measure non-convexity as the fraction of grid points where the 2×2 Hessian of the plotted
# surface has a negative eigenvalue (Li et al.'s |λ_min/λ_max| map, restricted to the plane).
# The net with shortcuts trains far faster, and a well-trained and a badly trained net differ
# for that reason alone, so we compare them **at matched training loss**: every epoch's
# parameters are kept, and each net's surface is drawn at the epoch whose training loss is
# closest to the final loss of the slower one.

# %%
digits_train, digits_test = data.load_digits(seed=SEED)
skip_train = (data.subsample(digits_train, p.skip_n_train, seed=SEED) if p.skip_n_train
              else digits_train)
skip_runs = {}
for skip in (True, False):
    toolkit.seed_everything(SEED)
    net = models.ResNetMini(in_dim=64, width=p.skip_width, depth=p.skip_depth,
                            n_classes=10, skip=skip)
    rec = landscape.TrajectoryRecorder()
    h = train.fit(net, skip_train, optimizer="adam", lr=p.skip_lr, epochs=p.skip_epochs,
                  batch_size=p.skip_batch, callbacks=[rec], seed=SEED, device=device,
                  progress=False)
    skip_runs[f"{'with' if skip else 'without'} skip connections"] = (net, rec, h)
target_loss = max(h["train_loss"].iloc[-1] for _, _, h in skip_runs.values())
surfaces, skip_rows = {}, {}
for name, (net, rec, h) in skip_runs.items():
    epoch = int(np.argmin(np.abs(np.log(h["train_loss"].to_numpy() / target_loss))))
    at = landscape.with_parameters(net, rec.trajectory[rec.epochs.index(epoch)])
    d1 = landscape.random_direction(at, normalization="filter", seed=SEED + 1)
    d2 = landscape.random_direction(at, normalization="filter", seed=SEED + 2)
    surfaces[name] = landscape.surface_2d(at, "ce", skip_train, d1, d2, steps=p.steps)
    skip_rows[name] = {"epoch": epoch, "train loss there": h["train_loss"].iloc[epoch],
                       "final train loss": h["train_loss"].iloc[-1],
                       "non-convex fraction": landscape.nonconvexity(surfaces[name])}
fig = lplot.compare_contours(surfaces)
pd.DataFrame(skip_rows).T

# %%
with_skip, without_skip = skip_rows["with skip connections"], skip_rows["without skip connections"]
verdict = claims.landscape.smoother_with_skips(
    with_skip["non-convex fraction"], without_skip["non-convex fraction"],
    with_skip["train loss there"], without_skip["train loss there"])
self_check(verdict, f"at matched training loss ({verdict['loss_skip']:.2f} vs "
           f"{verdict['loss_plain']:.2f}) the surface without skips is far more non-convex "
           f"({verdict['nonconvex_plain']:.2f} vs {verdict['nonconvex_skip']:.2f} of the grid)")

# %% [markdown]
# ### Why normalise per filter?
#
# A ReLU network is unchanged if one layer's weights are multiplied by α and the next layer's by
# 1/α (relu(αz) = α·relu(z)). Along *unnormalised* random directions the rescaled network looks
# sharper or flatter depending on α — a plot of nothing but the parametrisation. Filter
# normalisation scales the direction with the weights, so both networks give **the same**
# surface. We rescale the MLP of section 1 by α = 10.

# %%
alpha = p.rescale_alpha
rescaled = landscape.balanced_rescale(model, alpha)
x_train, _ = train_set.tensors
same_function = torch.allclose(model(x_train.to(device)), rescaled(x_train.to(device)),
                               rtol=1e-4, atol=1e-4)
scale_surfaces = {}
for norm in ("filter", "none"):
    for name, net in (("original", model), (f"rescaled ×{alpha:g}", rescaled)):
        e1 = landscape.random_direction(net, normalization=norm, seed=SEED + 1)
        e2 = landscape.random_direction(net, normalization=norm, seed=SEED + 2)
        span = 1.0 if norm == "filter" else 0.5
        scale_surfaces[f"{norm}: {name}"] = landscape.surface_2d(
            net, "ce", train_set, e1, e2, xrange=(-span, span), yrange=(-span, span),
            steps=p.steps, metrics=("loss",), progress=False)
fig = lplot.compare_contours(scale_surfaces, width=3.2)


# %%
keys = list(scale_surfaces)
filter_diff = landscape.relative_difference(scale_surfaces[keys[0]], scale_surfaces[keys[1]])
none_diff = landscape.relative_difference(scale_surfaces[keys[2]], scale_surfaces[keys[3]])
print(f"max relative difference: filter-normalised {filter_diff:.1e}, unnormalised {none_diff:.2f}")
self_check(claims.landscape.filter_normalisation_invariant(same_function, filter_diff, none_diff),
           "filter-normalised surfaces are invariant to a function-preserving rescaling, "
           "unnormalised ones are not")

# %% [markdown]
# ### Exercise 2.1 · Filter normalisation for one layer
#
# Write `filter_normalise(direction, weight)`: rescale every filter of `direction` to the norm of the
# same filter of `weight`, $d_i \leftarrow d_i\,\|\theta_i\|/\|d_i\|$. A filter is a slice along
# dimension 0: a row of a linear layer, one output channel (all its input channels and kernel
# entries) of a conv kernel. The check runs it on hidden layers, a conv kernel and a dead neuron
# included, against `landscape.random_direction`'s rule.

# %%
### BEGIN SOLUTION
def filter_normalise(direction, weight):
    d = direction.reshape(direction.shape[0], -1)
    w = weight.reshape(weight.shape[0], -1)
    return (d * w.norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True)).reshape(direction.shape)
### END SOLUTION
### STARTER def filter_normalise(direction, weight):
### STARTER     """direction with each filter rescaled to the norm of the same filter of weight."""
### STARTER     raise NotImplementedError

# %%
ex.filter_normalise.check(filter_normalise)

# %% [markdown]
# ## 3. The optimisation trajectory lives in a low-dimensional plane
#
# **Claim** (Li et al. 2018, §7): two random directions in a space of thousands of dimensions
# are nearly orthogonal to the path that training takes, so a random plane shows nothing of it.
# The two principal directions of the matrix of θ_t − θ_final over the saved epochs capture
# most of its variation, and the path projected on that plane descends into the basin. The
# check measures both: the share of the trajectory's variance lying in the PCA plane and in a
# plane of two random filter-normalised directions (the control: about 2/P of it).

# %%
plane = landscape.pca_directions(recorder)
xr, yr = plane.surface_range(margin=0.3)
pca_surface = landscape.surface_2d(model, "ce", train_set, plane.d1, plane.d2, xrange=xr,
                                   yrange=yr, steps=p.steps, center=plane.origin)
fig, axes = plotting.new_figure(2, width=5)
lplot.contour(pca_surface, trajectory=plane.coords, ax=axes[0],
              title=f"PCA plane ({100 * plane.explained_variance_ratio.sum():.0f}% of variance)")
axes[1].remove()
lplot.surface_3d(pca_surface, log=True, ax=fig.add_subplot(1, 2, 2, projection="3d"),
                 title="the same surface in 3-D (log loss)")
print("explained variance ratio:", np.round(plane.explained_variance_ratio, 3))

# %%
r1 = landscape.random_direction(model, normalization="filter", seed=SEED + 11)
r2 = landscape.random_direction(model, normalization="filter", seed=SEED + 12)
random_plane = claims.landscape.trajectory_in_plane(recorder.trajectory, r1, r2)
verdict = claims.landscape.trajectory_in_plane(recorder.trajectory, plane.d1, plane.d2)
print(f"share of the trajectory's variance in the plane: PCA {verdict['captured']:.3f}, "
      f"random filter-normalised directions {random_plane['captured']:.1e}")
self_check(verdict and not random_plane,
           f"two PCA directions hold {100 * verdict['captured']:.0f}% of the trajectory's "
           f"variation, two random directions {100 * random_plane['captured']:.2f}%")

# %% [markdown]
# ## 4. The Hessian: top eigenvalues, trace and spectral density
#
# The Hessian of a network with P parameters is a P×P matrix we never form: Lanczos
# (`hessian.top_eigenvalues`, Lanczos on Hessian-vector products) finds its extreme eigenvalues,
# Hutchinson and Hutch++ estimate its trace from random sign vectors z (Hutchinson needs only the
# numbers zᵀHz; for a chain of linear layers like this MLP, `toolkit` takes them as forward-mode
# second derivatives, without forming Hz), and
# stochastic Lanczos quadrature (Ghorbani et al. 2019, arXiv 1901.10159; Yao et al. 2020 —
# PyHessian, arXiv 1912.07145) estimates its whole eigenvalue density, with quadrature weights
# equal to the **squared** first components of the Lanczos eigenvectors. The density's mean is
# itself a stochastic trace estimate (a few per cent off with 8 vectors), so it is compared with
# Hutch++ within the two estimators' standard errors, not within a fixed tolerance.
#
# **Claim** (Papyan 2020, arXiv 2008.11865; Sagun et al. 2017): the spectrum of a classifier's
# Hessian is a bulk near zero plus about C outliers, one per class — with the cross-entropy loss,
# C − 1, because softmax outputs sum to one. They come from the class means of the logit
# gradients, so a 4-class problem shows 3 outliers. (They are there at initialisation and with
# shuffled labels too — they come from the class structure of the softmax output, not from what
# the net learned; a least-squares model without classes shows none, see the control test.)

# %%
top = hessian.top_eigenvalues(model, "ce", train_set, k=p.hess_k)
tr_hpp = hessian.trace(model, "ce", train_set, n_samples=p.trace_samples, method="hutch++")
tr_hutch = hessian.trace(model, "ce", train_set, n_samples=p.trace_samples)
density = hessian.spectral_density(model, "ce", train_set, n_vectors=p.slq_vectors,
                                   steps=p.slq_steps, seed=SEED)
fig, axes = plotting.new_figure(2, width=5)
hplot.hessian_density(density, eigenvalues=top.eigenvalues[: n_classes - 1], ax=axes[0])
hplot.top_eigenvalue_gaps(top.eigenvalues, n_outliers=n_classes - 1, ax=axes[1],
                          title="top eigenvalues: C − 1 outliers, then the bulk")
slq_check = claims.landscape.slq_matches_trace(density, tr_hpp)
pd.DataFrame({"estimate of tr(H)": [tr_hutch.trace, tr_hpp.trace, density.trace_estimate],
              "standard error": [tr_hutch.stderr, tr_hpp.stderr, slq_check["slq_stderr"]],
              "products Hz or zᵀHz": [tr_hutch.n_hvp, tr_hpp.n_hvp, density.n_hvp]},
             index=["Hutchinson", "Hutch++", "SLQ (n·mean of the density)"])

# %%
verdict = claims.landscape.class_outliers(top.eigenvalues, n_classes)
print("top eigenvalues:", np.round(top.eigenvalues, 3))
self_check(verdict, f"the spectrum has {verdict['n_outliers']} outliers for C = {n_classes} "
           f"classes, then a gap of {verdict['gap']:.1f}× down to the bulk")

# %%
self_check(slq_check, f"the SLQ density integrates to {slq_check['integral']:.4f} and its mean "
           f"({slq_check['slq']:.2f}) matches the Hutch++ trace ({slq_check['hutchpp']:.2f}) within "
           f"{slq_check['z']:.1f} standard errors (s = {100 * slq_check['rel_se']:.0f}% of tr H)")

# %% [markdown]
# ## 5. Flat and sharp minima: batch size and SAM
#
# **Claims**: small-batch SGD finds flatter minima (smaller top Hessian eigenvalue λ_max) than
# large-batch or full-batch gradient descent (Keskar et al. 2017, arXiv 1609.04836), and
# sharpness-aware minimisation, which descends from the worst point of a ρ-ball,
# min_θ max_{‖ε‖≤ρ} L(θ + ε), finds flatter ones still (Foret et al. 2021, arXiv 2010.01412;
# ASAM: Kwon et al. 2021, arXiv 2102.11600). We compare λ_max, SAM's first-order sharpness
# (`hessian.sharpness`) and the width of the basin along a filter-normalised random direction.

# %%
flat_train = (data.subsample(digits_train, p.flat_n_train, seed=SEED) if p.flat_n_train
              else digits_train)
runs = {
    f"SGD, batch {p.flat_small_batch}": dict(batch_size=p.flat_small_batch,
                                                 epochs=p.flat_small_epochs),
    "GD, full batch": dict(batch_size=None, epochs=p.flat_gd_epochs),
    f"SAM (ρ={p.flat_rho}), batch {p.flat_small_batch}": dict(
        batch_size=p.flat_small_batch, epochs=p.flat_small_epochs, optimizer="sam",
        rho=p.flat_rho),
}
rows, cuts, flat_models = {}, {}, {}
for name, kw in runs.items():
    toolkit.seed_everything(SEED)
    net = models.MLP(64, p.flat_widths, 10)
    h = train.fit(net, flat_train, test=digits_test, lr=p.flat_lr, seed=SEED, device=device,
                  progress=False, **kw)
    net.eval()
    lam = hessian.top_eigenvalues(net, "ce", flat_train).eigenvalues[0]
    sharp = hessian.sharpness(net, "ce", flat_train, rho=0.05)
    d = landscape.random_direction(net, seed=SEED + 7)
    cuts[name] = landscape.interpolate(net, "ce", flat_train, direction=d,
                                       alphas=np.linspace(-1, 1, 41), progress=False)
    flat_models[name] = net
    rows[name] = {"train loss": h["train_loss"].iloc[-1], "test acc": h["test_acc"].iloc[-1],
                  "λ_max": lam, "sharpness (ρ=0.05)": sharp.sharpness}
ax = None
for name, cut in cuts.items():
    ax = lplot.interpolation(cut, ax=ax, label=name, mark=(0.0,),
                             title="loss along a filter-normalised random direction")
ax.legend()
pd.DataFrame(rows).T

# %%
sgd, gd, sam = (rows[k]["λ_max"] for k in runs)
verdict = claims.landscape.sharpness_order(gd, sgd, sam)
self_check(verdict, f"λ_max: full-batch GD {gd:.2f} > small-batch SGD {sgd:.2f} > SAM {sam:.2f}")

# %% [markdown]
# ### Exercise 5.1 · Thought question
#
# The rescaling of section 2 (one layer × α, the next × 1/α) leaves the function unchanged. What
# does it do to λ_max, and what does that say about λ_max as a measure of flatness in this section?
# Discuss, then compare with `ex.is_lambda_max_flatness.solution()`.

# %%
ex.is_lambda_max_flatness.check()

# %% [markdown]
# ## 6. Edge of stability
#
# **Claim** (Cohen, Kaur, Li, Kolter & Talwalkar 2021, arXiv 2103.00065): gradient descent with
# step size η on a quadratic diverges when the curvature exceeds 2/η. On neural networks,
# full-batch GD does not diverge: λ_max first rises (*progressive sharpening*) until it reaches
# 2/η, then hovers just around 2/η while the loss keeps decreasing, non-monotonically.
# `hessian.LambdaMaxTracker` is a `fit` callback that records λ_max (Lanczos warm-started from
# the previous eigenvector). The hovering takes time to show: we run 700 full-batch steps at
# η = 2 and, as the control, the same net at η = 1, whose threshold 2/η = 2 sharpening does
# not reach in that time. At toy scale (seeds 0–4) λ_max first reaches 2/η after 150–260
# steps, overshoots by 13–19 %, falls back (a catapult: the loss spikes) and then stays within
# ±10 % of 2/η — mostly just above it, crossing it 3–7 times — while the loss, rising on one
# step in four or five, ends 2–3.5× lower than where the edge was reached.

# %% [markdown]
# ### Exercise 6.1 · Predict before you run
#
# Full-batch GD at $\eta$ = `p.eos_lr`. On a quadratic, GD diverges once the curvature exceeds
# $2/\eta$. Where will λ_max be over the second half of training? (a) well below $2/\eta$ (under 80 %
# of it); (b) around $2/\eta$ (within ±20 %); (c) far above it (over 120 %). Commit to a letter before
# running the next cell.

# %%
### BEGIN SOLUTION
answer = "b"
### END SOLUTION
### STARTER answer = ...  # "a", "b" or "c"

# %%
eos_train = data.subsample(digits_train, p.eos_n_train, seed=SEED)
eos_hist, eos_lr = {}, {}
for lr in (p.eos_control_lr, p.eos_lr):
    toolkit.seed_everything(SEED)
    net = models.MLP(64, p.eos_widths, 10, activation="tanh", sigma_w=p.eos_sigma_w)
    tracker = hessian.LambdaMaxTracker("mse", eos_train, tol=3e-2)
    name = f"GD, η = {lr:g}"
    eos_hist[name] = train.fit(net, eos_train, loss="mse", lr=lr, epochs=p.eos_epochs,
                               callbacks=[tracker], callback_every=p.eos_every, seed=SEED,
                               device=device, progress=False)
    eos_lr[name] = lr
fig, axes = plotting.new_figure(2, width=5)
hplot.lambda_max_curve(eos_hist, lr=eos_lr, ax=axes[0])
for name, h in eos_hist.items():
    axes[1].semilogy(h["epoch"], h["train_loss"], label=name)
axes[1].set(xlabel="epoch", ylabel="train loss (MSE)", title="the loss keeps decreasing")
axes[1].legend()

# %%
eos = claims.landscape.edge_of_stability(eos_hist[f"GD, η = {p.eos_lr:g}"], p.eos_lr)
control = claims.landscape.below_stability_threshold(eos_hist[f"GD, η = {p.eos_control_lr:g}"],
                                                     p.eos_control_lr)
print(eos, control, sep="\n")
self_check(eos, f"λ_max reaches 2/η = {eos['threshold']:g} at step {eos['first_crossing']:.0f} of "
           f"{p.eos_epochs}, then {100 * eos['within']:.0f}% of the samples lie within ±10% of it "
           f"({eos['crossings']} crossings); the loss rises on {100 * eos['rise_fraction']:.0f}% of "
           f"the steps yet falls from {eos['loss_at_crossing']:.3f} to {eos['final_loss']:.4f}")
self_check(control, f"the control η = {p.eos_control_lr:g} never reaches 2/η = "
           f"{control['threshold']:g} (λ_max at most {control['peak']:.2f})")

# %%
ex.eos_prediction.check(answer, history=eos_hist[f"GD, η = {p.eos_lr:g}"], lr=p.eos_lr)

# %% [markdown]
# ## 7. Class imbalance: minority classes sit at saddle points
#
# **Claim** (Rangwani, Aithal, Mishra & Babu 2022, "Escaping Saddle Points for Effective
# Generalization on Class-Imbalanced Data", arXiv 2212.13827): with a long-tailed training set,
# the loss restricted to a *minority* class converges to a region with large negative
# curvature — a saddle point of that class's loss — while the majority classes reach minima;
# sharpness-aware minimisation reduces the negative curvature and improves the tail.
# `hessian.class_hessian` gives λ_max and λ_min of every class's own loss Hessian.
#
# What the toy run shows, over three seeds (averaged below): the minority λ_min is about 25×
# more negative than the majority's — on a balanced set the same classes differ by < 1.5× (the
# control test). Part of it is scale: the minority λ_max is ~10× larger too; in the scale-free
# ratio |λ_min| / λ_max the minority is ~2× more non-convex. SAM shrinks the minority's
# curvature at both ends (λ_min and λ_max) but **not** the ratio, so at this scale we do not see
# SAM escape the saddle in the scale-free sense; we report it and do not claim it.

# %%
imb_rows, tables = [], {}
for seed in range(SEED, SEED + p.imb_seeds):
    imb_data, imb_test = data.load_digits(seed=seed)
    imb_train = data.imbalance(imb_data, ratio=p.imb_ratio, profile="step", seed=seed)
    for opt in ("sgd", "sam"):
        toolkit.seed_everything(seed)
        net = models.MLP(64, p.imb_widths, 10)
        h = train.fit(net, imb_train, test=imb_test, optimizer=opt, rho=p.imb_rho,
                      lr=p.imb_lr, momentum=0.9, epochs=p.imb_epochs,
                      batch_size=p.imb_batch, seed=seed, device=device, progress=False)
        table = hessian.class_hessian(net.eval(), "ce", imb_train, tol=1e-2, progress=False)
        if seed == SEED:
            tables[opt.upper()] = table
        saddle = claims.landscape.minority_saddles(table)
        imb_rows.append({"seed": seed, "optimizer": opt.upper(), **saddle.values,
                         "test acc": h["test_acc"].iloc[-1], "claim holds": bool(saddle)})
imb = pd.DataFrame(imb_rows)
print("class sizes:", torch.bincount(imb_train.tensors[1]).tolist())
hplot.class_curvature(tables, column="lambda_min",
                      title=f"λ_min of each class's loss Hessian, seed {SEED} (more negative = saddle)")
imb.groupby("optimizer").mean(numeric_only=True).drop(columns="seed")


# %%
sgd_runs = imb[imb["optimizer"] == "SGD"]
print(imb.round(4).to_string(index=False))
self_check(sgd_runs["claim holds"].all(),
           f"on all {len(sgd_runs)} seeds the minority classes' λ_min (mean "
           f"{sgd_runs['minority'].mean():.3f}) is ≥ 5× more negative than the majority's "
           f"({sgd_runs['majority'].mean():.4f}): saddles")

# %% [markdown]
# ## 8. Explore: the surface around each iterate
#
# Move the **checkpoint** slider to see the loss surface (two filter-normalised random
# directions) around the parameters after each epoch of section 1's run; **span** and
# **resolution** set the plotted square. Early on the iterate sits on a slope; later it sits in a
# basin that becomes wider relative to the weights as training proceeds. Run headless, the panel
# shows the last checkpoint.

# %%
panel = landscape_widgets.surface_panel(model, "ce", train_set, recorder, steps=p.panel_steps, seed=SEED)
panel

# %%
self_check(claims.panel_drawn(panel, min_axes=2),
           "the surface panel draws the loss around the selected checkpoint")

# %% [markdown]
# ## Try it yourself
#
# 1. **Barriers.** Interpolate between two networks trained from *different* seeds instead of
#    from init to solution (`landscape.interpolate(net_a, "ce", data, target=net_b)`). Predict:
#    is there a barrier at α = 0.5? How does it change with the width of the MLP?
# 2. **Depth.** In section 2, raise `skip_depth` to 8 and 12. Which network's non-convex fraction
#    grows with depth, and which one stops training?
# 3. **The edge of stability.** Set `eos_lr` to 1 and 4 and run 1,500 steps. Predict where
#    λ_max settles for each step size, then check. What happens for η = 8?
# 4. **SAM's radius.** Sweep `flat_rho` over 0.01, 0.05, 0.2, 0.5. Plot λ_max and test accuracy
#    against ρ. Is flatter always better?
# 5. **Outliers.** Use 6 or 10 classes in the Gaussian mixture (`n_classes`) and count the
#    outliers above the bulk. Does the count follow C − 1? Try `loss="mse"` too.
#
# ## Read more
#
# * Goodfellow, Vinyals & Saxe 2015 — Qualitatively characterizing neural network optimization
#   problems, arXiv 1412.6544.
# * Li, Xu, Taylor, Studer & Goldstein 2018 — Visualizing the Loss Landscape of Neural Nets,
#   arXiv 1712.09913.
# * Ghorbani, Krishnan & Xiao 2019 — An Investigation into Neural Net Optimization via Hessian
#   Eigenvalue Density, arXiv 1901.10159.
# * Yao, Gholami, Keutzer & Mahoney 2020 — PyHessian: Neural Networks Through the Lens of the
#   Hessian, arXiv 1912.07145.
# * Meyer, Musco, Musco & Woodruff 2021 — Hutch++: Optimal Stochastic Trace Estimation,
#   arXiv 2010.09649.
# * Papyan 2020 — Traces of Class/Cross-Class Structure Pervade Deep Learning Spectra,
#   arXiv 2008.11865.
# * Keskar et al. 2017 — On Large-Batch Training for Deep Learning: Generalization Gap and Sharp
#   Minima, arXiv 1609.04836.
# * Foret, Kleiner, Mobahi & Neyshabur 2021 — Sharpness-Aware Minimization, arXiv 2010.01412;
#   Kwon, Kim, Park & Choi 2021 — ASAM, arXiv 2102.11600.
# * Cohen, Kaur, Li, Kolter & Talwalkar 2021 — Gradient Descent on Neural Networks Typically
#   Occurs at the Edge of Stability, arXiv 2103.00065.
# * Rangwani, Aithal, Mishra & Babu 2022 — Escaping Saddle Points for Effective Generalization on
#   Class-Imbalanced Data, arXiv 2212.13827.
