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
# Everything is computed by `toolkit.ntk`: `empirical_ntk` (three methods, including the
# structured derivatives of Novak et al. 2022, arXiv 2206.08720), `analytic_ntk`,
# `kernel_regression`, `linearize`, `GatedReLUMLP` and `to_relu`.

# %% tags=["parameters"]
PRESET = "toy"
SEED = 0
DEVICE = "auto"

# %%
import math

import torch

import toolkit
from toolkit import data, ntk, presets
from toolkit.plotting import ntk as ntk_plots
from toolkit.utils import self_check

preset = presets.get_preset("ntk", PRESET)
device = toolkit.get_device(DEVICE)
toolkit.seed_everything(SEED)
DTYPE = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
print(preset)
print("device:", device)

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
teacher_train, teacher_test = data.teacher_regression(n_samples=4 * preset["conv_points"], dim=8,
                                                      seed=SEED)
x_conv = teacher_train.tensors[0][: preset["conv_points"]].to(device, DTYPE)
convergence = ntk.width_convergence(x_conv, preset["conv_widths"], depth=preset["conv_depth"],
                                    seeds=preset["conv_seeds"])
convergence.groupby("width")["rel_error"].mean().to_frame()

# %%
fig = ntk_plots.convergence(convergence)

# %% [markdown]
# **Self-check.** The mean relative error falls with width with a log-log slope close to $-1/2$.

# %%
mean_error = convergence.groupby("width")["rel_error"].mean()
slope = ntk.loglog_slope(mean_error.index, mean_error.values)
self_check(-0.75 < slope < -0.3 and mean_error.iloc[-1] < 0.15,
           f"empirical NTK -> analytic NTK as width grows (slope {slope:.2f}, about -1/2)")

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
# the mean squared error, step size set so that $\eta\,\lambda_{\max}(\Theta_\infty)$ = `preset.lr`.

# %%
train_1d, test_1d = data.regression_1d(n_train=preset["n_train"], n_test=preset["n_test"],
                                       fn=preset["fn"], seed=SEED)
x_train, y_train = (t.to(device, DTYPE) for t in train_1d.tensors)
x_test, y_test = (t.to(device, DTYPE) for t in test_1d.tensors)
x_train, x_test = x_train / math.pi, x_test / math.pi

lazy = ntk.lazy_training((x_train, y_train), preset.widths, epochs=preset.epochs,
                         lr_target=preset.lr, sigma_b=preset["sigma_b"], seed=SEED, device=device)
lazy

# %%
fig = ntk_plots.drift(lazy)

# %% [markdown]
# **Self-check.** In the NTK scaling the drift falls with width; in the mean-field scaling it stays
# large (at the largest width at least 5× the NTK drift), although at every width both nets reach
# comparable training losses (within a factor 2), so they were trained equally far.

# %%
ntk_rows = lazy[lazy.scaling == "ntk"].set_index("width")
mf_rows = lazy[lazy.scaling == "mean-field"].set_index("width")
ntk_slope = ntk.loglog_slope(ntk_rows.index, ntk_rows["drift"])
drift_ratio = mf_rows["drift"].iloc[-1] / ntk_rows["drift"].iloc[-1]
loss_ratio = ntk_rows["final_loss"] / mf_rows["final_loss"]
self_check(ntk_slope < -0.2 and drift_ratio > 5 and loss_ratio.between(0.5, 2).all(),
           f"NTK-scaling drift shrinks with width (slope {ntk_slope:.2f}); mean-field drift "
           f"stays {drift_ratio:.0f}x larger at equal training loss")

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
# them with this prediction *at every recorded step*, using each network's own $\Theta_0$ and $f_0$.
# The gap should close like $n^{-1/2}$.

# %%
runs = ntk.ntk_equivalence((x_train, y_train), (x_test, y_test), preset.widths,
                           epochs=preset.epochs, lr_target=preset.lr, sigma_b=preset["sigma_b"],
                           record_every=preset["record_every"], seeds=preset["seeds"],
                           device=device)
gaps = ntk.equivalence_table(runs)
gaps.groupby("width")["gap"].mean().to_frame()

# %%
cpu = [t.cpu() for t in (x_train, y_train, x_test, y_test)]
fig = ntk_plots.equivalence(runs, *cpu)

# %% [markdown]
# **Self-check.** The RMS gap between network and kernel predictions (over test inputs and all
# recorded steps) falls with width, and the widest network is within 0.02 of its kernel (targets
# have amplitude 1).

# %%
mean_gap = gaps.groupby("width")["gap"].mean()
gap_slope = ntk.loglog_slope(mean_gap.index, mean_gap.values)
self_check(gap_slope < -0.25 and mean_gap.iloc[-1] < 0.02,
           f"network -> kernel regression as width grows (gap slope {gap_slope:.2f}, "
           f"gap {mean_gap.iloc[-1]:.4f} at width {mean_gap.index[-1]})")

# %% [markdown]
# ## 4. Spectral bias: large-eigenvalue directions are learned first
#
# **Claim** (Jacot et al. 2018; Rahaman et al. 2019, arXiv 1806.08734). Write the training residual
# $r_t = f_t(X) - y$ in the eigenbasis $\Theta_0 = \sum_i \lambda_i v_i v_i^\top$. Kernel gradient
# descent decouples: $v_i^\top r_t = (1 - \eta'\lambda_i)^t\, v_i^\top r_0$. Directions with large
# eigenvalues (smooth functions, for this kernel) are fitted within a few steps; small ones take
# thousands. We project the *network's* residual (widest network of section 3).

# %%
widest = max((r for r in runs if r.seed == runs[0].seed), key=lambda r: r.width)
decay = ntk.spectral_decay(widest, n_modes=preset["n_modes"])
decay[decay.epoch.isin(widest.epochs[:: max(1, len(widest.epochs) // 5)])].pivot(
    index="epoch", columns="mode", values="measured")

# %%
fig = ntk_plots.spectral_bias(decay)

# %% [markdown]
# **Self-check.** Each mode decays at the rate its eigenvalue predicts (within 0.05 wherever the
# prediction is above 1 %), and after a few steps the modes are ordered: the larger the eigenvalue,
# the smaller the remaining residual.

# %%
visible = decay[decay.predicted > 0.01]
max_dev = float((visible.measured - visible.predicted).abs().max())
step = widest.epochs[2]
remaining = decay[decay.epoch == step].sort_values("mode")["measured"].to_numpy()
self_check(max_dev < 0.05 and all(remaining[:-1] <= remaining[1:]),
           f"residual along eigenvector i decays like (1 - eta' lambda_i)^t (max deviation "
           f"{max_dev:.3f}); larger eigenvalues are learned first")

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
# weights pass through the gates, and the gated net can be re-expressed exactly as an ordinary ReLU
# network at most twice as wide (`ntk.to_relu`), through
# $\mathbf 1[g\cdot x>0]\,(w\cdot x) = \mathrm{ReLU}(w\cdot x + M g\cdot x) - \mathrm{ReLU}(M g\cdot x)$
# for $M \ge \max |w\cdot x| / |g\cdot x|$; the deep case is derived in `to_relu`'s docstring.

# %%
x_gate = teacher_train.tensors[0][: preset["gated_points"]].to(device, DTYPE)
y_gate = teacher_train.tensors[1][: preset["gated_points"]].to(device, DTYPE)
gated_run = ntk.gated_training(x_gate, y_gate, width=preset["gated_width"],
                               epochs=preset["gated_epochs"], sigma_b=preset["sigma_b"],
                               seed=SEED, device=device)
deep_run = ntk.gated_training(x_gate, y_gate, width=preset["gated_width"] // 2, depth=2,
                              train_head=True, epochs=preset["gated_epochs"],
                              sigma_b=preset["sigma_b"], seed=SEED, device=device)
print(f"kernel drift: gated {gated_run.drift:.1e}, ReLU twin {gated_run.relu_drift:.1e}, "
      f"deep gated {deep_run.drift:.1e}")

# %%
fig = ntk_plots.gated(gated_run, deep_run)

# %% [markdown]
# **Self-check 1.** The surrogate's loss stays below the geometric bound at every step and falls by
# more than 1000×.

# %%
losses = torch.tensor(gated_run.history["train_loss"].to_numpy(), dtype=torch.float64)
self_check(bool(torch.all(losses <= gated_run.bound * (1 + 1e-9)))
           and losses[-1] < 1e-3 * losses[0],
           f"gated surrogate loss falls geometrically ({losses[0]:.2g} -> {losses[-1]:.2g}, "
           "below (1 - eta' lambda_min)^(2t) L_0)")

# %% [markdown]
# **Self-check 2.** Its NTK did not move during training (exactly, up to rounding), while the
# ordinary ReLU network trained from the same weights changed its kernel.

# %%
self_check(gated_run.drift < 1e-9 and gated_run.relu_drift > 1e3 * max(gated_run.drift, 1e-16),
           f"gated NTK fixed during training (drift {gated_run.drift:.1e}) vs ReLU net "
           f"{gated_run.relu_drift:.1e}")

# %% [markdown]
# **Self-check 3.** `to_relu` turns the trained surrogates (one and two hidden layers) into ReLU
# networks twice as wide with the same outputs on the training and held-out inputs, to 1e-5.

# %%
x_check = torch.cat([x_gate, teacher_test.tensors[0].to(device, DTYPE)])
errors = []
for run in (gated_run, deep_run):
    relu_net = ntk.to_relu(run.model, x_check)
    with torch.no_grad():
        errors.append(float((relu_net(x_check) - run.model(x_check)).abs().max()))
print(relu_net)
self_check(max(errors) < 1e-5,
           f"to_relu gives a ReLU net with identical outputs (max error {max(errors):.1e})")

# %% [markdown]
# ## 6. Explore: network vs kernel, by width and training time
#
# Move the sliders: **width** picks the network, **GD step** the time. Left: the network (blue) and
# the kernel-regression prediction with its initial NTK (dashed red). Right: their RMS gap over
# training. Narrow networks drift away from their kernel; wide ones track it throughout.

# %%
explorer = ntk_plots.equivalence_panel(runs, *cpu)
explorer

# %% [markdown]
# **Self-check.** Headless, the panel still draws its figure (two panels) and, at the largest width
# and the displayed step, network and kernel agree to within 0.05.

# %%
shown = explorer.values
shown_run = next(r for r in runs if r.width == shown["width"] and r.seed == runs[0].seed)
k = shown_run.epochs.index(shown["step"])
shown_gap = float((shown_run.net_test[k] - shown_run.kernel_test[k]).pow(2).mean().sqrt())
self_check(len(explorer.figure.axes) == 2 and shown_gap < 0.05,
           f"panel drawn headless; width {shown['width']} at step {shown['step']}: "
           f"gap {shown_gap:.4f}")

# %% [markdown]
# ## Try it yourself
#
# 1. **Depth.** Rerun section 1 with `depth=4`. Predict: does the error at a given width grow or
#    shrink with depth? (Hanin & Nica 2019, arXiv 1909.05989: the fluctuations grow exponentially
#    in depth/width.)
# 2. **Step size.** Set `lr_target=1.9` in section 3 (still stable for the linear model). Which
#    widths stop tracking their kernel, and why does the gap grow with the step size?
# 3. **Standard parameterisation.** Build `models.MLP(..., parameterization="standard")` and compute
#    its `empirical_ntk` for growing widths. How does the kernel's *scale* grow with width, and what
#    learning rate keeps GD stable?
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
