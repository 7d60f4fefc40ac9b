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
# # 06 · How curvature scales: the rank of a CNN's Hessian
#
# A network with $P$ parameters has a $P\times P$ loss Hessian, yet most of its eigenvalues are
# zero. Singh, Hofmann & Schölkopf (2023, arXiv 2305.09088) studied *how many* are not: for
# CNNs the rank of the Hessian grows roughly like $\sqrt{P}$ as the channel counts grow, not
# like $P$. Here we form the Hessian of tiny nets densely, in float64, and count its rank.
#
# `hessian.numerical_rank` counts singular values above
# $\tau = \max(\mathrm{atol}, \mathrm{rtol}\,\sigma_{\max})$, with $\mathrm{rtol} = P\,\varepsilon_{64}$
# by default (numpy's `matrix_rank` rule), and returns $\tau$ with the rank.

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
from toolkit import claims, hessian, models, presets
from toolkit.plotting import curvature as curvature_plots
from toolkit.utils import self_check
from toolkit.widgets import curvature as curvature_widgets

preset = presets.get_preset("curvature", PRESET)
device = toolkit.get_device(DEVICE)  # the dense float64 Hessians below run on the CPU
toolkit.seed_everything(SEED)
print(preset)

# %%
from toolkit import exercises

ex = exercises.load("06")  # this notebook's exercises: ex.<name>.hint(), .check(...), .solution()

# %% [markdown]
# ## 1. The Hessian's rank grows like √(number of parameters)
#
# **Claim** (Singh, Hofmann & Schölkopf 2023, arXiv 2305.09088). Take CNNs with $c$ channels in
# every layer: the parameter count grows like $c^2$, the Hessian's rank only like $c$, so
# rank $\propto \sqrt{P}$. We sweep $c$ for a linear 1-D CNN (`models.TinyCNN`, depth 3, kernel 3,
# average-pooled readout, no biases), the same CNN with ReLUs, and a linear MLP with two hidden
# layers of about the same parameter count, at initialisation, under MSE to random targets.
# (The paper also derives closed-form bounds for linear CNNs; they are not reproduced here.)

# %% [markdown]
# ### Exercise 1.1 · Predict before you run
#
# The linear CNN's Hessian is rank-deficient because a product of linear maps has many
# parameterisations. What about the *linear MLP* of about the same size (two hidden layers, no
# biases)? At the largest size its Hessian will be (a) (nearly) full rank, rank ≥ 90 % of the
# parameter count; (b) rank-deficient, below 90 %. Commit to a letter *before* running the next
# cell; the check after the self-check compares it with what happened.

# %%
### BEGIN SOLUTION
answer = "b"
### END SOLUTION
### STARTER answer = ...  # "a" or "b"

# %%
d_in = preset.rank_in_channels * preset.rank_size**preset.rank_dim
x = torch.randn(preset.rank_samples, d_in)
y = torch.randn(preset.rank_samples, preset.rank_outputs)
rows, spectra = [], {}
for kind, c in tqdm([(k, c) for k in ("linear CNN", "ReLU CNN", "linear MLP")
                     for c in preset.widths], desc="dense Hessians"):
    torch.manual_seed(SEED + c)
    cnn = models.TinyCNN(preset.rank_in_channels, c, preset.rank_outputs, dim=preset.rank_dim,
                         size=preset.rank_size, kernel_size=preset.rank_kernel,
                         depth=preset.rank_depth, readout="pool",
                         activation="relu" if kind == "ReLU CNN" else "linear")
    n_cnn = models.count_parameters(cnn)
    width = int(round((np.sqrt((d_in + preset.rank_outputs) ** 2 + 4 * n_cnn)
                       - d_in - preset.rank_outputs) / 2))   # M² + M(d + K) ≈ P
    net = cnn if "CNN" in kind else models.MLP(d_in, [max(width, 1)] * 2, preset.rank_outputs,
                                               activation="linear", bias=False)
    H = hessian.hessian_matrix(net, "mse", (x, y))
    rank = hessian.numerical_rank(H)
    if kind == "linear CNN":
        spectra[c] = (torch.linalg.svdvals(H), rank.tol)
    rows.append({"model": kind, "channels": c, "n_params": models.count_parameters(net),
                 "rank": rank.rank, "tol": rank.tol})
ranks = pd.DataFrame(rows)
ranks.pivot_table(index="channels", columns="model", values=["n_params", "rank"])

# %%
fig = curvature_plots.rank_scaling(ranks)

# %% [markdown]
# **Self-check.** For the linear CNN, the log–log slope of rank against parameter count over the
# two largest nets lies in (0.3, 0.7) and the largest Hessian is rank-deficient
# (`claims.curvature.rank_grows_like_sqrt`). The slope over the small nets is larger: the rank
# is linear in $c$, but $P$ is quadratic in $c$ only once the $c^2$ layers dominate.

# %%
lin = ranks[ranks["model"] == "linear CNN"]
verdict = claims.curvature.rank_grows_like_sqrt(lin["n_params"], lin["rank"])
print(verdict)
self_check(verdict, f"linear CNN: rank ∝ #params^{verdict['slope']:.2f}; the largest Hessian has "
                    f"rank {verdict['rank_fraction']:.0%} of its size")

# %%
ex.mlp_rank_prediction.check(answer, ranks=ranks)

# %% [markdown]
# ### Exercise 1.2 · The numerical rank
#
# Write `numerical_rank(H)`: the number of singular values of `H` above
# $\tau = \max(\text{shape})\cdot\varepsilon\cdot\sigma_{\max}$, with $\varepsilon$ the machine
# epsilon of `H`'s own dtype (`torch.finfo(H.dtype).eps`). It must agree with
# `hessian.numerical_rank(H).rank`; the check runs it on hidden cases, an indefinite Hessian (as at
# initialisation) and a tiny-scale one included. Stuck? `ex.numerical_rank.hint()`;
# `ex.numerical_rank.solution()` shows an answer.

# %%
### BEGIN SOLUTION
def numerical_rank(H):
    sv = torch.linalg.svdvals(H)
    if sv.numel() == 0 or float(sv.max()) == 0.0:
        return 0
    tol = max(H.shape) * torch.finfo(H.dtype).eps * sv.max()
    return int((sv > tol).sum())
### END SOLUTION
### STARTER def numerical_rank(H):
### STARTER     """The number of singular values of H above max(H.shape) * eps * sigma_max, an int."""
### STARTER     raise NotImplementedError

# %%
ex.numerical_rank.check(numerical_rank)

# %% [markdown]
# ### Exercise 1.3 · The slope, by hand
#
# From the `ranks` table, compute the log–log slope of the linear CNN's rank against its parameter
# count over the two largest nets, $\log(r_2/r_1)/\log(P_2/P_1)$, the number the self-check tests.

# %%
### BEGIN SOLUTION
by_size = ranks[ranks["model"] == "linear CNN"].sort_values("n_params")
p, r = by_size["n_params"].to_numpy(dtype=float), by_size["rank"].to_numpy(dtype=float)
answer = np.log(r[-1] / r[-2]) / np.log(p[-1] / p[-2])
### END SOLUTION
### STARTER answer = ...  # the slope, a number (√P predicts 1/2)

# %%
ex.rank_slope.check(answer, ranks=ranks)

# %% [markdown]
# **What did not reproduce at this scale.** The ReLU CNN's Hessian is (nearly) full rank at
# every size here: at initialisation with random targets the residual term of the Hessian
# (second derivatives of the outputs, weighted by the residuals) fills the gaps that the linear
# net's symmetries leave. The linear MLP of the same size is rank-deficient too, with a similar
# slope: the √P law is about channel (width) growth, not specific to convolutions.
#
# **Explore.** Slide the channel count: the singular values of the linear CNN's Hessian fall off
# a cliff of about eight orders of magnitude, and the tolerance line sits inside it (at 16
# channels the last counted value is ~10⁵ τ, the first dropped one ~10⁻⁴ τ), so the rank does not
# hinge on the exact choice of τ.

# %%
panel = curvature_widgets.rank_panel(ranks, spectra)
panel

# %%
verdict = claims.panel_drawn(panel, n_axes=2)
self_check(verdict, f"rank panel drawn headless ({verdict['axes']} panels, none empty)")

# %% [markdown]
# ### Exercise 1.4 · Thought question
#
# The Hessian of the MSE is its Gauss–Newton part plus the residual (functional) part. Which of the
# two makes the ReLU CNN's Hessian (nearly) full rank here, and what would you change to see
# rank-deficiency for ReLU nets? Discuss, then compare with `ex.why_relu_full_rank.solution()`.

# %%
ex.why_relu_full_rank.check()

# %% [markdown]
# ## Try it yourself
#
# 1. **Zero residual.** Replace `y` by the CNN's own outputs (`y = cnn(x).detach()`): the full
#    Hessian becomes its Gauss–Newton part (`hessian.hessian_matrix(..., part="gauss_newton")`).
#    Predict its rank for the linear CNN, and check it against $N\cdot K$.
# 2. **The tolerance.** Pass `rtol=1e-6` to `numerical_rank`. Which models' ranks move, and why
#    do the linear CNN's not?
# 3. **2-D.** Set `rank_dim = 2, rank_size = 4` (the `full` preset): does the slope stay near ½?
# 4. **Readout.** Build the CNN with `readout="flatten"`: the readout now has $c \cdot$ size
#    parameters. How does the slope change over this range of $c$?
#
# ## Read more
#
# - Singh, Hofmann, Schölkopf (2023). *The Hessian perspective into the nature of convolutional
#   neural networks.* ICML 2023, arXiv 2305.09088.
# - Singh, Bachmann, Hofmann (2021). *Analytic insights into structure and rank of neural network
#   Hessian maps.* NeurIPS 2021, arXiv 2106.16225.
# - Sagun, Evci, Güney, Dauphin, Bottou (2017). *Empirical analysis of the Hessian of
#   over-parametrized neural networks.* arXiv 1706.04454.
