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
# # 11 · Pruning and generalisation: a compression bound, ingredient by ingredient
#
# Arora, Ge, Neyshabur & Zhang (2018, arXiv 1802.05296, Theorem 2.1) bound the test error of a
# **compressed** network $g$ by the training margins of the original $f$ plus a term that counts
# the compressed network's parameters: if $|f(x)[y] - g(x)[y]| \le \gamma$ on every training input
# and $g$ is described by $q$ numbers taking $r$ values each, then with high probability
# $L_0(g) \le \hat L_\gamma(f) + O(\sqrt{q\log r/m})$ for $m$ training points. Guha, Dubey & Huo
# (2023, arXiv 2305.18789) use this frame for **magnitude pruning**: the pruned net is the
# compression; its estimate stays close to the dense function (small first term) and, by
# **sparse matrix sketching**, each pruned matrix is represented by a much smaller dense one
# (small second term). They also give their own magnitude-based compression algorithm and extend
# the bound to iterative pruning.
#
# **What is the paper's and what is ours.** We could read only the abstract of Guha et al., not
# their theorem. So this notebook evaluates Arora et al.'s bound with an explicit constant
# (Hoeffding + a union bound) and three ways of counting the compressed net — (a) every dense
# weight, (b) the non-zeros *and their positions*, (c) a sketch per layer of side
# $m_l = \lceil c\sqrt{\mathrm{nnz}_l}\,\ln p_l\rceil$, the scaling of Dasarathy et al.'s sparse-matrix
# sketching (IEEE Trans. Inf. Theory 2015); that Guha et al. use this result, and the constant $c = 1$, are our
# assumptions. The margin term is pointwise (ours, and tighter than a uniform $\gamma$). Every
# formula is in the docstrings of `toolkit.pruning_bounds`. Absolute values are **vacuous** at toy
# scale, as for every bound of this kind: read the trends and the orderings.
#
# (The sparsifier that Yao, Yu & Koutis propose in arXiv 2307.08982 is *not* implemented here:
# we could not read their algorithm. Notebook 08 §4 compares the sparsifiers we do
# have — magnitude, L2 and ℓ1 sampling, random — on $\|W - W_s\|_2$, subspace angle and accuracy.)

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

import pandas as pd
import torch

import toolkit
from toolkit import claims, data, models, plotting, presets, pruning, pruning_bounds, train
from toolkit.plotting import pruning_bounds as bound_plots
from toolkit.utils import self_check
from toolkit.widgets import pruning_bounds as bound_widgets

preset = presets.get_preset("pruning_bounds", PRESET)
device = toolkit.get_device(DEVICE)
toolkit.seed_everything(SEED)
plotting.set_theme()

train_set, test_set = data.load(preset.dataset, seed=SEED)
in_dim, n_classes = train_set.tensors[0].shape[1], data.n_classes(train_set)
print(preset)

# %%
from toolkit import exercises

ex = exercises.load("11")  # this notebook's exercises: ex.<name>.hint(), .check(...), .solution()

# %% [markdown]
# ## 1. The bound's ingredients across sparsities
#
# We train one MLP, then prune copies of it one-shot (no retraining) to each sparsity, every
# hidden layer to the same fraction, the readout dense — with magnitude pruning and, as the
# control, random pruning. For each pruned copy $g$ we record the ingredients the issue lists:
# per-layer $\|W - W_s\|_2$ (`layer_table`), the dense net's training margins, the non-zeros, the
# sketch dimensions — and the bound's two terms:
#
# * the **margin term** $\hat P[\mathrm{margin}_f(x) \le 2\,\mathrm{dev}(x)]$: the training points
#   where pruning moved the logits enough that it *could* flip the prediction
#   (`deviation="measured"`: the logits' actual change; `"norms"`: the upper bound on it that the
#   per-layer $\|W - W_s\|_2$ give, `pruning_bounds.perturbation_bound`);
# * the **complexity term** $\sqrt{(\ln N + \ln(1/\delta))/(2m)}$ with $\ln N = q\ln r$
#   for the dense and the sketch counts, plus $\ln\binom{n}{\mathrm{nnz}}$ for the positions in
#   the sparse count.

# %% [markdown]
# ### Exercise 1.1 · Predict before you run
#
# At sparsity 0.7 (the sparse count, the measured deviation), which pruned copy will get the
# smaller bound, and through which term? (a) magnitude pruning, through its margin term (the
# complexity terms are equal); (b) magnitude pruning, through its complexity term; (c) random
# pruning; (d) neither: the two bounds are equal. Commit to a letter *before* running the next
# cell; the check after the self-checks compares it with the sweep.

# %%
### BEGIN SOLUTION
answer = "a"
### END SOLUTION
### STARTER answer = ...  # "a", "b", "c" or "d"

# %%
torch.manual_seed(SEED)
model = models.MLP(in_dim, list(preset.widths), n_classes)
train.fit(model, train_set, test=test_set, epochs=preset.epochs, batch_size=preset.batch_size,
          lr=preset.lr, momentum=preset.momentum, device=device, seed=SEED, progress=False)
model = model.cpu()
rows, layer_rows = [], []
for method in preset.methods:
    for amount in preset.amounts:
        pruned = pruning.prune(copy.deepcopy(model), method=method, amount=amount, scope="layer",
                               exclude=("head",), seed=SEED)
        test_err = 1 - train.evaluate(pruned, test_set)["acc"]
        layers = pruning_bounds.layer_table(model, pruned, exclude=("head",), c=preset.sketch_c)
        layer_rows.append(layers.assign(method=method, amount=amount))
        for deviation in ("measured", "norms"):
            table = pruning_bounds.bound_table(model, pruned, train_set, exclude=("head",),
                                               c=preset.sketch_c, bits=preset.bits,
                                               delta=preset.delta, deviation=deviation)
            rows.append(table.assign(method=method, amount=amount, deviation=deviation,
                                     test_err=test_err))
sweep, layer_sweep = pd.concat(rows, ignore_index=True), pd.concat(layer_rows, ignore_index=True)
print(sweep.query("deviation == 'measured' and encoding == 'sparse'").pivot_table(
    index="amount", columns="method", values=["test_err", "margin_loss", "bound"]).round(3))
print(sweep.query("deviation == 'measured' and method == 'magnitude'").pivot_table(
    index="amount", columns="encoding", values="q").astype(int))

# %%
fig = bound_plots.bound_figure(layer_sweep, sweep, method="magnitude")
fig

# %% [markdown]
# How to read the three panels (toy preset, seeds 0–2):
#
# * **Left.** $\|W - W_s\|_2$ grows with sparsity in both hidden layers, and random pruning's is
#   larger than magnitude pruning's at every sparsity (≈ 2.6 vs 0.95 at 50 %).
# * **Middle.** The sparse count falls in proportion to the non-zeros. The sketch count stays at
#   the dense one until sparsity 0.98: a sketch of side $m \approx \sqrt{\mathrm{nnz}}\ln p$ holds
#   $m^2 \approx \mathrm{nnz}\,\ln^2 p$ numbers, fewer than the $p^2$ of the matrix only above
#   sparsity $1 - 1/\ln^2 p \approx 0.96$ here — and never fewer than the non-zeros themselves.
#   With our constant, sketching pays only for very sparse, very wide layers.
# * **Right.** The margin term (black, dashed) rises with the test error (red): ≈ 0 at 50 %, 0.18–0.27
#   at 70 %, ≈ 1 from 90 %. Computed from the layer norms instead (grey dotted) it is 1 at every
#   sparsity > 0: chaining the layers' operator norms inflates the deviation ~30× (seed 0,
#   printout below).
#   The complexity term (14.2 for the dense count, 10.4 → 2.6 for the sparse one) dominates
#   every total: **all three
#   bounds are > 1 (vacuous), and they *fall* as sparsity rises while the test error rises**.
#   The trend that a compression bound teaches is in its first term; its second term, at $m$ ≈
#   1,400 training points, only says "fewer numbers, smaller bound".

# %%
x_train = train_set.tensors[0]
pruned = pruning.prune(copy.deepcopy(model), method="magnitude", amount=0.5, scope="layer",
                       exclude=("head",))
measured = pruning_bounds.output_deviation(model, pruned, x_train)
from_norms = pruning_bounds.perturbation_bound(model, pruned, x_train)
print(f"magnitude 50%: median logit change {measured.median():.2f}, its bound from the layer "
      f"norms {from_norms.median():.1f} ({(from_norms / measured).median():.0f}x)")

# %%
tracks = claims.pruning_bounds.approximation_tracks_test_error(sweep, method="magnitude")
self_check(tracks, f"the margin term rises with the test error across sparsities (rank "
                   f"correlation {tracks['rank_corr']:.2f}; test error +{tracks['test_err_rise']:.2f})")
ranks = claims.pruning_bounds.ranks_methods_like_test_error(sweep, better="magnitude",
                                                            worse="random")
self_check(ranks, f"at equal sparsity the bound ranks magnitude below random, as the test error "
                  f"does, at {ranks['agree']} sparsities (tied at {ranks['tied']}, reversed at "
                  f"{ranks['reversed']})")
sketch = claims.pruning_bounds.sketch_below_dense(sweep, method="magnitude")
self_check(sketch, f"the sketch count is below the dense count from sparsity "
                   f"{sketch['wins_from']:.2f} (to {sketch['ratio_at_top']:.2f} of it at the top); "
                   f"the explicit sparse code is {sketch['sparse_over_sketch']:.2f} of the sketch")

# %%
ex.bound_prediction.check(answer, sweep=sweep)

# %% [markdown]
# ### Exercise 1.2 · The margin of a prediction
#
# Compute the margin $f(x)[y] - \max_{j\ne y} f(x)[j]$ of the dense `model` on each of the first
# 20 training points `x_few` (labels `y_few`): the true class's logit minus the largest *other*
# logit, one number per point. These are the margins that the margin term compares with twice the
# change of the logits. Stuck? `ex.margins_by_hand.hint()`.

# %%
x_few, y_few = train_set.tensors[0][:20], train_set.tensors[1][:20]
### BEGIN SOLUTION
with torch.no_grad():
    logits = model(x_few)
true = logits.gather(1, y_few[:, None]).squeeze(1)
others = logits.scatter(1, y_few[:, None], float("-inf")).amax(1)
answer = true - others
### END SOLUTION
### STARTER answer = ...  # one margin per point, 20 numbers

# %%
ex.margins_by_hand.check(answer, model=model, x_few=x_few, y_few=y_few)

# %% [markdown]
# ### Exercise 1.3 · The side of a layer's sketch
#
# Write `sketch_side(nnz, rows, cols, c)`: the side $m = \lceil c\sqrt{\mathrm{nnz}}\,\ln p\rceil$,
# $p = \max(\text{rows}, \text{cols})$, of the square sketch that stores a pruned layer with `nnz`
# non-zeros (natural log; an empty layer has $m = 0$). The check compares it with
# `pruning_bounds.sketch_dimension` on hidden layers (rectangular, dense, empty, other $c$).
# Then compare $m^2$ with the layer's size in `layer_sweep`: where does the sketch start to pay?

# %%
import math


### BEGIN SOLUTION
def sketch_side(nnz, rows, cols, c):
    return math.ceil(c * math.sqrt(nnz) * math.log(max(rows, cols)))
### END SOLUTION
### STARTER def sketch_side(nnz, rows, cols, c):
### STARTER     """The side m of the sketch of a rows × cols layer with nnz non-zeros, an int."""
### STARTER     raise NotImplementedError

# %%
ex.sketch_side.check(sketch_side)

# %% [markdown]
# ### Exercise 1.4 · Thought question
#
# Every total above is larger than 1 — vacuous as a bound on a test error — and the complexity
# term alone is above 1 at every sparsity. What would have to change for
# $\sqrt{(\ln N + \ln(1/\delta))/(2m)}$ to fall well below 1, and why can pruning alone not get
# there while the margin term stays small? Discuss, then compare with `ex.why_vacuous.solution()`.

# %%
ex.why_vacuous.check()

# %% [markdown]
# ## 2. Point by point: which training points can pruning flip?
#
# Your turn: the slider magnitude-prunes a copy of the trained net. Left, every training point:
# its dense margin against twice the change of its logits; the points on or below the diagonal
# form the margin term, and the red ones are those the pruned net actually gets wrong (always
# below the line: the bound's first step is exact). Right, the bound's two terms for the three
# counts, next to the pruned net's test error. Where does the cloud cross the diagonal? At which
# sparsity does the sketch bar shrink below the dense one?

# %%
bounds_panel = bound_widgets.bound_panel(model, train_set, test_set, method="magnitude",
                                         c=preset.sketch_c, sparsity=preset.panel_sparsity)
bounds_panel

# %%
self_check(claims.panel_drawn(bounds_panel, n_axes=2),
           "the panel drew the margins against the deviations and the bound's terms")

# %% [markdown]
# ## Try it yourself
#
# 1. **Fine-tune after pruning.** Fine-tune a 90 % pruned copy for a few epochs (`train.fit` on it)
#    and recompute `bound_table(model, pruned, train_set)`. The test error falls — what happens to
#    the margin term, and why is the bound now about a different comparison ($g$ far from $f$)?
# 2. **More data.** The complexity term scales as $1/\sqrt m$. How many training points would the
#    sparse count need at 90 % sparsity for the bound to drop below 1? Compute it from the table.
# 3. **The sketch constant.** Set `preset = preset.with_(sketch_c=0.3)` and re-run §1. From which
#    sparsity does the sketch beat the dense count now, and does it ever beat the sparse code?
# 4. **Wider layers.** Train `widths=(512, 512)`: predict from $1 - 1/\ln^2 p$ where the sketch
#    starts to pay, then check.
# 5. **A uniform margin.** Use `deviation="uniform"` (Arora et al.'s single $\gamma$ for all
#    points): how much larger is the margin term at 50 % sparsity?
#
# ## Read more
#
# * S. Arora, R. Ge, B. Neyshabur, Y. Zhang, *Stronger generalization bounds for deep nets via a
#   compression approach*, ICML 2018, arXiv 1802.05296.
# * E. K. Guha, P. Dubey, X. Huo, *Generalization Bounds for Magnitude-Based Pruning via Sparse
#   Matrix Sketching*, arXiv 2305.18789 (we read the abstract only).
# * G. Dasarathy, P. Shah, B. N. Bhaskar, R. Nowak, *Sketching sparse matrices, covariances, and
#   graphs via tensor products*, IEEE Trans. Inf. Theory 61(3):1373–1388, 2015
#   (preprint "Sketching sparse matrices", 2013; we did not check its arXiv id).
# * B. Neyshabur, S. Bhojanapalli, N. Srebro, *A PAC-Bayesian approach to spectrally-normalized
#   margin bounds for neural networks*, arXiv 1707.09564 (the perturbation lemma).
# * S. Yao, D. Yu, I. Koutis, *Neural Network Pruning as Spectrum Preserving Process*,
#   arXiv 2307.08982 (notebook 08 §4).
