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
# # 00 · A tour of the toolkit
#
# Every notebook in this folder follows the same story: **a claim** from a theory paper, **an
# experiment** that tests it, **a figure**, and a **self-check** cell that asserts the claim at toy
# scale, so running the notebook is itself a test. All computation lives in the `toolkit` package;
# the notebooks only call it.
#
# This tour shows the shared core: data (`toolkit.data`), models (`toolkit.models`), training
# (`toolkit.train.fit`), presets (`toolkit.presets`), figures (`toolkit.plotting`) and interactive
# panels (`toolkit.widgets`).

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
import toolkit
from toolkit import claims, data, models, plotting, presets, train
from toolkit.utils import self_check
from toolkit.widgets import tour

preset = presets.get_preset("tour", PRESET)
device = toolkit.get_device(DEVICE)
toolkit.seed_everything(SEED)
print(preset)
print("device:", device)

# %% [markdown]
# ## 1. Data that needs no download
#
# The toy presets use scikit-learn's bundled 8×8 digits (1,797 images) or MNIST-1D, which the
# `mnist1d` package generates procedurally. Loaders return `(train, test)` `TensorDataset`s with
# standardised features; the same `seed` always gives the same split.

# %%
train_set, test_set = data.load(preset.dataset, seed=SEED)
x_train, y_train = train_set.tensors
print(f"{preset.dataset}: {len(train_set)} train / {len(test_set)} test, "
      f"{x_train.shape[1]} features, {data.n_classes(train_set)} classes")

# %% [markdown]
# ## 2. Train an MLP
#
# `train.fit` runs (mini-batch or full-batch) gradient descent with a progress bar and returns the
# history as a DataFrame, one row per epoch, **epoch 0 included** (the untrained network). It can
# checkpoint and resume (`checkpoint_dir=...`), record anything through callbacks, and switch to
# SAM, MSE, label smoothing and more by name.

# %%
model = models.MLP(x_train.shape[1], preset.widths, data.n_classes(train_set))
print(model)
print("parameters:", models.count_parameters(model))
history = train.fit(model, train_set, test=test_set, epochs=preset.epochs,
                    batch_size=preset.batch_size, lr=preset.lr, momentum=preset.momentum,
                    device=device, seed=SEED)
history.tail()

# %%
fig = plotting.learning_curves(history, title="MLP on " + preset.dataset)

# %% [markdown]
# **Self-check.** A one-hidden-layer MLP classifies the digits with at least 90 % test accuracy,
# and its training loss fell at least tenfold. Each check is a named predicate in
# `toolkit.claims`, and `tests/test_claims_tour.py` shows it fails where nothing is learned (an
# untrained net, shuffled labels, a step too small to move).

# %%
verdict = claims.tour.accuracy_reached(history, at_least=0.9)
self_check(verdict, f"test accuracy {verdict['test_acc']:.3f} >= 0.9 (chance: 0.1)")
verdict = claims.tour.loss_fell(history, factor=10)
self_check(verdict, f"training loss fell {verdict['drop']:.0f}-fold from initialisation (>= 10)")

# %% [markdown]
# ## 3. Move a slider
#
# Panels retrain and redraw when you release a slider. Try a width of 2 (too small to separate ten
# classes) and a learning rate of 1 (too large a step). Run headless, the panel still shows the
# figure for its starting values.

# %%
panel = tour.training_panel(train_set, test_set, epochs=preset.panel_epochs, seed=SEED,
                            device=device)
panel

# %% [markdown]
# **Self-check.** Headless, the panel still drew its figure: two panels, both with curves.

# %%
verdict = claims.panel_drawn(panel, n_axes=2)
self_check(verdict, f"panel drawn headless ({verdict['axes']} panels, none empty)")

# %% [markdown]
# ## Where to go next
#
# | notebook | the claim you will test |
# |---|---|
# | `01_ntk_equivalence` | wide networks train like their neural tangent kernel (Jacot et al. 2018; Lee et al. 2019) |
# | `02_loss_landscape` | skip connections smooth the loss surface; curvature tracks 2/η at the edge of stability |
# | `03_neural_collapse` | in the terminal phase, features collapse to a simplex ETF (Papyan et al. 2020) |
# | `04_pruning_spectra` | trained layers grow heavy-tailed spectra; pruning that keeps the spectrum keeps accuracy |
#
# ## Try it yourself
# 1. Set `PRESET = "full"` (MNIST-1D, two hidden layers of 512) and compare the learning curves.
# 2. Predict, then check: what happens to the test accuracy if you train with `loss="mse"`?
# 3. Replace the MLP with `models.SmallCNN()` (digits are 8×8 images); does the test accuracy rise?
# 4. Add label noise with `data.label_noise(train_set, 0.3)`: when does the test loss start to rise?
#
# ## Read more
# - Zhang, Lipton, Li, Smola, *Dive into Deep Learning* (arXiv 2106.11342) — the notebook-plus-package format.
# - Greydanus 2020, *Scaling down deep learning* (arXiv 2011.14439) — MNIST-1D.
