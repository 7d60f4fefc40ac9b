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

# %% tags=["parameters"]
PRESET = "toy"
SEED = 0
DEVICE = "auto"

# %%
import pandas as pd
import torch

import toolkit
from toolkit import collapse, data, models, presets, train
from toolkit.plotting import collapse as nc_plots
from toolkit.utils import self_check
from toolkit.widgets import collapse as nc_widgets

preset = presets.get_preset("collapse", PRESET)
device = toolkit.get_device(DEVICE)
toolkit.seed_everything(SEED)
print(preset)

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
self_check(phase["zero_error_epoch"] is not None, f"zero training error reached at epoch "
           f"{phase['zero_error_epoch']}")
self_check(phase["drop"] >= 10, f"NC1 fell {phase['drop']:.1f}x from the zero-error epoch "
           f"({phase['at_zero_error']:.3g}) to the end ({phase['final']:.3g})")
self_check(final.etf_error < first["etf_error"] / 3 and final.self_duality < first["self_duality"] / 10,
           f"means approach the ETF (error {first['etf_error']:.2f} -> {final.etf_error:.3f}) and "
           f"the classifier approaches the means (NC3 {first['self_duality']:.2f} -> "
           f"{final.self_duality:.3f})")
self_check(final.ncc_mismatch <= 0.01, f"NC4: classifier = nearest class mean on "
           f"{100 * (1 - final.ncc_mismatch):.1f}% of the training set")

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
self_check(ufm_metrics.etf_error < 1e-2 and ufm_metrics.nc1 < 1e-4
           and ufm_metrics.self_duality < 1e-3,
           f"balanced UFM: ETF error {ufm_metrics.etf_error:.1e} < 1e-2, NC1 "
           f"{ufm_metrics.nc1:.1e}, NC3 {ufm_metrics.self_duality:.1e}")
self_check(abs(curve["minority_cos"].iloc[0] + 1 / (preset.mc_classes - 1)) < 1e-3,
           "ratio 1: minority classifier rows have the ETF cosine -1/(C-1)")
gaps = curve["minority_distance"].to_numpy()
self_check(((gaps[1:] - gaps[:-1]) < 1e-6).all() and gaps[-1] < 1e-2,
           f"minority collapse: the distance between minority classifier rows shrinks "
           f"monotonically from {gaps[0]:.2f} to {gaps[-1]:.1e} (relative to the row norm) as the "
           f"ratio grows to {curve['ratio'].iloc[-1]:g}")

# %% [markdown]
# ## 3 · Deep linear networks and the orthogonal frame
#
# **Claim** (Dang et al. 2023, arXiv 2301.00437): in a deep *linear* unconstrained-features model
# trained with MSE and weight decay, collapse happens in **every** linear layer. Without a bias and
# with imbalanced classes, the class means do not form an ETF but an **orthogonal frame** whose
# lengths depend on the class sizes. For one layer the lengths have a closed form
# (`collapse.ufm_mse_closed_form`): the minority classes get *longer* features and *shorter*
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
self_check((per_layer["nc1"] < 1e-3).all(), f"NC1 < 1e-3 in every layer (max "
           f"{per_layer['nc1'].max():.1e})")
self_check((per_layer["max_abs_cos"] < 1e-2).all(), "class means form an orthogonal frame in "
           f"every layer (max |cos| {per_layer['max_abs_cos'].max():.1e})")
self_check((per_layer["norm_count_corr"] < 0).all(), "in every layer the minority classes have "
           "the longer class means")
rel = ((predicted["measured_feature_norm"] - predicted["feature_norm"]).abs()
       / predicted["feature_norm"]).max()
self_check(rel < 1e-2, f"one-layer norms match the closed form (max relative error {rel:.1e})")

# %% [markdown]
# ## 4 · Supervised contrastive loss: ReLU restores symmetry
#
# **Claim** (Kini et al. 2023, arXiv 2306.07960): under class imbalance the embeddings learned
# with the supervised contrastive loss (SCL, Khosla et al. 2020, arXiv 2004.11362) lose their
# symmetry, but adding a ReLU at the end of the encoder restores it: the class means form an
# **orthogonal frame** (all pairwise cosines 0) whatever the class sizes, provided every batch holds
# every class (full batch here).
#
# Two encoders identical up to the final ReLU are trained on step-imbalanced digits (half of the
# classes keep 10% of their samples) by the same `train.fit` as every other network, with the loss
# `collapse.supcon_loss` (a callable `(embeddings, labels) -> loss`). The outputs are embeddings,
# not class logits, so `metrics=("loss",)`: an accuracy would mean nothing.

# %%
scl_train, _ = data.load(preset.scl_dataset, seed=SEED)
imbalanced = data.imbalance(data.subsample(scl_train, min(len(scl_train), 10 * preset.scl_n_major),
                                           seed=SEED), ratio=preset.scl_ratio, seed=SEED)
print("class sizes:", torch.bincount(imbalanced.tensors[1]).tolist())
geometries = {}
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
    geometries["with ReLU" if relu else "without ReLU"] = collapse.mean_geometry(
        embeddings.double(), y_scl, normalize=True)
for name, geo in geometries.items():
    print(name, {k: round(v, 3) for k, v in geo.as_dict().items()})

# %%
fig = nc_plots.cosine_heatmaps(geometries, title="SCL embeddings: cosines between class means")

# %%
with_relu, without_relu = geometries["with ReLU"].as_dict(), geometries["without ReLU"].as_dict()
self_check(with_relu["max_abs_cos"] < 0.2 and abs(with_relu["mean_cos"]) < 0.05,
           f"SCL + ReLU: off-diagonal cosines ~ 0 (mean {with_relu['mean_cos']:.3f}, max |cos| "
           f"{with_relu['max_abs_cos']:.3f}): an orthogonal frame despite imbalance")
self_check(without_relu["std_cos"] > 3 * with_relu["std_cos"],
           f"without ReLU the geometry is not symmetric: spread of cosines "
           f"{without_relu['std_cos']:.3f} vs {with_relu['std_cos']:.3f} with ReLU")

# %% [markdown]
# ## 5 · Label smoothing versus MaxSup
#
# **Claim** (Zhou et al. 2025, arXiv 2502.15798): label smoothing (LS) adds α·(z_y − mean z) to the
# cross-entropy, MaxSup adds α·(z_max − mean z). On correctly classified samples the two are the
# *same loss* (LS − MaxSup = α·(z_y − z_max) ≤ 0, zero exactly when the prediction is right); on
# misclassified samples LS penalises the ground-truth logit and so reinforces the error. The paper
# traces LS's over-tight class clusters to this term: LS compresses classes more than MaxSup.
#
# Because the two losses coincide once the training error is zero, the toy run keeps errors alive:
# 30% of the training labels are flipped and the network is small. Within-class spread (NC1) is
# measured on the clean held-out digits.

# %%
ls_train, ls_test = data.load(preset.ls_dataset, seed=SEED)
if preset.ls_n_train:
    ls_train = data.subsample(ls_train, preset.ls_n_train, seed=SEED)
noisy = data.label_noise(ls_train, preset.ls_noise, seed=SEED)
smoothing_runs, smoothing_nets = {}, {}
for name, loss, kwargs in (("label smoothing", "label_smoothing", {"smoothing": preset.ls_alpha}),
                           ("MaxSup", "maxsup", {"alpha": preset.ls_alpha})):
    torch.manual_seed(SEED)
    model = models.MLP(noisy.tensors[0].shape[1], preset.ls_widths, data.n_classes(noisy))
    hist = train.fit(model, noisy, epochs=preset.ls_epochs, lr=preset.ls_lr, momentum=0.9,
                     weight_decay=preset.ls_weight_decay, schedule="cosine", loss=loss,
                     loss_kwargs=kwargs, device=device, seed=SEED, progress=False)
    held_out = collapse.nc_metrics(*collapse.extract_features(model, ls_test))
    smoothing_runs[name] = {**held_out.as_dict(), "train_acc": hist["train_acc"].iloc[-1]}
    smoothing_nets[name] = model
    print(f"{name:16s} train acc (noisy labels) {hist['train_acc'].iloc[-1]:.3f}   "
          f"held-out NC1 {held_out.nc1:.3f}   CDNV {held_out.cdnv:.3f}")
fig = nc_plots.compare_bars(smoothing_runs, "nc1", title="within-class spread on clean test digits")

# %%
x_ls, y_ls = toolkit.utils.as_tensors(noisy, device=device)
with torch.no_grad():
    logits = smoothing_nets["MaxSup"].eval()(x_ls)
correct = logits.argmax(1) == y_ls
ls_fn = train.get_loss("label_smoothing", smoothing=preset.ls_alpha)
ms_fn = train.get_loss("maxsup", alpha=preset.ls_alpha)
gap_correct = abs(float(ls_fn(logits[correct], y_ls[correct]) - ms_fn(logits[correct], y_ls[correct])))
gap_wrong = float(ms_fn(logits[~correct], y_ls[~correct]) - ls_fn(logits[~correct], y_ls[~correct]))
self_check(gap_correct < 1e-5 and gap_wrong > 0,
           f"LS and MaxSup agree on correctly classified samples (gap {gap_correct:.1e}) and differ "
           f"on the {int((~correct).sum())} misclassified ones (MaxSup - LS = {gap_wrong:.3f} > 0)")
ls_nc1, ms_nc1 = smoothing_runs["label smoothing"]["nc1"], smoothing_runs["MaxSup"]["nc1"]
self_check(ls_nc1 < 0.9 * ms_nc1, f"label smoothing compresses classes more than MaxSup: "
           f"held-out NC1 {ls_nc1:.3f} < 0.9 x {ms_nc1:.3f}")

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
self_check(len(recorder.snapshots) >= 3 and panel.n_draws >= 1,
           f"panel built over {len(recorder.snapshots)} recorded epochs")

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
# 5. In section 5 set `ls_noise` to 0: what happens to the difference between LS and MaxSup, and
#    why (hint: the first self-check of that section)?
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
