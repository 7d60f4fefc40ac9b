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
# # 03 · Neural collapse
#
# Train a classifier long after its training error has reached zero and its last-layer features
# organise themselves into a rigid geometry (Papyan, Han & Donoho 2020, arXiv 2008.08186):
#
# * **NC1** within-class variability collapses: every feature moves to its class mean;
# * **NC2** the centred class means become equinorm and equiangular: a *simplex equiangular tight
#   frame* (ETF), C unit vectors with pairwise cosine −1/(C−1);
# * **NC3** the classifier rows align with the class means (self-duality);
# * **NC4** the classifier becomes the nearest-class-mean rule.
#
# All metrics come from `toolkit.collapse` (conventions in its docstring: Σ_W averaged over all N
# samples, Σ_B over the C classes, global mean = mean of the class means). NC1 is computed
# exactly as ‖R M⁺‖²_F / N, streaming, without ever forming a d × d matrix.

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

import toolkit
from toolkit import claims, collapse, data, models, presets, train
from toolkit.plotting import collapse as nc_plots
from toolkit.utils import self_check
from toolkit.widgets import collapse as nc_widgets

preset = presets.get_preset("collapse", PRESET)
device = toolkit.get_device(DEVICE)
toolkit.seed_everything(SEED)
print(preset)

# %%
from toolkit import exercises

ex = exercises.load("03")  # this notebook's exercises: ex.<name>.hint(), .check(...), .solution()

# %% [markdown]
# ## 1 · The terminal phase of training
#
# **Claim** (Papyan et al. 2020, arXiv 2008.08186): after the training error reaches zero, NC1–NC4
# keep falling; features and classifier approach a simplex ETF and each other.
#
# The toy run trains an MLP on 300 scikit-learn digits with full-batch SGD, momentum, weight decay
# and a cosine schedule, recording every metric every few epochs with a `CollapseCallback`. The
# MLP has batch normalisation before its last layer (`models.MLP(..., norm="batch")`): with batch
# norm and weight decay, collapse appears far sooner (Pan & Cao 2023, arXiv 2309.04644), in a few
# seconds on a CPU. The `full`
# preset is Papyan et al.'s setting: ResNet-18 on CIFAR-10, 350 epochs, step schedule, checkpointed.

# %%
if preset.dataset == "cifar10":
    train_set = data.load_vision("cifar10", download=True, train=True)
    net = models.ResNet18(n_classes=10)
else:
    train_set, _ = data.load(preset.dataset, seed=SEED)
    if preset.n_train:
        train_set = data.subsample(train_set, preset.n_train, seed=SEED)
    net = models.MLP(train_set.tensors[0].shape[1], preset.widths, data.n_classes(train_set),
                     norm=preset.norm, sigma_w=preset.sigma_w)

run_dir = toolkit.utils.cache_dir("collapse", PRESET, f"seed{SEED}") if preset.checkpoint else None
recorder = collapse.CollapseCallback(train_set, batch_size=preset.metrics_batch_size,
                                     snapshot=preset.snapshot, seed=SEED,
                                     snapshot_path=run_dir / "snapshots.pt" if run_dir else None)
history = train.fit(net, train_set, epochs=preset.epochs, lr=preset.lr,
                    momentum=preset.momentum, weight_decay=preset.weight_decay,
                    schedule=preset.schedule, batch_size=preset.batch_size, device=device,
                    seed=SEED, callbacks=[recorder], callback_every=preset.metrics_every,
                    checkpoint_dir=run_dir, checkpoint_every=preset.metrics_every,
                    progress=PRESET != "toy")  # the toy run takes seconds: no bar
phase = collapse.terminal_phase(history, "nc1")
print(phase)
fig = nc_plots.metrics_vs_epoch(history, title="NC metrics through the terminal phase")

# %%
features, labels = collapse.extract_features(net, train_set, batch_size=preset.metrics_batch_size)
final = collapse.nc_metrics(features, labels, weight=net.head.weight.detach(),
                            bias=net.head.bias.detach())
print(final)
fig = nc_plots.gram_heatmap(features, labels, weight=net.head.weight.detach())

# %%
first = history.dropna(subset=["nc1"]).iloc[0]
verdict = claims.collapse.zero_training_error(history)
self_check(verdict, f"zero training error reached at epoch {verdict['zero_error_epoch']}")
verdict = claims.collapse.nc1_keeps_falling(history)
self_check(verdict, f"NC1 fell {verdict['drop']:.1f}x (>= 10x) from the zero-error epoch "
           f"({verdict['at_zero_error']:.3g}) to the end ({verdict['final']:.3g})")
verdict = claims.collapse.approaches_etf_and_self_duality(first, final)
self_check(verdict, f"means approach the ETF (error {verdict['etf_first']:.2f} -> "
           f"{verdict['etf_final']:.3f}, /{verdict['etf_ratio']:.1f} >= 3) and the classifier "
           f"approaches the means (NC3 {verdict['nc3_first']:.2f} -> {verdict['nc3_final']:.3f}, "
           f"/{verdict['nc3_ratio']:.0f} >= 10)")
verdict = claims.collapse.classifier_is_ncc(final)
self_check(verdict, f"NC4: classifier = nearest class mean on {100 * verdict['agreement']:.1f}% "
           "of the training set (>= 99%)")

# %% [markdown]
# ### Exercise 1.1 · NC1 from the class means
#
# Write `nc1(features, labels)`: NC1 $= \operatorname{tr}(\Sigma_W\Sigma_B^+)/C$ with
# $\Sigma_W = \frac1N\sum_i (h_i - \mu_{y_i})(h_i - \mu_{y_i})^\top$,
# $\Sigma_B = \frac1C\sum_c (\mu_c - \mu_G)(\mu_c - \mu_G)^\top$, $\mu_G$ the mean of the class
# means and $^+$ the pseudo-inverse; labels are $0,\dots,C-1$. The check runs it on the features
# above and on hidden cases (imbalanced classes, fewer dimensions than classes) against
# `collapse.nc_metrics`.

# %%
### BEGIN SOLUTION
def nc1(features, labels):
    features = features.double()
    n_classes = int(labels.max()) + 1
    means = torch.stack([features[labels == c].mean(0) for c in range(n_classes)])
    centred = means - means.mean(0)
    sigma_b = centred.T @ centred / n_classes
    resid = features - means[labels]
    sigma_w = resid.T @ resid / len(features)
    return torch.trace(sigma_w @ torch.linalg.pinv(sigma_b)) / n_classes
### END SOLUTION
### STARTER def nc1(features, labels):
### STARTER     """NC1 = tr(Sigma_W pinv(Sigma_B)) / C, a number."""
### STARTER     raise NotImplementedError

# %%
ex.nc1_by_hand.check(nc1, features=features, labels=labels)

# %% [markdown]
# ## 2 · The unconstrained-features model
#
# **Claim** (Fang, He, Long & Su 2021, arXiv 2101.12699): if the features are free parameters
# optimised with the classifier (the *layer-peeled* or *unconstrained-features* model, UFM), the
# optimum of a balanced problem is exactly a simplex ETF; under class imbalance the classifier rows
# of the minority classes merge as the imbalance ratio grows, **minority collapse**: the model can
# no longer tell the minority classes apart.
#
# `collapse.ufm` minimises cross-entropy (or MSE) plus weight decay over the features H and the
# classifier (W, b) with L-BFGS. The sweep below solves one UFM per imbalance ratio (the last half
# of the classes keep `1/ratio` of the samples) and measures with `collapse.minority_collapse` how
# far the minority classifier rows have merged.

# %%
balanced = collapse.ufm([preset.ufm_per_class] * preset.ufm_classes, preset.ufm_dim,
                        loss="ce", weight_decay=preset.ufm_weight_decay,
                        steps=preset.ufm_steps, seed=SEED, device=device, progress=False)
ufm_metrics = balanced.metrics()
print(ufm_metrics)
fig = nc_plots.metrics_vs_epoch(balanced.history, x="step", title="balanced UFM (cross-entropy)")
fig = nc_plots.class_means_view(balanced.features, balanced.labels, dims=3, weight=balanced.weight,
                                title=f"{preset.ufm_classes} classes: free features, class means "
                                      "and classifier rows")

# %% [markdown]
# ### Exercise 2.1 · How close to a simplex ETF?
#
# From the balanced UFM's free features (`balanced.features`, `balanced.labels`), compute the
# class means, centre them at their mean, and return the average cosine over the pairs of
# *different* classes. A simplex ETF has $-1/(C-1)$.

# %%
### BEGIN SOLUTION
feats, labs = balanced.features.double(), balanced.labels
n_cls = preset.ufm_classes
means = torch.stack([feats[labs == c].mean(0) for c in range(n_cls)])
centred = means - means.mean(0)
unit = centred / centred.norm(dim=1, keepdim=True)
answer = ((unit @ unit.T).sum() - n_cls) / (n_cls * (n_cls - 1))
### END SOLUTION
### STARTER answer = ...  # the mean off-diagonal cosine, a number

# %%
ex.mean_cosine.check(answer, balanced=balanced)

# %% [markdown]
# ### Exercise 2.2 · Predict before you run
#
# In the sweep below the minority classes keep $1/R$ of the samples, $R$ from 1 to
# `max(preset.mc_ratios)`. As $R$ grows, the distance between the minority classifier rows
# (a) stays about the same (within a factor 2); (b) shrinks by more than 2×; (c) grows by more than
# 2×? Commit to a letter before running the next cell.

# %%
### BEGIN SOLUTION
answer = "b"
### END SOLUTION
### STARTER answer = ...  # "a", "b" or "c"

# %%
n_minority = preset.mc_classes // 2  # step imbalance: the last half of the classes are small
minority = list(range(preset.mc_classes - n_minority, preset.mc_classes))
majority = list(range(preset.mc_classes - n_minority))
rows = []
for ratio in preset.mc_ratios:  # R = n_major / n_minor, Fang et al.'s convention
    counts = data.class_counts(1.0 / ratio, preset.mc_n_major, preset.mc_classes, profile="step",
                               minority_classes=n_minority)
    solution = collapse.ufm(counts, preset.mc_classes, loss="ce",
                            weight_decay=preset.mc_weight_decay, steps=preset.mc_steps,
                            record_every=preset.mc_steps, seed=SEED, device=device, progress=False)
    rows.append({"ratio": float(ratio), "n_major": counts[0], "n_minor": counts[-1],
                 **collapse.minority_collapse(solution.weight, minority),
                 "majority_cos": collapse.minority_collapse(solution.weight, majority)["minority_cos"],
                 "objective": float(solution.history["objective"].iloc[-1])})
curve = pd.DataFrame(rows)
print(curve.round(4).to_string(index=False))
fig = nc_plots.minority_collapse_plot(curve)

# %%
verdict = claims.collapse.ufm_simplex_etf(ufm_metrics)
self_check(verdict, f"balanced UFM: ETF error {verdict['etf_error']:.1e} < 1e-2, NC1 "
           f"{verdict['nc1']:.1e} < 1e-4, NC3 {verdict['nc3']:.1e} < 1e-3")
verdict = claims.collapse.etf_cosine(curve["minority_cos"].iloc[0], preset.mc_classes)
self_check(verdict, f"ratio {curve['ratio'].iloc[0]:g}: minority classifier rows have cosine "
           f"{verdict['cosine']:.4f}, the ETF's -1/(C-1) = {verdict['target']:.4f}")
verdict = claims.collapse.minority_collapse_curve(curve)
self_check(verdict, f"minority collapse: the distance between minority classifier rows shrinks "
           f"monotonically from {verdict['first']:.2f} to {verdict['last']:.1e} (relative to the "
           f"row norm) as the ratio grows to {curve['ratio'].iloc[-1]:g}")

# %%
ex.minority_prediction.check(answer, curve=curve)

# %% [markdown]
# ## 3 · Deep linear networks and the orthogonal frame
#
# **Claim** (Dang et al. 2023, arXiv 2301.00437): in a deep *linear* unconstrained-features model
# trained with MSE and weight decay, collapse happens in **every** linear layer. The shape of the
# frame comes from the **missing bias**: without a bias the class means form an **orthogonal
# frame** (raw means pairwise orthogonal; with a bias they would form a simplex ETF), balanced or
# not. Class imbalance only sets the **lengths**: for one layer they have a closed form
# (`collapse.ufm_mse_closed_form`), the minority classes getting *longer* features and *shorter*
# classifier rows.

# %%
deep = collapse.ufm(preset.dl_counts, 8, loss="mse", bias=False, depth=preset.dl_depth,
                    steps=preset.dl_steps, record_every=preset.dl_steps,
                    init_scale=0.5, seed=SEED, device=device, progress=False)
per_layer = collapse.layerwise_metrics(deep.layer_features(), deep.labels)
print(per_layer.round(5).to_string(index=False))
fig = nc_plots.layerwise_plot(per_layer)

shallow = collapse.ufm(preset.dl_counts, 8, loss="mse", bias=False, steps=400,
                       record_every=400, seed=SEED, device=device, progress=False)
predicted = collapse.ufm_mse_closed_form(preset.dl_counts, 5e-3)
predicted["measured_feature_norm"] = collapse.mean_geometry(shallow.features,
                                                            shallow.labels).norms.cpu().numpy()
predicted["measured_weight_norm"] = shallow.weight.norm(dim=1).cpu().numpy()
print(predicted.round(4).to_string(index=False))
fig = nc_plots.cosine_heatmap(collapse.mean_geometry(shallow.features, shallow.labels),
                              title="bias-free MSE UFM: cosines of raw class means")

# %%
verdict = claims.collapse.nc1_every_layer(per_layer)
self_check(verdict, f"NC1 < 1e-3 in every layer (max {verdict['max_nc1']:.1e})")
verdict = claims.collapse.orthogonal_frame_every_layer(per_layer)
self_check(verdict, "without a bias the class means form an orthogonal frame in every layer "
           f"(max |cos| {verdict['max_abs_cos']:.1e} < 1e-2)")
verdict = claims.collapse.minority_longer_means(per_layer)
self_check(verdict, "imbalance sets the lengths: in every layer the minority classes have the "
           f"longer class means (size-norm rank correlation <= {verdict['max_corr']:.2f})")
verdict = claims.collapse.matches_closed_form(predicted["measured_feature_norm"],
                                              predicted["feature_norm"])
self_check(verdict, f"one-layer norms match the closed form (max relative error "
           f"{verdict['max_rel_error']:.1e} < 1e-2)")

# %% [markdown]
# ### Exercise 3.1 · Thought question
#
# The bias-free linear UFM ends in an orthogonal frame, not a simplex ETF. Why does the missing bias
# change the shape of the frame? (What does a simplex ETF need that an orthogonal frame does not?)
# Discuss, then compare with `ex.why_orthogonal.solution()`.

# %%
ex.why_orthogonal.check()

# %% [markdown]
# ## 4 · Supervised contrastive loss: ReLU restores symmetry
#
# **Claim** (Kini et al. 2023, arXiv 2306.07960): with the supervised contrastive loss (SCL,
# Khosla et al. 2020, arXiv 2004.11362) and every class in every batch (full batch here), the
# class means of the normalised embeddings form a simplex ETF when the classes are balanced
# (Graf et al. 2021, arXiv 2106.04187), but class imbalance makes that geometry asymmetric.
# Constraining the embeddings to be non-negative -- a ReLU at the end of the encoder -- restores
# the symmetry: the class means then form an **orthogonal frame** (all pairwise cosines 0)
# **whatever the class sizes**.
#
# Kini et al.'s theorem is about free embeddings, the unconstrained-features form of SCL:
# `collapse.ufm_supcon` optimises one embedding per sample directly (ReLU = projection on h ≥ 0)
# and converges in about a second. Four runs, balanced or imbalanced (three classes keep a tenth of
# the samples), with or without the ReLU: the balanced run without ReLU is the control that
# shows what imbalance changes.

# %%
geometries = {}
for relu in (False, True):
    for name, counts in (("balanced", preset.sclu_balanced),
                         ("imbalanced", preset.sclu_imbalanced)):
        solution = collapse.ufm_supcon(counts, preset.sclu_dim, relu=relu,
                                       temperature=preset.sclu_temperature,
                                       steps=preset.sclu_steps,
                                       restarts=preset.sclu_restarts if relu else 1, seed=SEED,
                                       device=device)
        key = f"{name}, {'ReLU' if relu else 'no ReLU'}"
        geometries[key] = solution.geometry()
        print(f"{key:22s} SupCon loss {solution.loss:.4f}   ", {
            k: round(v, 3) for k, v in geometries[key].as_dict().items()
            if k in ("max_abs_cos", "std_cos", "etf_deviation")})
fig = nc_plots.cosine_heatmaps(geometries, title="SCL with free embeddings: cosines between "
                                                 "class means")

# %%
verdict = claims.collapse.simplex_etf_frame(geometries["balanced, no ReLU"])
self_check(verdict, f"balanced, no ReLU: a simplex ETF (every cosine within "
           f"{verdict['etf_deviation']:.1e} of -1/(C-1))")
verdict = claims.collapse.imbalance_breaks_symmetry(geometries["balanced, no ReLU"],
                                                     geometries["imbalanced, no ReLU"])
self_check(verdict, f"no ReLU: imbalance makes the geometry asymmetric (spread of cosines "
           f"{verdict['std_imbalanced']:.3f} vs {verdict['std_balanced']:.1e} balanced)")
verdict = claims.collapse.orthogonal_frame(geometries["balanced, ReLU"],
                                           geometries["imbalanced, ReLU"])
self_check(verdict, f"with ReLU: an orthogonal frame, balanced and imbalanced (max |cos| "
           f"{verdict['max_abs_cos']:.1e} < 1e-2)")

# %% [markdown]
# **A trained encoder**, the second illustration: two MLPs identical up to a final ReLU, trained on
# step-imbalanced digits (half of the classes keep 10 % of their samples) by the same `train.fit`
# as every other network, with the loss `collapse.supcon_loss` (a callable
# `(embeddings, labels) -> loss`; `metrics=("loss",)`, since embeddings are not logits). A network
# only approaches the minimiser, so the check is looser (max |cos| < 0.2); the encoder without ReLU
# is its control (it would not be an orthogonal frame even on balanced data: there the target is
# the ETF).

# %%
scl_train, _ = data.load(preset.scl_dataset, seed=SEED)
imbalanced = data.imbalance(data.subsample(scl_train, min(len(scl_train), 10 * preset.scl_n_major),
                                           seed=SEED), ratio=preset.scl_ratio, seed=SEED)
print("class sizes:", torch.bincount(imbalanced.tensors[1]).tolist())
encoder_geometries = {}
for relu in (True, False):
    torch.manual_seed(SEED)
    encoder = models.MLP(imbalanced.tensors[0].shape[1], preset.scl_widths, preset.scl_dim)
    if relu:
        encoder = torch.nn.Sequential(encoder, torch.nn.ReLU())
    scl_history = train.fit(encoder, imbalanced, loss=collapse.supcon_loss,
                            loss_kwargs={"temperature": preset.scl_temperature},
                            metrics=("loss",), optimizer="adam", lr=preset.scl_lr,
                            epochs=preset.scl_epochs, device=device, seed=SEED, progress=False)
    print(f"{'with' if relu else 'without'} ReLU: SupCon loss {scl_history['train_loss'].iloc[0]:.3f}"
          f" -> {scl_history['train_loss'].iloc[-1]:.3f}")
    with torch.no_grad():
        x_scl, y_scl = toolkit.utils.as_tensors(imbalanced, device=device)
        embeddings = encoder.eval()(x_scl)
    encoder_geometries["with ReLU" if relu else "without ReLU"] = collapse.mean_geometry(
        embeddings.double(), y_scl, normalize=True)
for name, geo in encoder_geometries.items():
    print(name, {k: round(v, 3) for k, v in geo.as_dict().items()})
fig = nc_plots.cosine_heatmaps(encoder_geometries,
                               title="SCL encoder on imbalanced digits: cosines between class means")

# %%
verdict = claims.collapse.orthogonal_frame(encoder_geometries["with ReLU"], tol=0.2)
self_check(verdict, f"encoder + ReLU on imbalanced digits: near an orthogonal frame (max |cos| "
           f"{verdict['max_abs_cos']:.3f} < 0.2; without ReLU "
           f"{encoder_geometries['without ReLU'].as_dict()['max_abs_cos']:.3f})")

# %% [markdown]
# ## 5 · Label smoothing versus MaxSup
#
# **Claim** (Zhou et al. 2025, arXiv 2502.15798): label smoothing (LS) adds α·(z_y − mean z) to the
# cross-entropy, MaxSup adds α·(z_max − mean z). On correctly classified samples the two are the
# *same loss* (LS − MaxSup = α·(z_y − z_max) ≤ 0, zero exactly when the prediction is right); on
# misclassified samples LS penalises the ground-truth logit and so reinforces the error. The paper
# traces LS's over-tight class clusters to this term: LS compresses classes more than MaxSup.
#
# The two losses differ only where the network errs, so the toy run needs training errors --
# with *clean* labels (flipped labels would mostly show LS's known robustness to label noise):
# four overlapping Gaussian classes (separation 1.5, so even the Bayes classifier errs) and a
# one-hidden-layer MLP that cannot separate them. α = 0.2, the top of the paper's range (its
# code ramps α from 0.1 to 0.2 during training; at a fixed 0.1 the toy gap vanishes on one seed
# in five). The same data and initialisation for both losses, on three seeds; NC1 on the (clean)
# training features, test accuracy beside it.

# %%
rows, smoothing_nets = [], {}
for seed in preset.ls_seeds:
    ls_train, ls_test = data.gaussian_mixture(preset.ls_n_samples, preset.ls_classes, preset.ls_dim,
                                              separation=preset.ls_separation, seed=seed)
    for name, loss, kwargs in (("label smoothing", "label_smoothing",
                                {"smoothing": preset.ls_alpha}),
                               ("MaxSup", "maxsup", {"alpha": preset.ls_alpha})):
        torch.manual_seed(seed)
        model = models.MLP(preset.ls_dim, preset.ls_widths, preset.ls_classes)
        hist = train.fit(model, ls_train, test=ls_test, epochs=preset.ls_epochs, lr=preset.ls_lr,
                         momentum=0.9, weight_decay=preset.ls_weight_decay, schedule="cosine",
                         loss=loss, loss_kwargs=kwargs, device=device, seed=seed, progress=False)
        nc = collapse.nc_metrics(*collapse.extract_features(model, ls_train))
        rows.append({"seed": seed, "loss": name, "nc1": nc.nc1, "cdnv": nc.cdnv,
                     "train_acc": hist["train_acc"].iloc[-1], "test_acc": hist["test_acc"].iloc[-1]})
        if seed == SEED:
            smoothing_nets[name], smoothing_data = model, ls_train
smoothing = pd.DataFrame(rows)
print(smoothing.round(3).to_string(index=False))
print(smoothing.groupby("loss")[["nc1", "train_acc", "test_acc"]].mean().round(3))
fig = nc_plots.compare_bars(
    {name: {"nc1": group["nc1"].mean()} for name, group in smoothing.groupby("loss")}, "nc1",
    title=f"within-class spread (NC1, training set), mean over {len(preset.ls_seeds)} seeds")

# %%
x_ls, y_ls = toolkit.utils.as_tensors(smoothing_data, device=device)
with torch.no_grad():
    logits = smoothing_nets["MaxSup"].eval()(x_ls)
verdict = claims.collapse.ls_maxsup_agree_on_correct(logits, y_ls, preset.ls_alpha)
self_check(verdict, f"LS and MaxSup agree on correctly classified samples (gap "
           f"{verdict['gap_correct']:.1e}) and differ on the {verdict['n_wrong']} misclassified "
           f"ones (MaxSup - LS = {verdict['gap_wrong']:.3f} > 0)")
by_loss = {name: group.sort_values("seed") for name, group in smoothing.groupby("loss")}
verdict = claims.collapse.ls_tighter_than_maxsup(by_loss["label smoothing"]["nc1"],
                                                 by_loss["MaxSup"]["nc1"])
self_check(verdict, f"label smoothing compresses classes more than MaxSup on all "
           f"{verdict['n_seeds']} seeds: NC1 ratio LS/MaxSup {verdict['mean_ratio']:.3f} on "
           f"average (worst seed {verdict['max_ratio']:.3f})")

# %% [markdown]
# What the toy run shows, and what it does not: the NC1 gap is small (2 % on average over the three
# seeds) but has the same sign on every seed; MaxSup fits the training set better (it does not push
# down the true-class logit of the errors); the test accuracies differ by up to 2.5 points in
# either direction with the same mean, so this run does not show the accuracy gain the paper
# reports for ImageNet-scale models.

# %% [markdown]
# ## 6 · Watch the features collapse
#
# The slider moves through the epochs recorded in section 1: the sampled training features and the
# class means on the plane of the two leading class-mean directions (left) and NC1 (right). In
# Jupyter, drag it; run headless, the panel shows the last epoch.

# %%
panel = nc_widgets.epoch_panel(recorder.snapshots, history)
panel

# %%
verdict = claims.collapse.panel_draws(panel, recorder.snapshots)
self_check(verdict, f"panel draws headless ({verdict['n_axes']} axes) over "
           f"{verdict['n_snapshots']} recorded epochs")

# %% [markdown]
# ## Try it yourself
#
# 1. Set the weight decay of section 1 to 1e-3 (`preset.with_(extra={"weight_decay": 1e-3})`).
#    Predict: does NC1 still fall 10× after zero error? Check with `collapse.terminal_phase`.
# 2. Build the MLP of section 1 with `norm=None` (no batch norm) and compare the NC1 curves
#    (Pan & Cao 2023).
# 3. In section 2, rerun the sweep with `weight_decay=5e-3`. At which ratio do the minority
#    classifiers merge now? Why does weaker regularisation delay minority collapse?
# 4. Make the deep linear model of section 3 deeper (`depth=5`) with the same weight decay and
#    look at `max_abs_cos` per layer: is the optimiser still finding an orthogonal frame, or a
#    lower-rank geometry? (Weight decay on many layers favours low rank; Súkeník et al. 2024,
#    arXiv 2405.14468.)
# 5. In section 5 raise `ls_separation` to 4 (almost separable classes): what happens to the
#    difference between LS and MaxSup once the training error is zero, and why (hint: the first
#    self-check of that section)?
#
# ## Read more
#
# * Papyan, Han & Donoho 2020, *Prevalence of neural collapse during the terminal phase of deep
#   learning training*, arXiv 2008.08186.
# * Fang, He, Long & Su 2021, *Exploring deep neural networks via layer-peeled model: minority
#   collapse in imbalanced training*, arXiv 2101.12699.
# * Galanti, György & Hutter 2022, *On the role of neural collapse in transfer learning* (CDNV),
#   arXiv 2112.15121.
# * Dang et al. 2023, *Neural collapse in deep linear networks: from balanced to imbalanced data*,
#   arXiv 2301.00437.
# * Kini et al. 2023, *Symmetric neural-collapse representations with supervised contrastive loss:
#   the impact of ReLU and batching*, arXiv 2306.07960; Khosla et al. 2020, arXiv 2004.11362.
# * Zhou et al. 2025, *MaxSup: overcoming representation collapse in label smoothing*,
#   arXiv 2502.15798.
# * Pan & Cao 2023, *Towards understanding neural collapse: the effects of batch normalization and
#   weight decay*, arXiv 2309.04644.
# * Súkeník, Lampert & Mondelli 2024, *Neural collapse versus low-rank bias: is deep neural
#   collapse really optimal?*, arXiv 2405.14468.
