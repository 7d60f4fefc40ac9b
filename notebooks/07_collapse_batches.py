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
# # 07 · Collapse in mini-batches: batch-binding for supervised contrastive learning
#
# Kini, Vakilian, Behnia, Gill & Thrampoulidis 2023, "Supervised-Contrastive Loss Learns
# Orthogonal Frames and Batching Matters" (arXiv 2306.07960). With a ReLU before the
# normalisation, the minimisers of the **full-batch** supervised contrastive (SCL) loss put the
# class means on an **orthogonal frame** whatever the class sizes (notebook 03, §4). SCL only
# compares samples *inside a batch*, so with small mini-batches on imbalanced data many batches
# miss the minority classes, and the geometry that mini-batch training reaches drifts away from
# the frame. The paper's remedy, **batch-binding**, fixes one sample per class once and appends
# that same set to every mini-batch; the frame comes back.
#
# We train free embeddings (the unconstrained-features setting of the paper's theorem: one
# trainable vector per sample, then a ReLU) with `toolkit.train.fit` three ways: full batch, random
# mini-batches, and bound mini-batches (`toolkit.collapse.BatchBindingSampler`).

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
import torch
from torch import nn

import toolkit
from toolkit import claims, collapse, plotting, presets, train
from toolkit.plotting import collapse as nc_plots
from toolkit.utils import self_check
from toolkit.widgets import collapse as nc_widgets

preset = presets.get_preset("collapse_batches", PRESET)
device = toolkit.get_device(DEVICE)
toolkit.seed_everything(SEED)
plotting.set_theme()

counts = preset.class_counts
labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
indices = torch.arange(len(labels))  # sample i's input is its index: a free embedding per sample
print(preset)
print(f"class counts {counts}, embedding dimension {preset.dim}, batches of {preset.batch_size}")

# %%
import math

from toolkit import exercises

ex = exercises.load("07")  # this notebook's exercises: ex.<name>.hint(), .check(...), .solution()

# %% [markdown]
# ## 1. Full batch, random batches, bound batches
#
# Claim (Kini et al., arXiv 2306.07960, §4–5): full-batch SCL with ReLU reaches an orthogonal frame
# (class-mean cosines 0); random mini-batches of an imbalanced set do not; batch-binding restores
# it. Each run starts from the same non-negative initial embeddings; the two mini-batch runs take
# the same number of epochs, and their samplers differ only in `bind`.
#
# How often does a random batch miss a class? With two classes of 4 samples among 56 and batches
# of 8, most batches hold neither of them, so those batches push only the majority classes apart.

# %% [markdown]
# ### Exercise 1.1 · Predict before you run
#
# Which of the three runs will end at the orthogonal frame (every class-mean cosine within 0.05
# of 0)? (a) all three; (b) full batch and bound batches, not random batches; (c) only full batch;
# (d) another combination. Commit to a letter *before* running the next cell; the check after the
# self-check compares it with what happened.

# %%
### BEGIN SOLUTION
answer = "b"
### END SOLUTION
### STARTER answer = ...  # "a", "b", "c" or "d"

# %%
sampler = collapse.BatchBindingSampler(labels, preset.batch_size, bind=False, seed=SEED)
missing = sum(len(set(labels[b].tolist())) < len(counts) for b in sampler)
print(f"random batches missing at least one class in one epoch: {missing} of {len(sampler)}")

geometries, histories = {}, {}
for mode in ("full batch", "random batches", "bound batches"):
    torch.manual_seed(SEED)
    embeddings = nn.Embedding(len(labels), preset.dim)
    with torch.no_grad():
        embeddings.weight.abs_()  # start inside the ReLU's positive orthant
    model = nn.Sequential(embeddings, nn.ReLU())
    batches = (None if mode == "full batch" else collapse.BatchBindingSampler(
        labels, preset.batch_size, bind=(mode == "bound batches"), seed=SEED))
    histories[mode] = train.fit(
        model, (indices, labels), loss=collapse.supcon_loss, metrics=("loss",),
        loss_kwargs={"temperature": preset.temperature}, optimizer=preset.optimizer,
        lr=preset.lr, epochs=preset.full_epochs if batches is None else preset.epochs,
        batch_sampler=batches, device=device, seed=SEED, progress=False)
    with torch.no_grad():
        geometries[mode] = collapse.mean_geometry(model(indices.to(device)).cpu(), labels,
                                                  normalize=True)
    print(f"{mode:15s} final full-batch SCL loss {histories[mode]['train_loss'].iloc[-1]:.4f}, "
          f"max |cos| between class means {geometries[mode].as_dict()['max_abs_cos']:.3f}")

# %% [markdown]
# Read the three heatmaps: the identity is the orthogonal frame. The random-batch run's
# off-diagonal cells are the pairs of classes that too few batches contrasted; its full-batch
# loss is also higher than the frame's.

# %%
nc_plots.cosine_heatmaps(geometries, title="class-mean cosines after SCL + ReLU (identity = "
                                           "orthogonal frame)")

# %%
restored = claims.collapse.batch_binding_restores_frame(
    geometries["full batch"], geometries["random batches"], geometries["bound batches"])
self_check(restored, f"full batch and bound batches reach the orthogonal frame (max |cos| "
                     f"{restored['full']:.3f}, {restored['bound']:.3f}); random batches drift "
                     f"({restored['random']:.3f})")

# %%
ex.frame_prediction.check(answer, geometries=geometries)

# %% [markdown]
# ### Exercise 1.2 · How often does a batch miss a class?
#
# Each random batch is a uniformly random subset of `preset.batch_size` of the $N$ samples. Compute
# the probability that one batch holds *no* sample of one given minority class (`min(counts)`
# samples), and compare it with the count of batches missing at least one class printed above.
# Stuck? `ex.miss_probability.hint()`; `ex.miss_probability.solution()` shows an answer.

# %%
### BEGIN SOLUTION
n_all, n_minor, b = sum(counts), min(counts), preset.batch_size
answer = math.comb(n_all - n_minor, b) / math.comb(n_all, b)
### END SOLUTION
### STARTER answer = ...  # a probability

# %%
ex.miss_probability.check(answer, counts=counts, preset=preset)

# %% [markdown]
# ### Exercise 1.3 · The frame's measure
#
# Write `max_abs_cos(means)`: for a (classes × dimension) matrix of class means, the largest
# |cosine| between two *different* class means, 0 exactly for an orthogonal frame: the number each
# heatmap above summarises (`geometries[mode].as_dict()["max_abs_cos"]`). The check runs it on
# hidden cases, a simplex ETF among them.

# %%
### BEGIN SOLUTION
def max_abs_cos(means):
    unit = means / means.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    return cos[~torch.eye(len(means), dtype=torch.bool)].abs().max()
### END SOLUTION
### STARTER def max_abs_cos(means):
### STARTER     """The largest |cosine| between two different rows of means, a number."""
### STARTER     raise NotImplementedError

# %%
ex.max_abs_cos.check(max_abs_cos)

# %% [markdown]
# ## 2. Your turn: move the batch size
#
# The slider retrains the two mini-batch runs (random and bound, same seed and epochs as above)
# at the batch size you pick and redraws their cosine heatmaps. Predict first: at which batch
# size do random batches stop missing the minority classes, and does the drift go with it?
# Larger batches also mean fewer steps in the same number of epochs, so neither run may have
# converged at the top of the range.

# %%
binding = nc_widgets.binding_panel(labels, dim=preset.dim, epochs=preset.epochs, lr=preset.lr,
                                   temperature=preset.temperature, optimizer=preset.optimizer,
                                   batch_size=preset.batch_size, seed=SEED, device=device)
binding

# %%
self_check(claims.panel_drawn(binding, n_axes=2),
           "the panel drew the random-batch and bound-batch heatmaps")

# %% [markdown]
# ### Exercise 2.1 · Thought question
#
# Why does appending one fixed sample per class to every batch bring back the full-batch geometry,
# although the bound batches are still small and random? Discuss, then compare with
# `ex.why_binding_works.solution()`.

# %%
ex.why_binding_works.check()

# %% [markdown]
# ## Try it yourself
#
# 1. **Batch size.** Set `preset = preset.with_(batch_size=28)` and re-run: predict whether random
#    batches still drift (how many of them miss a class now?).
# 2. **Balanced classes.** Use `counts = (14, 14, 14, 14)`. Kini et al.'s frame does not depend on
#    the class sizes; does the random-batch drift?
# 3. **Bind more.** Append two samples per class instead of one (build the index lists yourself: a
#    list of lists is a valid `batch_sampler`). Does it converge faster?
# 4. **No ReLU.** Drop the `nn.ReLU()` and the `abs_()`: which geometry does full-batch SCL reach
#    now (notebook 03, §4), and does binding still matter?
#
# ## Read more
#
# * G. R. Kini, V. Vakilian, T. Behnia, J. Gill, C. Thrampoulidis, *Supervised-Contrastive Loss
#   Learns Orthogonal Frames and Batching Matters*, arXiv 2306.07960.
# * P. Khosla et al., *Supervised Contrastive Learning*, arXiv 2004.11362.
# * F. Graf, C. Hofer, M. Niethammer, R. Kwitt, *Dissecting Supervised Contrastive Learning*,
#   arXiv 2106.04187.
