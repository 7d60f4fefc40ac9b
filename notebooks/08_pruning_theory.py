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
# # 08 · Pruning theory: path-norms
#
# Gonon, Brisebarre, Riccietti & Gribonval, "A path-norm toolkit for modern networks" (ICLR 2024,
# arXiv 2310.01225). A ReLU network's function is a sum over the **paths** of its graph (from an
# input, or from a neuron's bias, to an output) of the product of the weights along the path, times
# a 0/1 factor saying whether every ReLU on the path is active. The vector of those products is the
# path-lifting $\Phi(\theta)$, and $\|\Phi(\theta)\|_p$ is the $L^p$ **path-norm**. The paper shows
# it is computed by **one forward pass**: raise every weight and bias to $|\cdot|^p$, replace the
# ReLUs by the identity (and each max-pool by the sum of its window), feed the all-ones input and
# sum the outputs: $\|\Phi(\theta)\|_p^p = \|R_{|\theta|^p}(\mathbf 1)\|_1$ — that is
# `toolkit.spectra.path_norm`, checked in the tests against an explicit sum over every path of
# tiny MLPs, a residual net and a conv + max-pool net.
#
# Section 4 compares four sparsifiers on the spectral view of pruning of Yao, Yu & Koutis
# (arXiv 2307.08982). Section 3 compares the ways to retrain a pruned net: lottery tickets, rewinding,
# fine-tuning and learning-rate rewinding (Renda, Frankle & Carbin 2020, arXiv 2003.02389).

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
import functools

import pandas as pd
import torch

import toolkit
from toolkit import claims, data, models, plotting, presets, pruning, spectra, train
from toolkit.plotting import pruning as pruning_plots
from toolkit.utils import self_check
from toolkit.widgets import pruning as pruning_widgets

preset = presets.get_preset("pruning_theory", PRESET)
device = toolkit.get_device(DEVICE)
toolkit.seed_everything(SEED)
plotting.set_theme()

train_set, test_set = data.load(preset.dataset, seed=SEED)
in_dim, n_classes = train_set.tensors[0].shape[1], data.n_classes(train_set)
print(preset)

# %%
from toolkit import exercises

ex = exercises.load("08")  # this notebook's exercises: ex.<name>.hint(), .check(...), .solution()

# %% [markdown]
# ## 1. The path-norm does not see the rescaling symmetry; layer norms do
#
# Claim (Gonon et al., arXiv 2310.01225, §2): multiplying a hidden ReLU neuron's incoming weights
# and bias by $\lambda > 0$ and dividing its outgoing weights by $\lambda$ leaves the function and
# $\Phi(\theta)$ unchanged. Products of layer norms — the capacity term of norm-based bounds —
# are not invariant: here we rescale every neuron of the first hidden layer by its own
# $\lambda_j$, drawn log-uniformly in $[10^{-r}, 10^{r}]$.

# %%
torch.manual_seed(SEED)
model = models.MLP(in_dim, list(preset.widths), n_classes)
first, second = [name for name, _ in spectra.weight_layers(model)][:2]
generator = torch.Generator().manual_seed(SEED)
r = preset.rescale_range
scales = 10 ** (2 * r * torch.rand(preset.widths[0], generator=generator) - r)
rescaled = spectra.rescale_neurons(model, first, scales)
x = test_set.tensors[0][:256]
with torch.no_grad():
    same_function = float((model(x) - rescaled(x)).abs().max())
callback = spectra.PathNormCallback((in_dim,))
before, after = callback(0, model, []), callback(0, rescaled, [])
print(pd.DataFrame({"model": before, "rescaled copy": after}))
print(f"largest output difference: {same_function:.1e}")

# %%
invariant = claims.pruning.path_norm_invariant(before, after)
self_check(invariant, f"path-norms unchanged by the rescaling (relative change "
                      f"{invariant['path_norm_change']:.1e}) while the product of operator norms "
                      f"moved by a factor {invariant['ratio']:.0f}")

# %% [markdown]
# ### Exercise 1.1 · The L¹ path-norm of a one-hidden-layer net
#
# Write `path_norm_1(w1, b1, w2, b2)`: $\|\Phi(\theta)\|_1$ of $x \mapsto W_2\,\mathrm{relu}(W_1x + b_1)
# + b_2$, the sum over all paths of the absolute product of the weights along them. A path starts
# at an input ($W_2[k, j]\,W_1[j, i]$), at a hidden neuron's bias ($W_2[k, j]\,b_1[j]$) or at an
# output's bias ($b_2[k]$). The check compares it with `spectra.path_norm`'s forward pass on hidden
# cases. Stuck? `ex.path_norm_1.hint()`; `ex.path_norm_1.solution()` shows an answer.

# %%
### BEGIN SOLUTION
def path_norm_1(w1, b1, w2, b2):
    return float((w2.abs() @ w1.abs()).sum() + (w2.abs() @ b1.abs()).sum() + b2.abs().sum())
### END SOLUTION
### STARTER def path_norm_1(w1, b1, w2, b2):
### STARTER     """The L1 path-norm of x -> w2 relu(w1 x + b1) + b2, a number."""
### STARTER     raise NotImplementedError

# %%
ex.path_norm_1.check(path_norm_1)

# %% [markdown]
# ### Exercise 1.2 · Thought question
#
# The rescaling left the function and the path-norm unchanged but moved the product of operator
# norms by orders of magnitude. Why can a capacity term that changes under a symmetry of the
# network not be a good measure of its complexity, and what does the path-norm give up in exchange
# for its invariance? Discuss, then compare with `ex.why_not_invariant.solution()`.

# %%
ex.why_not_invariant.check()

# %% [markdown]
# ## 2. Path-norms through training and through pruning
#
# The paper's generalisation bound grows with $\|\Phi(\theta)\|_1$ (its §4; vacuous at this scale,
# as the authors report for ResNets too). We only *track* the quantities: the two path-norms and
# the operator-norm product during training, then after one-shot magnitude pruning of the trained
# net, next to the generalisation gap (train accuracy − test accuracy). Each norm is divided by its
# first value so that all three share one log axis. No claim is made on how they co-vary.

# %%
history = train.fit(model, train_set, test=test_set, epochs=preset.epochs,
                    batch_size=preset.batch_size, lr=preset.lr, momentum=preset.momentum,
                    callbacks=[callback], callback_every=preset.record_every, device=device,
                    seed=SEED, progress=False)
tracked = history.dropna(subset=["path_norm_1"]).assign(
    gap=lambda h: h["train_acc"] - h["test_acc"])
rows = []
for amount in preset.amounts:
    pruned = pruning.prune(copy.deepcopy(model), method="magnitude", amount=amount,
                           scope="layer", exclude=("head",))
    rows.append({"sparsity": amount, **callback(0, pruned, []),
                 "gap": train.evaluate(pruned, train_set)["acc"]
                 - train.evaluate(pruned, test_set)["acc"],
                 "test_acc": train.evaluate(pruned, test_set)["acc"]})
after_pruning = pd.DataFrame(rows)
print(after_pruning.round(3).to_string(index=False))

# %%
fig, axes = plotting.new_figure(2, width=5.0, height=3.6)
pruning_plots.norms_and_gap(tracked, "epoch", ax=axes[0])
pruning_plots.norms_and_gap(after_pruning, "sparsity", xlabel="magnitude-pruned fraction",
                            ax=axes[1])
fig.tight_layout()
fig

# %% [markdown]
# Your turn: the slider magnitude-prunes a copy of the trained net (every hidden layer at the
# chosen fraction, the head dense) and redraws the three capacity terms relative to the dense net,
# next to train and test accuracy. Which of the three falls first as you prune, and does the
# generalisation gap follow any of them?

# %%
norms_panel = pruning_widgets.path_norm_panel(model, train_set, test_set, input_shape=(in_dim,),
                                              exclude=("head",), scope="layer")
norms_panel

# %%
self_check(claims.panel_drawn(norms_panel, n_axes=2),
           "the panel drew the capacity terms and the accuracies of the pruned copy")

# %% [markdown]
# ## 3. Rewinding, re-initialising or fine-tuning after pruning, at two learning rates
#
# Claims. Frankle & Carbin (arXiv 1803.03635, §5) and Liu et al. (arXiv 1810.05270): a lottery
# ticket — the pruned mask with its survivors reset to the initialisation $\theta_0$ — beats the
# same mask re-initialised, but at larger learning rates that advantage disappears. Renda, Frankle &
# Carbin (arXiv 2003.02389): at equal retraining epochs, rewinding the weights to an early epoch
# $\theta_k$, and even more simply **learning-rate rewinding** (keep the trained survivors, replay
# the learning-rate schedule), match or beat the ticket; plain fine-tuning at the schedule's final
# small rate is worse than both.
#
# `pruning.retraining_modes` runs iterative magnitude pruning (each round halves the surviving
# weights) with five lineages: ticket ($\theta_0$), rewind to $\theta_k$, the ticket's mask
# re-initialised, fine-tuning at 0.1 × the peak rate, and learning-rate rewinding. Every mode
# retrains $T-k$ epochs per round; all but fine-tuning replay the learning rates of epochs
# $k..T-1$ of the step schedule, so each pair of modes differs in one thing.

# %% [markdown]
# ### Exercise 3.1 · Predict before you run
#
# At the *large* learning rate, after the last round, by how much will the lottery ticket beat the
# same mask re-initialised, in test accuracy? (a) by 0.05 or more; (b) by less than 0.05. Commit
# to a letter *before* running the next cell; the check after the self-checks compares it with
# what happened.

# %%
### BEGIN SOLUTION
answer = "b"
### END SOLUTION
### STARTER answer = ...  # "a" or "b"

# %%
mlp = functools.partial(models.MLP, in_dim, list(preset.rt_widths), n_classes)
retrain = {}
for lr in preset.rt_lrs:
    retrain[f"lr {lr}"] = pruning.retraining_modes(
        mlp, train_set, test_set, lr=lr, epochs=preset.rt_epochs,
        rewind_epoch=preset.rt_rewind_epoch, rounds=preset.rt_rounds, rate=preset.rt_rate,
        schedule=preset.rt_schedule, finetune_lr=preset.rt_finetune_factor * lr,
        batch_size=preset.rt_batch_size, exclude=("head",), seed=SEED, device=device,
        progress=False)
    last = retrain[f"lr {lr}"].query("round == @preset.rt_rounds")
    print(f"lr {lr}, final sparsity {last['sparsity'].iloc[0]:.3f}:",
          last.set_index("mode")["test_acc"].round(3).to_dict())
small_rate, large_rate = (f"lr {lr}" for lr in preset.rt_lrs)
fig = pruning_plots.retraining_plot(retrain)

# %% [markdown]
# Read the panels (shared y-axis): at the small rate, 8 epochs leave the dense net short of
# converged; the ticket (blue) stays well above its re-initialised mask (red, dashed). At the
# large rate the two nearly meet, and learning-rate rewinding (purple) and fine-tuning at a small
# rate (green) sit with or above the ticket. On seeds 0–2 the ticket's edge over re-initialisation
# was 0.12–0.25 (small rate) and 0.01–0.03 (large rate). Fine-tuning at the schedule's *final*
# rate (0.01 × peak) instead fell 0.035–0.087 behind the ticket (the control in the tests), as
# Renda et al. report; rewinding to $\theta_k$ was never worse than to $\theta_0$ here, but by at
# most 0.06, so we make no claim on it.

# %%
vanishes = claims.pruning.ticket_advantage_vanishes(retrain[small_rate], retrain[large_rate])
self_check(vanishes, f"the ticket beats its re-initialised mask by {vanishes['gap_small']:.3f} "
                     f"at the small rate, by only {vanishes['gap_large']:.3f} at the large one")
matches = claims.pruning.retraining_matches_ticket(retrain[large_rate])
self_check(matches, f"at the large rate, fine-tuning ({matches['finetune_minus_ticket']:+.3f}) "
                    f"and learning-rate rewinding ({matches['lr_rewind_minus_ticket']:+.3f}) "
                    f"match or beat the ticket")

# %%
ex.ticket_prediction.check(answer, retrain=retrain, large_rate=large_rate)

# %% [markdown]
# ### Exercise 3.2 · The sparsity after the last round
#
# Each round prunes the fraction `preset.rt_rate` of the weights that *survive*. What is the
# sparsity (the pruned fraction of the prunable weights) after `preset.rt_rounds` rounds? Compare
# with the `final sparsity` printed by the experiment.

# %%
### BEGIN SOLUTION
answer = 1 - (1 - preset.rt_rate) ** preset.rt_rounds
### END SOLUTION
### STARTER answer = ...  # a fraction between 0 and 1

# %%
ex.final_sparsity.check(answer, preset=preset)

# %% [markdown]
# ## 4. Pruning as spectrum-preserving sparsification: four rules at equal sparsity
#
# Claim (Yao, Yu & Koutis, arXiv 2307.08982): pruning a layer is matrix sparsification, and a
# good pruned weight $W_s$ keeps $W$'s spectrum — small $\|W-W_s\|_2$, top singular subspaces in
# place. `method="l1_sampling"` keeps the largest entries as they are and samples the rest with
# probability $\propto|w_{ij}|$, rescaled to stay unbiased: a classical hybrid sparsifier from
# the matrix-sketching literature, **not the algorithm that paper proposes** (which is not
# implemented here; see the docstring of `pruning.prune`). We prune every hidden layer of the §2 net to the same sparsity with it, with
# magnitude pruning, classical L2 sampling and random pruning.

# %%
sweep = pruning.sparsity_sweep(model, test_set, methods=preset.sp_methods,
                               amounts=preset.sp_amounts, scope="layer", exclude=("head",),
                               seed=SEED, alphas=False, progress=False)
print(sweep.pivot_table(index="amount", columns="method",
                        values=["operator", "angle", "acc"]).round(3).to_string())
fig = pruning_plots.pruning_curves(sweep, error="operator")

# %% [markdown]
# Where it wins and where it does not (seeds 0–2, sparsity 0.5/0.8/0.9): the hybrid's
# operator-norm error is about half of L2 sampling's, and its accuracy is far above random
# pruning's; but **magnitude pruning beats it on every measure at every sparsity** — lower
# $\|W-W_s\|_2$, smaller subspace angle, higher accuracy — and random pruning has the smaller
# operator-norm error at 0.8 and 0.9 (rescaled samples are unbiased, not small). At this toy
# scale, "preserve the spectrum" explains why magnitude pruning works better than it motivates a
# sampler.

# %%
for winner, loser, metric, higher in [("l1_sampling", "l2_sampling", "operator", False),
                                      ("l1_sampling", "random", "acc", True),
                                      ("magnitude", "l1_sampling", "operator", False),
                                      ("magnitude", "l1_sampling", "acc", True)]:
    verdict = claims.pruning.beats_at_every_sparsity(sweep, winner, loser, metric=metric,
                                                     higher_is_better=higher)
    self_check(verdict, f"{winner} beats {loser} on {metric} at every sparsity "
                        f"(margins {verdict['margins']})")

# %% [markdown]
# ## Try it yourself
#
# 1. **Which layer?** Rescale the second hidden layer instead (`rescale_neurons(model, second,
#    scales)`): predict whether the product moves as much.
# 2. **Not a symmetry.** Multiply the first layer's rows by `scales` without dividing the next
#    layer's columns. Does the function change? The path-norm? (This is the negative control of
#    the self-check.)
# 3. **p = 2 vs p = 1.** Which path-norm grows faster during training? Relate
#    $\|\Phi\|_2 \le \|\Phi\|_1$ to the number of paths.
# 4. **Max-pooling.** Build `nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.MaxPool1d(2), ...)`
#    and compare `path_norm` with the forward pass that keeps the max-pool: which one equals the
#    sum over paths (see `tests/test_spectra.py`)?
# 5. **Later rewinding.** Set `preset = preset.with_(rt_rewind_epoch=3)` and re-run §3: does
#    rewinding to $\theta_k$ pull ahead of the ticket at the large rate? And fine-tuning at the
#    final rate (`rt_finetune_factor=0.01`)?
#
# ## Read more
#
# * A. Gonon, N. Brisebarre, E. Riccietti, R. Gribonval, *A path-norm toolkit for modern networks:
#   consequences, promises and challenges*, ICLR 2024, arXiv 2310.01225.
# * B. Neyshabur, R. Tomioka, N. Srebro, *Norm-Based Capacity Control in Neural Networks*,
#   arXiv 1503.00036 (the path-norm of layered networks).
# * P. L. Bartlett, D. J. Foster, M. Telgarsky, *Spectrally-normalized margin bounds for neural
#   networks*, arXiv 1706.08498 (the operator-norm product).
# * A. Renda, J. Frankle, M. Carbin, *Comparing Rewinding and Fine-tuning in Neural Network
#   Pruning*, ICLR 2020, arXiv 2003.02389.
# * J. Frankle, M. Carbin, *The Lottery Ticket Hypothesis*, arXiv 1803.03635; Z. Liu et al.,
#   *Rethinking the Value of Network Pruning*, arXiv 1810.05270.
# * S. Yao, D. Yu, I. Koutis, *Neural Network Pruning as Spectrum Preserving Process*,
#   arXiv 2307.08982.
