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
# # 05 · Feature learning beyond the kernel regime: the maximal-update parameterisation μP
#
# Notebook 01 showed that under the NTK parameterisation a wide network trains *lazily*: its
# kernel freezes and it is a kernel machine. Yang & Hu (2021, arXiv 2011.14522) classified every
# way of scaling initialisation and learning rates with the width and found exactly one in which
# **every layer's features move by Θ(1)** as the width grows, for networks of any depth: the
# *maximal-update parameterisation* μP. Its practical consequence is **μTransfer** (Yang et al.
# 2022, arXiv 2203.03466): hyperparameters tuned on a narrow network are optimal for a wide one.
#
# `models.MLP(..., parameterization="mup", base_width=n0)` writes μP for SGD with multipliers
# (`models.MuPLinear`): with $m = n/n_0$, the input layer and biases get an effective step
# $\eta m$, hidden matrices $\eta$, the readout $\eta/m$ and an initial variance $\propto 1/n^2$;
# at $n = n_0$ it *is* the standard parameterisation. So `train.fit` with one global learning
# rate trains μP. (Under Adam a global rate is not μP: see the `MuPLinear` docstring.) The test
# suite checks these scales step for step against the `mup` package's `MuSGD` and `MuReadout`.

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
import pandas as pd
import torch
from tqdm.auto import tqdm

import toolkit
from toolkit import claims, data, feature_learning, models, ntk, presets, train
from toolkit.plotting import features as features_plots
from toolkit.utils import self_check
from toolkit.widgets import features as features_widgets

preset = presets.get_preset("feature_learning", PRESET)
device = toolkit.get_device(DEVICE)
toolkit.seed_everything(SEED)
print(preset)
print("device:", device)

# %%
from toolkit import exercises

ex = exercises.load("05")  # this notebook's exercises: ex.<name>.hint(), .check(...), .solution()

# %% [markdown]
# ## 1. The coordinate check: μP features move by Θ(1) at every width
#
# **Claim** (Yang & Hu 2021, arXiv 2011.14522; the check is §D of Yang et al. 2022, arXiv
# 2203.03466). Train MLPs of several widths for a few SGD steps at *one* learning rate and measure
# the RMS size of the change of each layer's pre-activations. Under μP the curves are flat in
# width; under the standard parameterisation (SP) they grow (at a fixed rate a wide SP net blows
# up); under the NTK parameterisation they vanish like $n^{-1/2}$ (lazy training).
#
# `feature_learning.preactivations` reads every Linear layer's output; `rms_change` compares two
# readings. The NTK nets get a 32× larger rate, which equals SP's effective hidden-layer rate at
# width 64.
# The base width here is 8, not 16: a μP net's initial output is of size $\sqrt{n_0/n}$, and
# with $n_0 = 16$ the narrowest widths still feel it (their μP slope is about −0.25 instead of
# −0.1 on some seeds).

# %%
coord_train, _ = data.teacher_regression(n_samples=2 * preset.coord_points, dim=8, seed=SEED)
x_coord = coord_train.tensors[0][: preset.coord_points].to(device)
rates = {"mup": preset.lr, "standard": preset.lr, "ntk": preset.coord_ntk_lr}
rows = []
for par, width, seed in tqdm([(p, w, s) for p in rates for w in preset.widths
                              for s in preset.coord_seeds], desc="coordinate check"):
    torch.manual_seed(SEED + seed)
    net = models.MLP(8, [width] * preset.coord_depth, 1, parameterization=par,
                     base_width=preset.coord_base_width).to(device)
    before = feature_learning.preactivations(net, x_coord)
    train.fit(net, coord_train, loss="mse", lr=rates[par], epochs=preset.epochs,
              device=device, progress=False, metrics=("loss",))
    change = feature_learning.rms_change(before, feature_learning.preactivations(net, x_coord))
    rows += [{"parameterization": par, "width": width, "seed": seed, "layer": layer,
              "rms_change": value} for layer, value in change.items()]
coord = (pd.DataFrame(rows).groupby(["parameterization", "width", "layer"], sort=False)
         ["rms_change"].mean().reset_index())
coord.pivot_table(index="width", columns=["parameterization", "layer"], values="rms_change")

# %%
fig = features_plots.coordinate_check(coord)

# %% [markdown]
# **Self-check.** The hidden layers' slopes: |slope| < 0.25 under μP, > 0.5 under SP, < −0.3
# under NTK (`claims.features.coordinate_check`).

# %%
hidden = coord[coord["layer"] != "head"]
by_par = {par: {layer: rows_.sort_values("width")["rms_change"].to_numpy()
                for layer, rows_ in hidden[hidden["parameterization"] == par].groupby("layer")}
          for par in rates}
verdict = claims.features.coordinate_check(sorted(preset.widths), by_par["mup"],
                                           by_par["standard"], by_par["ntk"])
print(verdict)
self_check(verdict, f"coordinate check: μP flat (max |slope| {verdict['mup_max_abs_slope']:.2f}), "
                    f"SP grows (min slope {verdict['standard_min_slope']:.2f}), NTK vanishes "
                    f"(max slope {verdict['ntk_max_slope']:.2f})")

# %% [markdown]
# ### Exercise 1.1 · The coordinate check's measure
#
# Write `rms_change(before, after)` for one layer: the root-mean-square coordinate of the change
# of its pre-activations, $\sqrt{\mathrm{mean}_{i,j}\,(h'_{ij} - h_{ij})^2}$, for two
# (inputs × units) tensors. `feature_learning.rms_change` does this for every layer; the check runs
# yours on hidden cases, a wide layer and an unchanged one included. Stuck?
# `ex.rms_change.hint()` (call again for the next hint); `ex.rms_change.solution()` shows an answer.

# %%
### BEGIN SOLUTION
def rms_change(before, after):
    return (after - before).pow(2).mean().sqrt()
### END SOLUTION
### STARTER def rms_change(before, after):
### STARTER     """The RMS coordinate of after - before, a number."""
### STARTER     raise NotImplementedError

# %%
ex.rms_change.check(rms_change)

# %% [markdown]
# ### Exercise 1.2 · μP's learning rate for the readout
#
# With one global SGD rate $\eta$ = `preset.lr`, what effective step does the readout of the
# widest net of section 2 take ($n$ = `max(preset.lrt_widths)`, $n_0$ = `preset.base_width`)? Use
# the scales of the introduction; the check compares your number with the library's μP layer
# (`net.head.weight_scale ** 2 * preset.lr`).

# %%
### BEGIN SOLUTION
answer = preset.lr / (max(preset.lrt_widths) / preset.base_width)
### END SOLUTION
### STARTER answer = ...  # the readout's effective step, a number

# %%
ex.readout_step.check(answer, preset=preset)

# %% [markdown]
# ## 2. Learning-rate transfer: the best rate stays put under μP
#
# **Claim** (μTransfer, Yang et al. 2022, arXiv 2203.03466, Fig. 1). Sweep a log grid of
# learning rates at several widths and record the training loss after a fixed budget. Under μP the
# curves line up and the best rate does not move as width grows (and wider is better at every
# rate); under SP the best rate drifts towards smaller values, because the readout's update grows
# like the width.

# %% [markdown]
# ### Exercise 2.1 · Predict before you run
#
# Under the *standard* parameterisation, where will the widest net's best learning rate sit
# compared with the narrowest net's? (a) within one octave of it; (b) more than one octave lower;
# (c) more than one octave higher. Commit to a letter *before* running the next cell; the check
# after the experiment compares it with what happened.

# %%
### BEGIN SOLUTION
answer = "b"
### END SOLUTION
### STARTER answer = ...  # "a", "b" or "c"

# %%
lrt_train, _ = data.gaussian_mixture(n_samples=preset.lrt_samples, n_classes=preset.lrt_classes,
                                     dim=preset.lrt_dim, separation=1.5, seed=SEED)
rows = []
for par, width, log2_lr in tqdm([(p, w, k) for p in ("mup", "standard") for w in preset.lrt_widths
                                 for k in preset.lrt_log2_lrs], desc="learning-rate grid"):
    torch.manual_seed(SEED)
    net = models.MLP(preset.lrt_dim, [width] * preset.lrt_depth, preset.lrt_classes,
                     parameterization=par, base_width=preset.base_width).to(device)
    # the largest rates diverge on purpose: "stop" records that as a final loss of inf
    history = train.fit(net, lrt_train, lr=2.0**log2_lr, epochs=preset.lrt_epochs,
                        batch_size=preset.lrt_batch, seed=SEED, device=device, progress=False,
                        metrics=("loss",), on_nonfinite="stop")
    rows.append({"parameterization": par, "width": width, "lr": 2.0**log2_lr,
                 "loss": history["train_loss"].iloc[-1]})
lrt = pd.DataFrame(rows)
lrt.loc[lrt.groupby(["parameterization", "width"])["loss"].idxmin()]

# %%
fig = features_plots.lr_transfer(lrt)

# %% [markdown]
# **Self-check.** From the smallest to the largest width the best rate moves by at most one
# octave under μP and by at least two under SP (`claims.features.lr_transfer`).

# %%
grid = {par: lrt[lrt["parameterization"] == par].pivot(index="width", columns="lr",
                                                         values="loss")
        for par in ("mup", "standard")}
verdict = claims.features.lr_transfer(list(grid["mup"].index), list(grid["mup"].columns),
                                      grid["mup"].to_numpy(), grid["standard"].to_numpy())
print(verdict)
self_check(verdict, f"best log2 lr under μP {verdict['mup_best_log2_lr']} (shift "
                    f"{verdict['mup_shift']:+.0f}), under SP {verdict['standard_best_log2_lr']} "
                    f"(shift {verdict['standard_shift']:+.0f})")

# %%
ex.sp_best_rate.check(answer, lrt=lrt)

# %% [markdown]
# ### Exercise 2.2 · Thought question
#
# μP at width $n = n_0$ is exactly the standard parameterisation. Why, and why does that make
# μTransfer work (tune the rate at width $n_0$, reuse it at $8 n_0$)? Discuss, then compare with
# `ex.why_base_width.solution()`.

# %%
ex.why_base_width.check()

# %% [markdown]
# **Explore.** Slide the width: the solid curve is the loss on the rate grid at that width, the
# grey one the narrowest width's. Under μP the two stars (best rates) stay together; under SP the
# wide net's star moves left. The panel redraws the table above; nothing is retrained.

# %%
panel = features_widgets.transfer_panel(lrt)
panel

# %% [markdown]
# **Self-check.** Headless, the panel still drew its figure: one axes per parameterisation, each
# with curves (`claims.panel_drawn`).

# %%
verdict = claims.panel_drawn(panel, n_axes=2)
self_check(verdict, f"transfer panel drawn headless ({verdict['axes']} panels, none empty)")

# %% [markdown]
# ## 3. Deep μP nets: the kernel moves by O(1) at every width
#
# **Claim** (Yang & Hu 2021, arXiv 2011.14522). Notebook 01 §2 measured the relative change of
# the NTK during training, $\|\Theta_T-\Theta_0\|_F/\|\Theta_0\|_F$: it vanishes with width under
# NTK scaling. For a *deep* μP net it stays of order one: the features, and with them the kernel,
# keep moving however wide the net is. (The NTK nets get a rate below their stability limit, so
# they train lazily rather than catapult.)

# %%
x_probe = coord_train.tensors[0][: preset.drift_points].to(device)
rows = []
for par, width, seed in tqdm([(p, w, s) for p in ("mup", "ntk") for w in preset.drift_widths
                              for s in preset.drift_seeds], desc="kernel drift"):
    torch.manual_seed(SEED + seed)
    net = models.MLP(8, [width] * preset.drift_depth, 1, parameterization=par,
                     base_width=preset.base_width).to(device)
    drift = ntk.KernelDrift(x_probe)
    history = train.fit(net, coord_train, loss="mse", epochs=preset.drift_epochs,
                        lr=preset.drift_mup_lr if par == "mup" else preset.drift_ntk_lr,
                        device=device, progress=False, metrics=("loss",), callbacks=[drift],
                        callback_every=preset.drift_epochs)
    rows.append({"parameterization": par, "width": width, "seed": seed,
                 "drift": history["kernel_drift"].dropna().iloc[-1],
                 "final_loss": history["train_loss"].iloc[-1]})
drifts = pd.DataFrame(rows)
drifts.groupby(["parameterization", "width"])[["drift", "final_loss"]].mean()

# %%
fig = features_plots.kernel_drift(drifts)

# %% [markdown]
# **Self-check.** The μP drift's log-log slope is within ±0.2 and its value above 0.2 at every
# width; the NTK drift falls with slope below −0.4 (`claims.features.drift_stays_order_one`).

# %%
mean_drift = drifts.groupby(["parameterization", "width"])["drift"].mean()
verdict = claims.features.drift_stays_order_one(sorted(preset.drift_widths),
                                                mean_drift["mup"].to_numpy(),
                                                mean_drift["ntk"].to_numpy())
print(verdict)
self_check(verdict, f"μP kernel drift stays O(1) (slope {verdict['mup_slope']:+.2f}, min "
                    f"{verdict['mup_min_drift']:.2f}); NTK drift vanishes (slope "
                    f"{verdict['ntk_slope']:+.2f})")

# %% [markdown]
# ## Try it yourself
#
# 1. **Base width.** Set `base_width` to 64 in the three experiments. Which curves change, and
#    why is μP at $n = n_0$ the same network as SP? (Hint: all multipliers are 1.)
# 2. **Depth.** Make `coord_depth` 6. Predict the SP slopes of the deeper layers before you run
#    it: does the blow-up compound with depth?
# 3. **Adam.** In section 2, add `optimizer="adam"` to `train.fit` with μP. Does the best rate
#    still transfer? Read the `models.MuPLinear` docstring for what μP needs under Adam.
# 4. **Longer training.** Raise `lrt_epochs` to 20: does the μP optimum stay put, and do wider μP
#    nets reach a lower loss at the same rate ("wider is better")?
# 5. **The mean-field limit.** With one hidden layer, μP is the mean-field scaling of notebook 01
#    §2. Check that the section-3 drift of `MLP(8, [n], 1, parameterization="mup")` is flat too.
#
# ## Read more
#
# - Yang, Hu (2021). *Tensor Programs IV: Feature Learning in Infinite-Width Neural Networks.*
#   arXiv 2011.14522.
# - Yang, Hu, Babuschkin, Sidor, Liu, Farhi, Ryder, Pachocki, Chen, Gao (2022). *Tensor Programs
#   V: Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer.* arXiv 2203.03466.
# - Jacot, Gabriel, Hongler (2018). *Neural Tangent Kernel.* arXiv 1806.07572.
# - Chizat, Oyallon, Bach (2019). *On Lazy Training in Differentiable Programming.* arXiv
#   1812.07956.
