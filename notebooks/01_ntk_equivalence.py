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
# # 01 · The neural tangent kernel: when a wide network is a kernel machine
#
# Train a network $f(\theta, x)$ by gradient descent on the squared loss. To first order, one
# step moves its outputs by
#
# $$ f_{t+1}(x) = f_t(x) - \eta \sum_i \Theta_t(x, x_i)\,\big(f_t(x_i) - y_i\big),\qquad
#    \Theta_t(x, x') = \nabla_\theta f(\theta_t, x)\cdot\nabla_\theta f(\theta_t, x'), $$
#
# the **neural tangent kernel** (NTK). Jacot, Gabriel & Hongler (2018, arXiv 1806.07572) showed
# that in the NTK parameterisation and as the width $n\to\infty$, $\Theta$ becomes deterministic
# at initialisation and **stays constant** during training; Lee et al. (2019, arXiv 1902.06720)
# showed that wide networks then evolve exactly like their linearisation, i.e. like kernel
# regression with $\Theta_0$. This notebook watches both statements happen at toy scale, then
# looks at *fixed-activation* surrogate networks whose kernel is constant at any width (Noy et al.
# 2021, arXiv 2101.04243).
#
# Every experiment is a visible cell on the primitives of `toolkit.ntk`: `empirical_ntk` (three
# methods, including the structured derivatives of Novak et al. 2022, arXiv 2206.08720),
# `analytic_ntk`, `kernel_regression`, `residual_modes`, the training callbacks `KernelDrift` and
# `OutputRecorder`, `GatedReLUMLP` and `to_relu`, with `models.MLP(..., parameterization="ntk")`
# and `train.fit`. Change an argument in a cell and rerun it.

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
import math

import pandas as pd
import torch
from tqdm.auto import tqdm

import toolkit
from toolkit import claims, data, models, ntk, presets, train
from toolkit.plotting import ntk as ntk_plots
from toolkit.utils import self_check
from toolkit.widgets import ntk as ntk_widgets

preset = presets.get_preset("ntk", PRESET)
device = toolkit.get_device(DEVICE)
toolkit.seed_everything(SEED)
DTYPE = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
print(preset)
print("device:", device)

# %%
from toolkit import exercises

ex = exercises.load("01")  # this notebook's exercises: ex.<name>.hint(), .check(...), .solution()

# %% [markdown]
# ## 1. At initialisation the empirical NTK converges to the infinite-width kernel
#
# **Claim** (Jacot et al. 2018, arXiv 1806.07572). For an MLP in the NTK parameterisation
# ($z = \frac{\sigma_w}{\sqrt{n}} W x + \sigma_b b$ with unit Gaussian $W, b$) the empirical NTK at
# initialisation converges to a deterministic kernel $\Theta_\infty$ given by a layer-wise
# recursion (arc-cosine kernels for ReLU). The fluctuations are those of an average over $n$
# neurons, so the error falls like $n^{-1/2}$: a slope of $-1/2$ on log-log axes.
#
# `ntk.analytic_ntk` implements the recursion in neural-tangents' conventions; the empirical kernel
# uses `ntk.empirical_ntk` (here its structured path: no Jacobian is ever built).

# %%
teacher_train, teacher_test = data.teacher_regression(n_samples=4 * preset.conv_points, dim=8,
                                                      seed=SEED)
x_conv = teacher_train.tensors[0][: preset.conv_points].to(device, DTYPE)
k_inf = ntk.analytic_ntk(x_conv, depth=preset.conv_depth)  # sigma_w = sqrt(2), sigma_b = 0
rows = []
for width in tqdm(preset.conv_widths, desc="widths"):
    for seed in preset.conv_seeds:
        torch.manual_seed(seed)
        net = models.MLP(x_conv.shape[1], [width] * preset.conv_depth, 1,
                         parameterization="ntk").to(device, DTYPE)
        k = ntk.empirical_ntk(net, x_conv, progress=False)
        rows.append({"width": width, "seed": seed, "rel_error": ntk.relative_change(k_inf, k)})
convergence = pd.DataFrame(rows)
convergence.groupby("width")["rel_error"].mean().to_frame()

# %%
fig = ntk_plots.convergence(convergence)

# %% [markdown]
# **Self-check.** The mean relative error falls with width with a log-log slope close to $-1/2$.

# %%
mean_error = convergence.groupby("width")["rel_error"].mean()
verdict = claims.ntk.kernel_converges(mean_error.index, mean_error.values)
self_check(verdict, f"empirical NTK -> analytic NTK as width grows (slope {verdict['slope']:.2f}, "
                    f"about -1/2; error {verdict['final_error']:.3f} at width {mean_error.index[-1]})")

# %% [markdown]
# ### Exercise 1.1 · One entry of the NTK by hand
#
# Compute $\Theta(x_0, x_1) = \nabla_\theta f(x_0)\cdot\nabla_\theta f(x_1)$ for the last network of
# the loop above (`net`) and the first two inputs of `x_conv`, with `torch.autograd.grad`, and let the
# check compare it with `ntk.empirical_ntk`. Stuck? `ex.ntk_entry.hint()` (call again for the next
# hint); `ex.ntk_entry.solution()` shows an answer.

# %%
### BEGIN SOLUTION
params = list(net.parameters())
g0 = torch.autograd.grad(net(x_conv[:1]).sum(), params)
g1 = torch.autograd.grad(net(x_conv[1:2]).sum(), params)
answer = sum((a * b).sum() for a, b in zip(g0, g1))
### END SOLUTION
### STARTER answer = ...  # Θ(x₀, x₁), a number

# %%
ex.ntk_entry.check(answer, net=net, x_conv=x_conv)

# %% [markdown]
# ### Exercise 1.2 · One layer of the infinite-width recursion
#
# `ntk.analytic_ntk` runs a layer-wise recursion. Write its ReLU step: given the covariance
# $\Sigma$ of a layer's pre-activations ($N\times N$), return
# $\Sigma'(x, y) = \frac{\sigma_w^2}{2\pi}\sqrt{\Sigma_{xx}\Sigma_{yy}}\,\big(\sin\theta + (\pi - \theta)\cos\theta\big)$
# with $\cos\theta = \Sigma_{xy}/\sqrt{\Sigma_{xx}\Sigma_{yy}}$ (the arc-cosine kernel of Cho & Saul
# 2009). The check runs your function on hidden cases, repeated and antipodal inputs included.

# %%
### BEGIN SOLUTION
def relu_nngp(cov, sigma_w2=2.0):
    d = torch.sqrt(torch.diagonal(cov))
    norm = d[:, None] * d[None, :]
    cos = (cov / norm).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    return sigma_w2 / (2 * math.pi) * norm * (torch.sin(theta) + (math.pi - theta) * cos)
### END SOLUTION
### STARTER def relu_nngp(cov, sigma_w2=2.0):
### STARTER     """Sigma'(x, y) for every pair of inputs: an N x N tensor."""
### STARTER     raise NotImplementedError

# %%
ex.relu_nngp.check(relu_nngp)

# %% [markdown]
# ## 2. Lazy training: the kernel stops moving as the width grows
#
# **Claim** (Jacot et al. 2018; Lee et al. 2019, arXiv 1902.06720). Under the NTK
# parameterisation, training changes each weight by $O(n^{-1/2})$, so the kernel drift
# $\|K_T - K_0\|_F / \|K_0\|_F$ vanishes like $n^{-1/2}$. This is a property of the *scaling*, not of
# width itself: multiply the output by $1/\sqrt n$ (the mean-field scaling
# $f = \frac1n\sum_i a_i\,\phi(w_i\cdot x)$, Chizat, Oyallon & Bach 2019, arXiv 1812.07956; the
# one-hidden-layer case of μP, Yang & Hu 2021, arXiv 2011.14522) and raise the learning rate by $n$
# to keep the same speed, and the features move by $O(1)$ at every width.
#
# Data: 1-D regression of $\sin$; inputs rescaled from $[-\pi, \pi]$ to $[-1, 1]$. Full-batch GD on
# the mean squared error, step size set so that $\eta'\lambda_{\max}(\Theta_\infty)$ = `preset.lr`
# ($\eta' = 2\eta/N$, the function-space step of section 3; `ntk.stable_lr`). The mean-field net
# is the same NTK-parameterised MLP with its output multiplied by $1/\sqrt n$ (`ntk.OutputScale`)
# and trained with $n$ times the step size.

# %% [markdown]
# ### Exercise 2.1 · Predict before you run
#
# Over the widths of the sweep, the NTK-scaling drift falls like $n^{-1/2}$. What will the
# *mean-field* net's drift do from the narrowest to the widest net? (a) shrink by more than 2×, like
# the NTK scaling; (b) change by less than a factor 2; (c) grow by more than 2×. Commit to a letter
# *before* running the next cell; the check after the experiment compares it with what happened.

# %%
### BEGIN SOLUTION
answer = "b"
### END SOLUTION
### STARTER answer = ...  # "a", "b" or "c"

# %%
train_1d, test_1d = data.regression_1d(n_train=preset.n_train, n_test=preset.n_test,
                                       fn=preset.fn, seed=SEED)
x_train, y_train = (t.to(device, DTYPE) for t in train_1d.tensors)
x_test, y_test = (t.to(device, DTYPE) for t in test_1d.tensors)
x_train, x_test = x_train / math.pi, x_test / math.pi

lr = ntk.stable_lr(ntk.analytic_ntk(x_train, depth=1, sigma_b=preset.sigma_b), target=preset.lr)
rows = []
for width in tqdm(preset.widths, desc="lazy training"):
    for scaling, alpha, step_size in (("ntk", 1.0, lr), ("mean-field", width**-0.5, lr * width)):
        torch.manual_seed(SEED)
        net = models.MLP(1, [width], 1, parameterization="ntk", sigma_b=preset.sigma_b)
        model = ntk.OutputScale(net.to(device, DTYPE), alpha)  # f = alpha * net(x)
        hist = train.fit(model, (x_train, y_train), loss="mse", lr=step_size, epochs=preset.epochs,
                         device=device, seed=SEED, callbacks=[ntk.KernelDrift(x_train)],
                         callback_every=preset.epochs, progress=False)
        rows.append({"width": width, "scaling": scaling, "drift": hist["kernel_drift"].iloc[-1],
                     "final_loss": hist["train_loss"].iloc[-1]})
lazy = pd.DataFrame(rows)
lazy

# %%
fig = ntk_plots.drift(lazy)

# %% [markdown]
# **Self-check.** In the NTK scaling the drift falls with width; in the mean-field scaling it stays
# large (at the largest width at least 5× the NTK drift), although at every width both nets reach
# comparable training losses (within a factor 3), so they were trained equally far.

# %%
ntk_rows = lazy[lazy.scaling == "ntk"].set_index("width")
mf_rows = lazy[lazy.scaling == "mean-field"].set_index("width")
verdict = claims.ntk.lazy_vs_mean_field(ntk_rows.index, ntk_rows["drift"], mf_rows["drift"],
                                        ntk_rows["final_loss"], mf_rows["final_loss"])
self_check(verdict, f"NTK-scaling drift shrinks with width (slope {verdict['ntk_slope']:.2f}); "
                    f"mean-field drift stays {verdict['drift_ratio']:.0f}x larger (slope "
                    f"{verdict['mf_slope']:.2f}) at equal training loss (ratio "
                    f"{verdict['loss_ratio_min']:.2f}-{verdict['loss_ratio_max']:.2f})")

# %%
ex.drift_prediction.check(answer, lazy=lazy)

# %% [markdown]
# ## 3. Equivalence: a wide network predicts like kernel regression with its NTK
#
# **Claim** (Lee et al. 2019, arXiv 1902.06720). With a constant kernel, $t$ steps of full-batch GD
# on the mean squared error over $N$ points give, on any input,
#
# $$ f_t(x) = f_0(x) + \Theta_0(x, X)\,\Theta_0^{-1}\big(I - (I - \eta'\Theta_0)^t\big)
#    \big(y - f_0(X)\big), \qquad \eta' = 2\eta/N, $$
#
# (`ntk.kernel_regression(..., discrete=True)`). We train networks of several widths and compare
# them with this prediction *at every recorded step*, using each network's own $\Theta_0$ and $f_0$
# (recorded by `ntk.OutputRecorder` on the training and test inputs together). The gap should
# close like $n^{-1/2}$.

# %%
eta = ntk.gd_kernel_lr(lr, len(x_train))  # eta' = 2 eta / N
n, x_all = len(x_train), torch.cat([x_train, x_test])
rows, runs = [], {}
for seed in preset.seeds:
    for width in tqdm(preset.widths, desc=f"equivalence, seed {seed}"):
        torch.manual_seed(seed)
        net = models.MLP(1, [width], 1, parameterization="ntk",
                         sigma_b=preset.sigma_b).to(device, DTYPE)
        k_train = ntk.empirical_ntk(net, x_train, progress=False)  # Theta_0(X, X)
        k_all = ntk.empirical_ntk(net, x_all, x_train, progress=False)  # Theta_0([X; X*], X)
        record = ntk.OutputRecorder(x_all)
        train.fit(net, (x_train, y_train), loss="mse", lr=lr, epochs=preset.epochs, device=device,
                  seed=seed, callbacks=[record], callback_every=preset.record_every,
                  progress=False)
        f_net = record.outputs.to(device, DTYPE)  # (T, N + M, 1): f_t on [X; X*]
        f_kernel = ntk.kernel_regression(k_train, y_train, k_all, t=record.epochs, lr=eta,
                                         f0_train=f_net[0, :n], f0_test=f_net[0], discrete=True)
        gap = (f_net[:, n:] - f_kernel[:, n:]).pow(2).mean().sqrt()
        rows.append({"width": width, "seed": seed, "gap": float(gap)})
        runs[seed, width] = (f_net.cpu(), f_kernel.cpu(), k_train.cpu())
steps = record.epochs
gaps = pd.DataFrame(rows)
gaps.groupby("width")["gap"].mean().to_frame()

# %%
cpu = [t.cpu() for t in (x_train, y_train, x_test, y_test)]
widest = max(preset.widths)
f_net, f_kernel, k_widest = runs[preset.seeds[0], widest]
fig = ntk_plots.equivalence(gaps, cpu[2], f_net[:, n:], f_kernel[:, n:], steps, *cpu[:2],
                            width=widest)

# %% [markdown]
# **Self-check.** The RMS gap between network and kernel predictions (over test inputs and all
# recorded steps) falls with width, and the widest network is within 0.02 of its kernel (targets
# have amplitude 1).

# %%
mean_gap = gaps.groupby("width")["gap"].mean()
verdict = claims.ntk.kernel_equivalence(mean_gap.index, mean_gap.values)
self_check(verdict, f"network -> kernel regression as width grows (gap slope {verdict['slope']:.2f}, "
                    f"gap {verdict['final_gap']:.4f} at width {mean_gap.index[-1]})")

# %% [markdown]
# ## 4. Spectral bias: large-eigenvalue directions are learned first
#
# **Claim** (Jacot et al. 2018; Rahaman et al. 2019, arXiv 1806.08734). Write the training residual
# $r_t = f_t(X) - y$ in the eigenbasis $\Theta_0 = \sum_i \lambda_i v_i v_i^\top$. Kernel gradient
# descent decouples: $v_i^\top r_t = (1 - \eta'\lambda_i)^t\, v_i^\top r_0$. Directions with large
# eigenvalues (smooth functions, for this kernel) are fitted within a few steps; small ones take
# thousands. We project the *network's* residual (widest network of section 3) with
# `ntk.residual_modes`, next to the predicted $(1 - \eta'\lambda_i)^t$.

# %%
residuals = f_net[:, :n, 0] - cpu[1][:, 0]  # r_t = f_t(X) - y, (T, N)
decay = ntk.residual_modes(k_widest, residuals, eta, steps=steps, n_modes=preset.n_modes)
decay[decay.step.isin(steps[:: max(1, len(steps) // 5)])].pivot(
    index="step", columns="mode", values="measured")

# %%
fig = ntk_plots.spectral_bias(decay)

# %% [markdown]
# **Self-check.** Each mode decays at the rate its eigenvalue predicts (within 0.05 wherever the
# prediction is above 1 %), and after a few steps the modes are ordered: the larger the eigenvalue,
# the smaller the remaining residual.

# %%
verdict = claims.ntk.spectral_bias(decay, at_step=steps[2])
self_check(verdict, f"residual along eigenvector i decays like (1 - eta' lambda_i)^t (max "
                    f"deviation {verdict['max_deviation']:.3f}); larger eigenvalues are learned first")

# %% [markdown]
# ### Exercise 4.1 · The decay rates, from the eigenvalues
#
# Predict the fraction of the residual left along each of the top `preset.n_modes` eigenvectors
# of $\Theta_0$ (`k_widest`) after `steps[2]` steps: $(1 - \eta'\lambda_i)^t$ with $\eta' = 2\eta/N$
# ($\eta$ = `lr`, $N$ = `n`), the largest eigenvalue first, as a vector. Compare it with the
# `measured` column of `decay` at that step.

# %%
### BEGIN SOLUTION
eig = torch.linalg.eigvalsh(k_widest).flip(0)[: preset.n_modes]
answer = (1 - 2 * lr / n * eig) ** steps[2]
### END SOLUTION
### STARTER answer = ...  # a vector of preset.n_modes fractions

# %%
ex.mode_decay.check(answer, k_widest=k_widest, lr=lr, n=n, t=steps[2], n_modes=preset.n_modes)

# %% [markdown]
# ## 5. Fixed activation patterns: a surrogate whose kernel never moves
#
# **Claim** (Noy, Xu, Aflalo, Zelnik-Manor & Jin 2021, arXiv 2101.04243). Freeze the ReLU
# *activation pattern* at its initial value: hidden unit $j$ outputs
# $\mathbf 1[g_j\cdot x > 0]\,(w_j\cdot x)$ where $g_j$ is a frozen copy of the initial $w_j$
# (`ntk.GatedReLUMLP`). With one hidden layer and a fixed output layer the network is *linear* in
# its weights, so its NTK $K$ is constant at any width and GD converges geometrically:
# $L_t \le (1 - \eta'\lambda_{\min})^{2t} L_0$ — a straight line on a log axis, with a rate set by
# the smallest eigenvalue (positive once the width is about quadratic in the sample size). Trained
# weights pass through the gates, and on a given set of inputs the gated net can be re-expressed
# as an ordinary ReLU network at most twice as wide (`ntk.to_relu`), through
# $\mathbf 1[g\cdot x>0]\,(w\cdot x) = \mathrm{ReLU}(w\cdot x + M g\cdot x) - \mathrm{ReLU}(M g\cdot x)$,
# which holds wherever $M \ge |w\cdot x| / |g\cdot x|$; the deep case is derived in `to_relu`'s
# docstring. $M$ is a number chosen on a *finite* set (its largest ratio times a margin), so the
# conversion is exact on that set and not, in general, on inputs it has not seen: near a gate's
# hyperplane $g\cdot x = 0$ the ratio is unbounded.

# %%
x_gate, y_gate = (t[: preset.gated_points].to(device, DTYPE) for t in teacher_train.tensors)
configs = {"gated": ([preset.gated_width], False),  # one hidden layer, frozen head
           "gated, 2 layers": ([preset.gated_width // 2] * 2, True)}
histories, drift, surrogates, kernels, rates = {}, {}, {}, {}, {}
for name, (widths, train_head) in configs.items():
    torch.manual_seed(SEED)
    gated = ntk.GatedReLUMLP(x_gate.shape[1], widths, 1, sigma_b=preset.sigma_b,
                             train_head=train_head).to(device, DTYPE)
    nets = {name: gated, f"ReLU twin of {name}": gated.as_relu_mlp()}  # same initial weights
    kernels[name] = ntk.empirical_ntk(gated, x_gate, progress=False)
    rates[name] = ntk.stable_lr(kernels[name], target=1.0)  # eta' lambda_max(K) = 1
    for label, model in nets.items():
        histories[label] = train.fit(model, (x_gate, y_gate), loss="mse", lr=rates[name],
                                     epochs=preset.gated_epochs, device=device, seed=SEED,
                                     callbacks=[ntk.KernelDrift(x_gate)],
                                     callback_every=preset.gated_epochs, progress=False)
        drift[label] = histories[label]["kernel_drift"].iloc[-1]
    surrogates[name] = gated
print("kernel drift:", ", ".join(f"{label} {value:.1e}" for label, value in drift.items()))

# %%
# the linear-model rate: L_t <= (1 - eta' lambda_min)^(2t) L_0
lam_min = float(torch.linalg.eigvalsh(kernels["gated"]).min())
rate = 1 - ntk.gd_kernel_lr(rates["gated"], len(x_gate)) * lam_min
loss_0 = float(histories["gated"]["train_loss"].iloc[0])
bound = loss_0 * rate ** (2 * torch.arange(preset.gated_epochs + 1, dtype=torch.float64))
plotted = ("gated", "ReLU twin of gated", "gated, 2 layers")
fig = ntk_plots.gated({label: histories[label] for label in plotted}, bound, drift)

# %% [markdown]
# **Self-check 1.** The surrogate's loss stays below the geometric bound at every step and falls by
# more than 1000×. (At this width the ordinary ReLU twin also stays below the bound, its kernel
# moving by only a few percent: the bound is a theorem for the surrogate, an observation for the
# twin. A width-8 surrogate, with $\lambda_{\min}$ near 0, obeys the bound but falls only
# 40–500×; a step above $2/\lambda_{\max}$ diverges.)

# %%
verdict = claims.ntk.geometric_convergence(histories["gated"]["train_loss"].to_numpy(), bound)
self_check(verdict, f"gated surrogate loss falls {verdict['drop']:.2g}x, geometrically, below "
                    f"(1 - eta' lambda_min)^(2t) L_0 (max loss/bound {verdict['worst_ratio']:.2f})")

# %% [markdown]
# **Self-check 2.** Its NTK did not move during training (exactly, up to rounding), while the
# ordinary ReLU network trained from the same weights changed its kernel. (The two-layer surrogate
# with a trained head is only multilinear in its weights: its kernel moves, by
# about 1e-2 (printed above), and it would fail this check.)

# %%
verdict = claims.ntk.constant_kernel(drift["gated"], drift["ReLU twin of gated"])
self_check(verdict, f"gated NTK fixed during training (drift {verdict['drift']:.1e}) vs ReLU net "
                    f"{verdict['control_drift']:.1e}")

# %% [markdown]
# **Where `to_relu` is exact.** We choose the scales on the 16 training inputs and compare the
# ReLU net with the surrogate there and on 48 inputs it has never seen (the rest of the teacher
# data). `ntk.required_margin` gives, for each unseen input, the smallest `margin` that
# guarantees agreement there; the table sweeps the margin.

# %%
x_unseen = torch.cat([teacher_train.tensors[0][preset.gated_points:],
                      teacher_test.tensors[0]]).to(device, DTYPE)
rows = []
for name, gated in surrogates.items():
    required = ntk.required_margin(gated, x_gate, x_unseen)
    for margin in (1, 2, 10, 100, 1e4):
        relu_net = ntk.to_relu(gated, x_gate, margin=margin)  # M chosen on x_gate only
        with torch.no_grad():
            fit_error = (relu_net(x_gate) - gated(x_gate)).abs()
            unseen_error = (relu_net(x_unseen) - gated(x_unseen)).abs()
        rows.append({"surrogate": name, "margin": margin,
                     "verdict": claims.ntk.relu_conversion(fit_error, unseen_error, required,
                                                           margin)})
conversion = pd.DataFrame([{"surrogate": r["surrogate"], "margin": r["margin"], **r["verdict"].values}
                           for r in rows])
print(relu_net)
conversion

# %% [markdown]
# **Self-check 3.** At the default `margin=2` and at `margin=100`, `to_relu` turns both trained
# surrogates into ReLU networks twice as wide that match them to 1e-5 on the inputs the scales
# were chosen on, and on every unseen input the margin covers. The rest is measured, not
# promised: with `margin=2` the margin covers almost none of the unseen inputs and most of them
# come out different, by a few percent of the output scale; `margin=100` covers most of them, at
# a rounding error that grows with the margin.

# %%
for r in rows:
    if r["margin"] in (2, 100):
        v = r["verdict"]
        self_check(v, f"{r['surrogate']}, margin {r['margin']:g}: to_relu exact on the "
                      f"{len(x_gate)} inputs M was chosen on (max error {v['fit_max_error']:.1e}) "
                      f"and on the {v['coverage']:.0%} of unseen inputs the margin covers; "
                      f"{v['exact_fraction']:.0%} of unseen inputs within 1e-5, max error "
                      f"{v['unseen_max_error']:.2g}")

# %% [markdown]
# ### Exercise 5.1 · Thought question
#
# Why is the gated net's kernel constant during training at any width, while a ReLU net's kernel
# only freezes as the width grows? What does the gated net give up in exchange? Discuss, then
# compare with `ex.why_constant_kernel.solution()`.

# %%
ex.why_constant_kernel.check()

# %% [markdown]
# ## 6. Explore: network vs kernel, by width and training time
#
# Move the sliders: **width** picks the network, **GD step** the time. Left: the network (blue) and
# the kernel-regression prediction with its initial NTK (dashed red). Right: their RMS gap over
# training. Narrow networks drift away from their kernel; wide ones track it throughout.

# %%
predictions = {w: tuple(t[:, n:] for t in runs[preset.seeds[0], w][:2]) for w in preset.widths}
explorer = ntk_widgets.equivalence_panel(predictions, steps, *cpu)
explorer

# %% [markdown]
# **Self-check.** Headless, the panel still draws its figure (two panels) and, at the largest width
# and the displayed step, network and kernel agree to within 0.02.

# %%
verdict = claims.ntk.explorer_agrees(explorer, predictions, steps)
self_check(verdict, f"panel drawn headless ({verdict['axes']} panels); width {verdict['width']} at "
                    f"step {verdict['step']}: gap {verdict['gap']:.4f}")

# %% [markdown]
# ## Try it yourself
#
# 1. **Depth.** Rerun section 1 with `preset.conv_depth` replaced by 4. Predict: does the error at a given width grow or
#    shrink with depth? (Hanin & Nica 2019, arXiv 1909.05989: the fluctuations grow exponentially
#    in depth/width.)
# 2. **Step size.** Set `target=1.9` in the `ntk.stable_lr` call of section 2 (still stable for
#    the linear model) and rerun section 3. Which widths stop tracking their kernel, and why does
#    the gap grow with the step size?
# 3. **Standard parameterisation.** In section 1, change `parameterization="ntk"` to
#    `"standard"` (same initial function distribution) and compare `k.diagonal().mean()` across
#    widths. How does the kernel's *scale* grow with width, and what learning rate keeps GD
#    stable?
# 4. **Spectral bias in the data.** Switch `fn` to `"sin_mix"` (adds $\sin 3x$). Project the target
#    on the NTK eigenvectors: which part of the function is learned first?
# 5. **Width vs samples.** In section 5, halve `gated_width` repeatedly. When does
#    $\lambda_{\min}$ of the surrogate's kernel collapse, and how does that change the convergence
#    rate? Compare with the paper's width $\gtrsim N^2$.
#
# ## Read more
#
# - Jacot, Gabriel, Hongler (2018). *Neural Tangent Kernel: Convergence and Generalization in
#   Neural Networks.* arXiv 1806.07572.
# - Lee, Xiao, Schoenholz, Bahri, Novak, Sohl-Dickstein, Pennington (2019). *Wide Neural Networks
#   of Any Depth Evolve as Linear Models Under Gradient Descent.* arXiv 1902.06720.
# - Chizat, Oyallon, Bach (2019). *On Lazy Training in Differentiable Programming.* arXiv 1812.07956.
# - Yang, Hu (2021). *Feature Learning in Infinite-Width Neural Networks.* arXiv 2011.14522.
# - Rahaman et al. (2019). *On the Spectral Bias of Neural Networks.* arXiv 1806.08734.
# - Noy, Xu, Aflalo, Zelnik-Manor, Jin (2021). *A Convergence Theory Towards Practical
#   Over-parameterized Deep Neural Networks.* arXiv 2101.04243.
# - Novak, Sohl-Dickstein, Schoenholz (2022). *Fast Finite Width Neural Tangent Kernel.*
#   arXiv 2206.08720.
# - Novak et al. (2020). *Neural Tangents: Fast and Easy Infinite Neural Networks in Python.*
#   arXiv 1912.02803.
