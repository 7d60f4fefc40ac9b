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
# # 09 · The loss landscape converges as the sample grows
#
# Notebook 02 drew loss surfaces of one training set. How much does such a surface move when
# one more object joins the set? Kiselev & Grabovoy (2024, arXiv 2409.11995) put the objects in
# an order and compare the mean losses of nested subsets,
# $L_k(\theta) = \frac1k\sum_{i\le k}\ell_i(\theta)$. Their eq. (1) is an exact identity,
#
# $$L_{k+1}(\theta) - L_k(\theta) = \frac{\ell_{k+1}(\theta) - L_k(\theta)}{k+1},$$
#
# so wherever the per-object losses stay bounded the surfaces of consecutive subsets differ by
# $O(1/k)$. Their Theorem 1 bounds each object's Gauss–Newton Hessian for an $L$-layer ReLU MLP
# **without biases**, with $\|W^{(p)}\|_2 \le M_W$ and $\|x_i\|_2 \le M_x$:
# $\|H_i\|_2 \le M_H = L\sqrt2\,M_x^2M_W^{2L} + \sqrt2\,M_W^2(M_W^{2L}-1)/(M_W^2-1)$; and their
# Lemma 2, from the second-order Taylor model around a common minimum $\theta^*$, bounds the
# difference within $\|\theta-\theta^*\|_2 \le R$ by
#
# $$|L_{k+1}(\theta) - L_k(\theta)| \le \frac{2}{k+1}\bigl(M_\ell + M_H R^2\bigr),
# \qquad M_\ell = \max_i \ell_i(\theta^*).$$
#
# `toolkit.landscape_convergence` evaluates every object's loss once on a filter-normalised
# plane around $\theta^*$ (`per_sample_surface`); the identity makes $L_k$ for *every* $k$ one
# cumulative sum (`running_means`; the tests check it against `landscape.surface_2d` on the first
# $k$ objects), and `lemma2_bound` computes the bound from the network's actual weights.

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
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import toolkit
from toolkit import claims, data, landscape, models, presets, train
from toolkit import landscape_convergence as lc
from toolkit.plotting import convergence as convergence_plots
from toolkit.utils import self_check
from toolkit.widgets import convergence as convergence_widgets

preset = presets.get_preset("landscape_convergence", PRESET)
device = toolkit.get_device(DEVICE)
toolkit.seed_everything(SEED)
print(preset)
print("device:", device)

# %%
from toolkit import exercises

ex = exercises.load("09")  # this notebook's exercises: ex.<name>.hint(), .check(...), .solution()

# %% [markdown]
# ## 1. Surfaces of nested subsets differ by O(1/k), under the paper's bound
#
# **Claim** (Kiselev & Grabovoy 2024, arXiv 2409.11995, eq. (1) and Lemma 2). Train a bias-free
# ReLU MLP on the whole set (Adam, as the paper does; `models.MLP(..., bias=False)` matches
# Theorem 1's assumptions), take two filter-normalised random directions, and compute every
# object's loss on the plane $\theta^* + a\,d_1 + b\,d_2$, $|a|, |b| \le$ `span`. Then, for
# `orders` random orderings of the objects (the paper averages 100), measure
# $|L_{k+1} - L_k|$ at every grid point and every $k$, and compare it with the Lemma 2 bound
# for the plane's radius $R$. Three seeds: the table has one row each.

# %% [markdown]
# ### Exercise 1.1 · Predict before you run
#
# The experiment averages $|L_{k+1} - L_k|$ over the plane and over the orderings, for every $k$.
# On a log–log plot against $k \ge 10$, which slope will the curve have? (a) about 0, (b) about
# $-\tfrac12$, like a standard error, (c) about $-1$, (d) about $-2$. Commit to a letter *before*
# running the next cell; the check after the self-check compares it with the measured slope.

# %%
### BEGIN SOLUTION
answer = "c"
### END SOLUTION
### STARTER answer = ...  # "a", "b", "c" or "d"

# %%
if preset.dataset == "digits":
    splits = {s: data.load_digits(seed=s)[0] for s in range(SEED, SEED + preset.n_seeds)}
else:
    splits = {s: data.load_mnist1d(n_samples=preset.n_samples, seed=s)[0]
              for s in range(SEED, SEED + preset.n_seeds)}
runs, rows = {}, []
for seed, train_set in tqdm(splits.items(), desc="seeds"):
    x, y = train_set.tensors
    torch.manual_seed(seed)
    net = models.MLP(x.shape[1], list(preset.widths), 10, bias=False)
    train.fit(net, train_set, epochs=preset.epochs, batch_size=preset.batch_size, lr=preset.lr,
              optimizer=preset.optimizer, seed=seed, device=device, progress=False)
    d1 = landscape.random_direction(net, seed=seed)
    d2 = landscape.random_direction(net, seed=seed + 1000)
    surf = lc.per_sample_surface(net, train_set, d1, d2, xrange=(-preset.span, preset.span),
                                 yrange=(-preset.span, preset.span), steps=preset.steps)
    diffs = lc.consecutive_differences(surf, orders=preset.orders, seed=seed)
    bound = lc.lemma2_bound(net, train_set, surf)
    gn = lc.per_sample_gauss_newton_norms(net, train_set)
    runs[seed] = dict(net=net, d1=d1, d2=d2, surf=surf, diffs=diffs, bound=bound)
    rows.append({"seed": seed, "N": surf.n, "R": bound.radius, "M_ℓ": bound.max_loss,
                 "M_W": bound.hessian.max_weight_norm, "M_x": bound.hessian.max_input_norm,
                 "M_H (Thm 1)": bound.hessian.value, "max ‖H_i‖ measured": gn.max(),
                 "bound / max diff": np.min(bound.at(diffs.k) / diffs.max)})
table = pd.DataFrame(rows).set_index("seed")
table.style.format("{:.3g}")

# %% [markdown]
# The surfaces themselves, for the first seed and one ordering: $L_k$ for a few $k$ on the same
# plane with the same contour levels. The first few objects make a lumpy surface; by a few
# hundred objects it has stopped moving. The last panel is the full set; the printed line checks
# it against `landscape.surface_2d` on all $N$ objects.

# %%
run = runs[SEED]
means = lc.running_means(run["surf"])
shown = [k for k in (2, 16, 128) if k < run["surf"].n] + [run["surf"].n]
fig = convergence_plots.subset_surfaces(run["surf"], {k: means[k - 1] for k in shown})
direct = landscape.surface_2d(run["net"], "ce", splits[SEED], run["d1"], run["d2"],
                              xrange=(-preset.span, preset.span),
                              yrange=(-preset.span, preset.span), steps=preset.steps,
                              metrics=("loss",), progress=False)
print(f"max |cumsum L_N − surface_2d| = {np.abs(means[-1] - direct.loss).max():.1e}")

# %% [markdown]
# Left: the mean and the largest $|L_{k+1} - L_k|$ over the plane against $k$ (log–log), with a
# $1/k$ guide and the Lemma 2 bound. Right: the top Hessian eigenvalue of $L_k$ (section 2).

# %%
ks = list(preset.eig_sizes)
rng = np.random.default_rng(SEED)
eigs = {seed: np.array([lc.subset_top_eigenvalues(r["net"], splits[seed], ks,
                                                  order=rng.permutation(r["surf"].n))
                        for _ in range(preset.eig_orders)])
        for seed, r in tqdm(runs.items(), desc="λ_max of L_k")}
fig = convergence_plots.convergence(run["diffs"], run["bound"], ks, eigs[SEED],
                                    k_min=preset.k_min)

# %% [markdown]
# **Self-check.** For every seed, the log–log slope of the plane-mean $|L_{k+1} - L_k|$ against
# $k \ge 10$ lies in $[-1.25, -0.8]$ and the Lemma 2 bound lies above the *largest* difference on
# the plane at every $k$ (`claims.convergence.difference_decays`). Its control tests fail for
# the per-object loss $|\ell_{k+1} - \ell_k|$ (slope ≈ 0), for a fresh random subset at every
# $k$ (slope ≈ −½: consecutive surfaces then share no objects) and for the bound with a wrong
# constant.

# %%
for seed, r in runs.items():
    verdict = claims.convergence.difference_decays(r["diffs"].k, r["diffs"].mean,
                                                   r["bound"].at(r["diffs"].k),
                                                   largest=r["diffs"].max, k_min=preset.k_min)
    self_check(verdict, f"seed {seed}: |L_(k+1) − L_k| ∝ k^{verdict['slope']:.2f}; the bound is "
                        f"{verdict['bound_ratio']:.1e}× the largest difference or more")

# %%
ex.slope_prediction.check(answer, diffs=run["diffs"], k_min=preset.k_min)

# %% [markdown]
# ### Exercise 1.2 · Eq. (1) by hand at one point
#
# `losses` below holds every object's loss at one corner of the plane ($a = b = -$`span`, where
# the losses are large), in the stored order. Compute $L_{k+1} - L_k$ there for $k = 100$ from
# eq. (1) — signed, not its absolute value. Python counts from 0: the first $k$ objects are
# `losses[:k]`. Stuck? `ex.difference_by_hand.hint()`.

# %%
losses, k = run["surf"].losses[:, 0, 0], 100  # every object's loss at the corner a = b = −span
### BEGIN SOLUTION
answer = (losses[k] - losses[:k].mean()) / (k + 1)
### END SOLUTION
### STARTER answer = ...  # L_(k+1) − L_k at that point, a signed number

# %%
ex.difference_by_hand.check(answer, losses=losses, k=k)

# %% [markdown]
# ### Exercise 1.3 · Every $L_k$ in one cumulative sum
#
# Write `running_means(losses)`: `losses` is a float64 tensor of per-object losses with the objects
# along the first axis (shape $(N,)$ for one point, $(N, \text{steps}, \text{steps})$ for the
# plane); return $L_k$ for $k = 1 \dots N$, row $k-1$ holding the mean of the first $k$ objects,
# with one cumulative sum and no loop over $k$. The check runs it on hidden cases (one object, a
# grid whose side equals $N$, …) against `lc.running_means`.

# %%
### BEGIN SOLUTION
def running_means(losses):
    k = torch.arange(1, len(losses) + 1, dtype=losses.dtype)
    return losses.cumsum(0) / k.reshape(-1, *[1] * (losses.ndim - 1))
### END SOLUTION
### STARTER def running_means(losses):
### STARTER     """L_k for k = 1 … N (row k − 1), objects along the first axis of losses."""
### STARTER     raise NotImplementedError

# %%
ex.running_means.check(running_means)

# %% [markdown]
# ### Exercise 1.4 · Theorem 1's constant
#
# From the first seed's constants, `hb.depth` ($L$, the number of Linear layers),
# `hb.max_weight_norm` ($M_W$) and `hb.max_input_norm` ($M_x$), compute
# $M_H = L\sqrt2\,M_x^2M_W^{2L} + \sqrt2\,M_W^2(M_W^{2L}-1)/(M_W^2-1)$. Compare it with the
# table's `M_H (Thm 1)` and with the largest per-object Hessian norm measured next to it.

# %%
hb = run["bound"].hessian  # Theorem 1's constants, measured on the first seed's network
### BEGIN SOLUTION
L, mw, mx = hb.depth, hb.max_weight_norm, hb.max_input_norm
answer = L * np.sqrt(2) * mx**2 * mw ** (2 * L) + np.sqrt(2) * mw**2 * (mw ** (2 * L) - 1) / (mw**2 - 1)
### END SOLUTION
### STARTER answer = ...  # M_H, a number

# %%
ex.theorem1_constant.check(answer, hb=hb)

# %% [markdown]
# ### Exercise 1.5 · Thought question
#
# The Lemma 2 bound holds at every $k$, but the table puts it about seven orders of magnitude
# above the largest difference measured on the plane. At which steps of the argument (Theorem 1,
# Lemma 2) is most of that lost, and what could a tighter bound on $|L_{k+1} - L_k|$ use instead?
# Discuss, read the paragraph below, then compare with `ex.why_so_loose.solution()`.

# %%
ex.why_so_loose.check()

# %% [markdown]
# **How loose is the bound?** Very. On the toy run (digits, MLP 64-32-32-10, plane ±0.5,
# seeds 0, 1, 2) the Lemma 2 bound exceeds the largest measured difference on the plane by
# $1.8\cdot10^7$ to $2.7\cdot10^7$: seven orders of magnitude. Most of it is Theorem 1:
# $M_H \approx 6\text{–}8\cdot10^6$ against a largest per-object Gauss–Newton Hessian norm
# of 320–460 (four orders), because $M_W^{2L}$ multiplies worst cases layer by layer and
# $M_x$ is the largest input norm (standardised digits have a few large pixels); the $R^2$ term
# assumes the worst Hessian along every direction. The table above has the numbers for this run.
# The paper does not claim tightness: its experiments show the $1/k$ *trend* of the difference
# (and how it moves with depth and width), which is what reproduces here. Note also that the bound
# is derived for the quadratic model of the loss, while the differences measured here are those of
# the true loss on the whole plane, and that $\theta^*$ is the end of training, near but not at a
# minimum.

# %% [markdown]
# ## 2. The top Hessian eigenvalue of $L_k$ settles too
#
# **Claim** (a consequence of eq. (1), measured here; the paper bounds each object's Hessian,
# Theorem 1). Differentiating eq. (1) twice, $H^{(k+1)} - H^{(k)} = (H_{k+1} - H^{(k)})/(k+1)$:
# the Hessian of a nested mean changes less with every object, and by Weyl's inequality so does
# its largest eigenvalue. The right panel above shows $\lambda_{\max}(\nabla^2 L_k)$ (Lanczos,
# `hessian.top_eigenvalues` on the first $k$ objects) for several orderings: they fan out at
# small $k$ and close up as $k$ grows. Their mean also *falls* with $k$: $\lambda_{\max}$ is
# convex, so a small subset overestimates it (a few sharp objects dominate a small mean).
#
# **Self-check.** For every seed, the spread of $\lambda_{\max}$ across orderings (standard
# deviation over the mean at the largest $k$) shrinks with $k$ (log–log slope ≤ −0.5) and is
# below 20 % at the largest $k$ (`claims.convergence.eigenvalue_converges`). Control: the top
# eigenvalue of *one* object's Hessian, the $k$-th of each ordering, does not settle.

# %%
for seed, lam in eigs.items():
    verdict = claims.convergence.eigenvalue_converges(ks, lam)
    self_check(verdict, f"seed {seed}: the spread of λ_max(L_k) across orderings ∝ "
                        f"k^{verdict['slope']:.2f}, {verdict['spread_last']:.0%} at k = {ks[-1]}")

# %% [markdown]
# **Explore.** Slide $k$: the left panel is $|L_{k+1} - L_k|$ on the plane for one ordering,
# from eq. (1); it is largest far from $\theta^*$, where the losses (and their spread across
# objects) are large, and it falls by about ten for every tenfold $k$ (the right panel, with the
# chosen $k$ marked).

# %%
panel = convergence_widgets.difference_panel(run["surf"], run["diffs"], bound=run["bound"])
panel

# %%
verdict = claims.panel_drawn(panel, n_axes=3)
self_check(verdict, f"difference panel drawn headless ({verdict['axes']} axes, none empty)")

# %% [markdown]
# ## Try it yourself
#
# 1. **Depth and width (the paper's Fig. 2).** Rerun with `widths=(16,) * L` for $L = 1, 3, 5$
#    and with `widths=(h, h)` for $h = 8, 32, 128$. The paper finds the difference grows with
#    depth and shrinks with width. Does the bound move the same way? Compare $M_H$ in the table.
# 2. **Further from the minimum.** Set `span = 1.0`: $R$ doubles. Predict how the bound and the
#    measured difference change (the bound has $R^2$; the measured difference follows the
#    spread of the per-object losses).
# 3. **An untrained net.** Skip `train.fit`. Does the $1/k$ rate survive? (Eq. (1) says it
#    should; Lemma 2's assumption that $\theta^*$ is a minimum fails.)
# 4. **One ordering.** Use `orders=1` (no averaging): the curve is noisy, but its slope? The
#    authors smooth a single curve with an exponential moving average instead.
# 5. **Biases.** Build the net with `bias=True`: `lemma2_bound` refuses it. Why does Theorem 1
#    need bias-free layers (look at the proof's bound on $\|x^{(p)}\|$)?
#
# ## Read more
#
# - Kiselev, Grabovoy (2024). *Unraveling the Hessian: a key to smooth convergence in loss
#   function landscapes.* arXiv 2409.11995.
# - Li, Xu, Taylor, Studer, Goldstein (2018). *Visualizing the loss landscape of neural nets.*
#   NeurIPS 2018, arXiv 1712.09913 (filter-normalised planes).
# - Sagun, Evci, Güney, Dauphin, Bottou (2017). *Empirical analysis of the Hessian of
#   over-parametrized neural networks.* arXiv 1706.04454 (the Gauss–Newton part dominates the top
#   of the spectrum).
# - Wu et al. (2020). *Dissecting Hessian: understanding common structure of Hessian in neural
#   networks.* arXiv 2010.04261 (the G-term of a fully connected net used by
#   Theorem 1).
