"""Named run sizes per experiment: ``toy`` (a 2-core CPU, seconds, < 2 GB) and ``full`` (paper scale).

A preset is a small frozen dataclass. Notebooks read theirs with
``get_preset("<experiment>", PRESET)``; papermill's ``-p PRESET full`` switches to the paper-scale run.
Experiment-specific knobs live in ``extra`` and read like the fields: ``preset.epochs``,
``preset.conv_widths``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields, replace

__all__ = ["Preset", "register", "experiments", "get_preset"]

_REGISTRY: dict[str, dict[str, Preset]] = {}


@dataclass(frozen=True)
class Preset:
    """Sizes of one run: dataset, model, widths, epochs, batch size (None = full batch), lr."""

    experiment: str
    name: str
    dataset: str
    model: str
    widths: tuple = ()
    epochs: int = 10
    batch_size: int | None = None
    lr: float = 0.1
    extra: dict = field(default_factory=dict)

    def __getattr__(self, key: str):
        """``preset.key`` reads the experiment-specific knobs in ``extra`` like the fields."""
        # only called when normal lookup fails, i.e. for names that are not dataclass fields
        extra = self.__dict__.get("extra", {})
        if key in extra:
            return extra[key]
        raise AttributeError(f"preset {self.__dict__.get('experiment')}/{self.__dict__.get('name')} "
                             f"has no setting {key!r}; its settings are "
                             f"{sorted([f.name for f in fields(self)] + list(extra))}.")

    def __getitem__(self, key: str):
        """Deprecated: ``preset["key"]``; use ``preset.key``."""
        warnings.warn("preset[key] is deprecated and will be removed in the next release; "
                      "use preset.key (attribute access).", DeprecationWarning, stacklevel=2)
        return self.extra[key]

    def with_(self, **changes) -> Preset:
        """A copy with some fields changed (``extra`` keys are merged)."""
        extra = {**self.extra, **changes.pop("extra", {})}
        return replace(self, extra=extra, **changes)


def register(experiment: str, *presets: Preset) -> None:
    """Register presets under an experiment name (each preset's ``name`` is its key)."""
    table = _REGISTRY.setdefault(experiment, {})
    for p in presets:
        if p.experiment != experiment:
            raise ValueError(f"preset {p.name!r} says experiment={p.experiment!r}, "
                             f"registered under {experiment!r}.")
        table[p.name] = p


def experiments() -> list[str]:
    """Names of the experiments that have presets."""
    return sorted(_REGISTRY)


def get_preset(experiment: str, name: str = "toy") -> Preset:
    """The preset ``name`` of ``experiment``; unknown names raise an error listing the valid ones."""
    if experiment not in _REGISTRY:
        raise ValueError(f"Unknown experiment {experiment!r}; valid experiments: {experiments()}.")
    table = _REGISTRY[experiment]
    if name not in table:
        raise ValueError(f"Unknown preset {name!r} for experiment {experiment!r}; valid presets: "
                         f"{sorted(table)}.")
    return table[name]


# ------------------------------------------------------------------------------------ 00 tour
register(
    "tour",
    Preset("tour", "toy", dataset="digits", model="mlp", widths=(128,), epochs=30,
           batch_size=64, lr=0.05, extra={"momentum": 0.9, "panel_epochs": 15}),
    Preset("tour", "full", dataset="mnist1d", model="mlp", widths=(512, 512), epochs=100,
           batch_size=128, lr=0.05, extra={"momentum": 0.9, "panel_epochs": 50}),
)

# ---------------------------------------------------------------------------- 04 pruning spectra
register(
    "pruning",
    Preset("pruning", "toy", dataset="digits", model="mlp", widths=(128, 128), epochs=12,
           batch_size=32, lr=0.05,
           extra={"momentum": 0.9, "amounts": (0.0, 0.25, 0.5, 0.75, 0.9, 0.95), "scope": "layer",
                  "exclude": ("head",), "panel_layer": "features.3", "lottery_widths": (64,),
                  "lottery_epochs": 8, "lottery_batch_size": 64, "lottery_rounds": 4,
                  "lottery_rate": 0.5, "lottery_lrs": (0.05, 0.5), "rewind_epoch": 0,
                  "late_rewind_epoch": 1}),
    Preset("pruning", "full", dataset="mnist1d", model="mlp", widths=(512, 512), epochs=100,
           batch_size=32, lr=0.05,
           extra={"momentum": 0.9, "amounts": (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98),
                  "scope": "layer", "exclude": ("head",), "panel_layer": "features.3",
                  "lottery_widths": (300, 100), "lottery_epochs": 40, "lottery_batch_size": 64,
                  "lottery_rounds": 10, "lottery_rate": 0.2, "lottery_lrs": (0.01, 0.2),
                  "rewind_epoch": 0, "late_rewind_epoch": 2}),
)

# ----------------------------------------------------- 07 collapse batches (SCL batch-binding)
register(
    "collapse_batches",
    Preset("collapse_batches", "toy", dataset="ufm", model="free_embeddings", epochs=40,
           batch_size=8, lr=0.05,
           extra={"class_counts": (24, 24, 4, 4), "dim": 8, "temperature": 1.0,
                  "full_epochs": 400, "optimizer": "adam"}),
    Preset("collapse_batches", "full", dataset="ufm", model="free_embeddings", epochs=200,
           batch_size=16, lr=0.05,
           extra={"class_counts": (200, 200, 200, 20, 20, 20, 20, 20, 20, 20), "dim": 16,
                  "temperature": 1.0, "full_epochs": 2000, "optimizer": "adam"}),
)

# ------------------------------------------------------------ 08 pruning theory (path-norms, ...)
register(
    "pruning_theory",
    Preset("pruning_theory", "toy", dataset="digits", model="mlp", widths=(64, 64), epochs=30,
           batch_size=32, lr=0.05,
           extra={"momentum": 0.9, "record_every": 3, "amounts": (0.0, 0.5, 0.8, 0.9, 0.95),
                  "rescale_range": 3.0,
                  # §3 rewinding vs fine-tuning (Renda et al.): notebook 04's lottery setting
                  # (digits, 64-64-10, 8 epochs, 4 rounds halving the weights) with a step schedule
                  "rt_widths": (64,), "rt_epochs": 8, "rt_rewind_epoch": 1, "rt_rounds": 4,
                  "rt_rate": 0.5, "rt_lrs": (0.05, 0.5), "rt_batch_size": 64,
                  "rt_schedule": "step", "rt_finetune_factor": 0.1,
                  "sp_methods": ("magnitude", "random", "l2_sampling", "l1_sampling"),
                  "sp_amounts": (0.0, 0.5, 0.8, 0.9)}),
    Preset("pruning_theory", "full", dataset="mnist1d", model="mlp", widths=(256, 256),
           epochs=100, batch_size=32, lr=0.05,
           extra={"momentum": 0.9, "record_every": 5,
                  "amounts": (0.0, 0.5, 0.8, 0.9, 0.95, 0.98), "rescale_range": 3.0,
                  "rt_widths": (300, 100), "rt_epochs": 40, "rt_rewind_epoch": 2, "rt_rounds": 8,
                  "rt_rate": 0.2, "rt_lrs": (0.01, 0.2), "rt_batch_size": 64,
                  "rt_schedule": "step", "rt_finetune_factor": 0.1,
                  "sp_methods": ("magnitude", "random", "l2_sampling", "l1_sampling"),
                  "sp_amounts": (0.0, 0.5, 0.8, 0.9, 0.95)}),
)

# --------------------------------------------------------------------------- 11 pruning bounds
register(
    "pruning_bounds",
    # one-shot pruning of a trained MLP, no retraining; sketch constant c and 32-bit numbers
    # (the float32 weights as they are) in the description lengths of toolkit.pruning_bounds
    Preset("pruning_bounds", "toy", dataset="digits", model="mlp", widths=(128, 128), epochs=30,
           batch_size=32, lr=0.05,
           extra={"momentum": 0.9, "methods": ("magnitude", "random"),
                  "amounts": (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99), "sketch_c": 1.0,
                  "bits": 32, "delta": 0.05, "panel_sparsity": 0.7}),
    Preset("pruning_bounds", "full", dataset="mnist1d", model="mlp", widths=(512, 512),
           epochs=100, batch_size=64, lr=0.05,
           extra={"momentum": 0.9, "methods": ("magnitude", "random"),
                  "amounts": (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995), "sketch_c": 1.0,
                  "bits": 32, "delta": 0.05, "panel_sparsity": 0.8}),
)

# --------------------------------------------------------------------------- 03 neural collapse
register(
    "collapse",
    Preset("collapse", "toy", dataset="digits", model="mlp", widths=(128, 128), epochs=300,
           batch_size=None, lr=0.1,
           # sigma_w = 1/sqrt(3): the weight scale of PyTorch's default nn.Linear initialisation,
           # with which the batch-norm MLP's NC1 falls > 10x after zero error in 300 epochs
           extra={"norm": "batch", "sigma_w": 3 ** -0.5, "n_train": 300, "momentum": 0.9,
                  "weight_decay": 1e-2, "schedule": "cosine", "metrics_every": 10,
                  "metrics_batch_size": None, "snapshot": 200, "checkpoint": False,
                  "ufm_classes": 4, "ufm_per_class": 10, "ufm_dim": 8, "ufm_steps": 100,
                  "ufm_weight_decay": 5e-3, "mc_classes": 6, "mc_n_major": 32,
                  "mc_ratios": (1, 2, 4, 8, 16), "mc_weight_decay": 0.2, "mc_steps": 200,
                  "dl_counts": (20, 20, 5, 5), "dl_depth": 3, "dl_steps": 300,
                  "scl_dataset": "digits", "scl_ratio": 0.1, "scl_n_major": 60,
                  "scl_widths": (128,), "scl_dim": 32, "scl_epochs": 200, "scl_lr": 1e-2,
                  "scl_temperature": 0.1,
                  # section 4, free embeddings (Kini et al.'s UFM); temperature 1: at 0.1 the loss
                  # is flat in the geometry once classes separate and Adam stalls
                  "sclu_balanced": (10,) * 6, "sclu_imbalanced": (20, 20, 20, 2, 2, 2),
                  "sclu_dim": 16, "sclu_steps": 500, "sclu_restarts": 3,
                  "sclu_temperature": 1.0,
                  # section 5: overlapping Gaussian classes (clean labels, Bayes error > 0);
                  # alpha = 0.2, the top of the paper's range (its code ramps 0.1 -> 0.2)
                  "ls_dataset": "gaussian_mixture", "ls_n_samples": 800, "ls_classes": 4,
                  "ls_dim": 10, "ls_separation": 1.5, "ls_alpha": 0.2, "ls_seeds": (0, 1, 2),
                  "ls_widths": (64,), "ls_epochs": 300, "ls_lr": 0.1, "ls_weight_decay": 0.0}),
    Preset("collapse", "full", dataset="cifar10", model="resnet18", widths=(64,), epochs=350,
           batch_size=128, lr=0.1,
           extra={"norm": "batch", "n_train": None, "momentum": 0.9, "weight_decay": 5e-4,
                  "schedule": "step",
                  "metrics_every": 5, "metrics_batch_size": 1000, "snapshot": 500,
                  "checkpoint": True,
                  "ufm_classes": 10, "ufm_per_class": 50, "ufm_dim": 32, "ufm_steps": 500,
                  "ufm_weight_decay": 5e-3, "mc_classes": 10, "mc_n_major": 128,
                  "mc_ratios": (1, 2, 4, 8, 16, 32, 64, 128), "mc_weight_decay": 0.2,
                  "mc_steps": 500, "dl_counts": (200, 200, 200, 50, 50, 50), "dl_depth": 3,
                  "dl_steps": 1000, "scl_dataset": "mnist1d", "scl_ratio": 0.1,
                  "scl_n_major": 400, "scl_widths": (512, 512), "scl_dim": 64,
                  "scl_epochs": 500, "scl_lr": 1e-3, "scl_temperature": 0.1,
                  "sclu_balanced": (50,) * 10, "sclu_imbalanced": (100,) * 5 + (10,) * 5,
                  "sclu_dim": 32, "sclu_steps": 1000, "sclu_restarts": 3,
                  "sclu_temperature": 1.0,
                  "ls_dataset": "gaussian_mixture", "ls_n_samples": 4000, "ls_classes": 10,
                  "ls_dim": 20, "ls_separation": 2.0, "ls_alpha": 0.2,
                  "ls_seeds": tuple(range(5)), "ls_widths": (128,), "ls_epochs": 300,
                  "ls_lr": 0.1, "ls_weight_decay": 0.0}),
)

# ------------------------------------------------------------------------------ 01 NTK equivalence
# widths: the widths of section 2-3 (one hidden layer); lr: step size relative to the kernel,
# eta' * lambda_max(Theta_inf) with eta' = 2 eta / N (ntk.stable_lr; GD is stable below 2);
# epochs: full-batch GD steps. conv_*: section 1; gated_*: section 5.
register(
    "ntk",
    Preset("ntk", "toy", dataset="regression_1d", model="mlp", widths=(64, 256, 1024, 4096),
           epochs=100, batch_size=None, lr=0.5,
           extra={"n_train": 16, "n_test": 100, "fn": "sin", "sigma_b": 1.0, "seeds": (0, 1),
                  "record_every": 5, "conv_widths": (64, 128, 256, 512, 1024, 2048),
                  "conv_depth": 2, "conv_seeds": (0, 1), "conv_points": 16, "n_modes": 4,
                  "gated_width": 512, "gated_epochs": 100, "gated_points": 16}),
    Preset("ntk", "full", dataset="regression_1d", model="mlp",
           widths=(64, 256, 1024, 4096, 16384, 65536), epochs=1000, batch_size=None, lr=0.5,
           extra={"n_train": 32, "n_test": 400, "fn": "sin_mix", "sigma_b": 1.0,
                  "seeds": tuple(range(8)), "record_every": 10,
                  "conv_widths": (64, 256, 1024, 4096, 16384), "conv_depth": 3,
                  "conv_seeds": tuple(range(10)), "conv_points": 64, "n_modes": 6,
                  "gated_width": 8192, "gated_epochs": 500, "gated_points": 64}),
)

# ------------------------------------------------------------------------------ 02 loss landscape
# The main run (sections 1, 3, 4, 8): a Gaussian mixture, MLP `widths`, SGD+momentum. The other
# sections' knobs are prefixed: skip_ (section 2), flat_ (5), eos_ (6), imb_ (7).
register(
    "landscape",
    Preset("landscape", "toy", dataset="gaussian_mixture", model="mlp", widths=(64,), epochs=20,
           batch_size=128, lr=0.1,
           extra={"n_samples": 800, "n_classes": 4, "dim": 20, "separation": 1.5,
                  "momentum": 0.9, "steps": 21, "hess_k": 8, "trace_samples": 30,
                  "slq_vectors": 8, "slq_steps": 40, "rescale_alpha": 10.0,
                  "skip_depth": 4, "skip_width": 16, "skip_n_train": 400, "skip_epochs": 20,
                  "skip_lr": 3e-3, "skip_batch": 50,
                  "flat_n_train": 512, "flat_widths": (32,), "flat_small_batch": 16,
                  "flat_small_epochs": 15, "flat_gd_epochs": 150, "flat_lr": 0.1,
                  "flat_rho": 0.1,
                  "eos_n_train": 500, "eos_widths": (32, 32), "eos_sigma_w": 0.7,
                  "eos_lr": 2.0, "eos_control_lr": 1.0, "eos_epochs": 700, "eos_every": 10,
                  "imb_ratio": 0.05, "imb_epochs": 20, "imb_batch": 32, "imb_lr": 0.05,
                  "imb_rho": 0.1, "imb_widths": (32,), "imb_seeds": 3,
                  "panel_steps": 15}),
    Preset("landscape", "full", dataset="gaussian_mixture", model="mlp", widths=(256, 256),
           epochs=60, batch_size=128, lr=0.05,
           extra={"n_samples": 20000, "n_classes": 10, "dim": 50, "separation": 1.5,
                  "momentum": 0.9, "steps": 51, "hess_k": 20, "trace_samples": 300,
                  "slq_vectors": 10, "slq_steps": 100, "rescale_alpha": 10.0,
                  "skip_depth": 12, "skip_width": 64, "skip_n_train": None, "skip_epochs": 60,
                  "skip_lr": 1e-3, "skip_batch": 64,
                  "flat_n_train": None, "flat_widths": (128,), "flat_small_batch": 16,
                  "flat_small_epochs": 40, "flat_gd_epochs": 1000, "flat_lr": 0.1,
                  "flat_rho": 0.1,
                  "eos_n_train": 1000, "eos_widths": (64, 64), "eos_sigma_w": 0.7,
                  "eos_lr": 2.0, "eos_control_lr": 0.25, "eos_epochs": 2000, "eos_every": 20,
                  "imb_ratio": 0.02, "imb_epochs": 60, "imb_batch": 32, "imb_lr": 0.05,
                  "imb_rho": 0.1, "imb_widths": (128,), "imb_seeds": 3,
                  "panel_steps": 31}),
)

# ------------------------------------------------------------------------------ 05 feature learning
# μP (models.MLP(parameterization="mup", base_width=base_width)). coord_*: section 1 (a few
# full-batch SGD steps, RMS change of pre-activations; the NTK parameterisation gets its own rate,
# 32x, which matches the effective hidden-layer rate at width 64); lrt_*: section 2 (a log2 grid
# of rates, mini-batch SGD on a Gaussian mixture); drift_*: section 3 (NTK drift of deep nets).
# coord_base_width: a smaller base makes the readout's initial output, ~sqrt(n0/n), negligible
# from width 64 on (with n0 = 16 the two narrowest widths still show that transient).
register(
    "feature_learning",
    Preset("feature_learning", "toy", dataset="teacher_regression", model="mlp",
           widths=(64, 128, 256, 512, 1024, 2048), epochs=3, batch_size=None, lr=0.01,
           extra={"base_width": 16, "coord_base_width": 8, "coord_depth": 3,
                  "coord_points": 64, "coord_ntk_lr": 0.32,
                  "coord_seeds": (0, 1, 2, 3),
                  "lrt_widths": (64, 256, 1024), "lrt_depth": 2, "lrt_log2_lrs": tuple(range(-8, 3)),
                  "lrt_epochs": 3, "lrt_batch": 64, "lrt_samples": 512, "lrt_dim": 16,
                  "lrt_classes": 4,
                  "drift_widths": (64, 256, 1024, 2048), "drift_depth": 2, "drift_mup_lr": 0.1,
                  "drift_ntk_lr": 0.3, "drift_epochs": 20, "drift_points": 16,
                  "drift_seeds": (0,)}),
    Preset("feature_learning", "full", dataset="teacher_regression", model="mlp",
           widths=(64, 128, 256, 512, 1024, 2048, 4096, 8192), epochs=3, batch_size=None, lr=0.01,
           extra={"base_width": 16, "coord_base_width": 8, "coord_depth": 4,
                  "coord_points": 256, "coord_ntk_lr": 0.32,
                  "coord_seeds": tuple(range(10)),
                  "lrt_widths": (64, 256, 1024, 4096), "lrt_depth": 3,
                  "lrt_log2_lrs": tuple(range(-10, 4)), "lrt_epochs": 20, "lrt_batch": 64,
                  "lrt_samples": 4000, "lrt_dim": 16, "lrt_classes": 4,
                  "drift_widths": (64, 256, 1024, 4096, 8192), "drift_depth": 3,
                  "drift_mup_lr": 0.1, "drift_ntk_lr": 0.3, "drift_epochs": 100,
                  "drift_points": 32, "drift_seeds": (0, 1, 2)}),
)

# ------------------------------------------------------------------------ 06 curvature scaling
# rank_*: section 1, Hessian rank of tiny CNNs (arXiv 2305.09088): dense float64 Hessians of
# TinyCNN(rank_in_channels, c, rank_outputs, depth=rank_depth, readout="pool") at init, MSE to
# random targets on rank_samples Gaussian inputs, over rank_channels; an MLP of the same size.
register(
    "curvature",
    Preset("curvature", "toy", dataset="gaussian", model="tiny_cnn",
           widths=(2, 4, 8, 16), epochs=0, batch_size=None, lr=0.0,
           extra={"rank_dim": 1, "rank_size": 8, "rank_in_channels": 3, "rank_outputs": 4,
                  "rank_depth": 3, "rank_kernel": 3, "rank_samples": 64}),
    Preset("curvature", "full", dataset="gaussian", model="tiny_cnn",
           widths=(2, 4, 8, 16, 24, 32), epochs=0, batch_size=None, lr=0.0,
           extra={"rank_dim": 2, "rank_size": 4, "rank_in_channels": 3, "rank_outputs": 4,
                  "rank_depth": 3, "rank_kernel": 3, "rank_samples": 256}),
)

# ---------------------------------------------------------------- 09 landscape convergence
# Kiselev & Grabovoy 2024 (arXiv 2409.11995): a bias-free ReLU MLP (widths) trained with Adam on
# the whole set (dataset, n_samples for mnist1d), per-object losses on a filter-normalised plane
# ±span (steps per axis), |L_{k+1} − L_k| averaged over `orders` orderings (the paper: 100), the
# top Hessian eigenvalue of L_k for eig_sizes over eig_orders orderings; n_seeds seeds.
register(
    "landscape_convergence",
    Preset("landscape_convergence", "toy", dataset="digits", model="mlp", widths=(32, 32),
           epochs=20, batch_size=64, lr=1e-3,
           extra={"optimizer": "adam", "n_samples": None, "span": 0.5, "steps": 15,
                  "orders": 20, "eig_sizes": (16, 32, 64, 128, 256, 512), "eig_orders": 8,
                  "n_seeds": 3, "k_min": 10}),
    Preset("landscape_convergence", "full", dataset="mnist1d", model="mlp",
           widths=(32, 32, 32, 32), epochs=20, batch_size=64, lr=1e-3,
           extra={"optimizer": "adam", "n_samples": 12500, "span": 0.5, "steps": 31,
                  "orders": 100, "eig_sizes": (16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
                  "eig_orders": 16, "n_seeds": 3, "k_min": 10}),
)

# --------------------------------------------------------- 10 sharpness and generalisation
# Wen, Li & Ma 2023 (arXiv 2307.11007): two-layer ReLU nets MLP(d, [n_train], 1) on the k-sparse
# parity of {±1}^d (n_train distinct points; the test set: n_test unseen points, None = the rest
# of the cube), full-batch GD and SAM (radius rho) under MSE for `epochs` at `lr` (biases) or
# `lr_nobias` (no biases), one net per seed in `seeds`; tr(H) by Hutch++ with trace_samples.
# The stable step size falls with the width (0.05 diverges at width 256), hence full's lower lr;
# full's rho = 0.05: at 0.1 one of three SAM nets collapsed to a constant (measured on the CPU).
# Flatness search (sharpness.minimise_sharpness, one net per seed): search_fit_steps of Adam at
# search_lr on the loss alone, then search_steps with the penalty weight lowered geometrically
# through search_weights (start, end).
register(
    "sharpness",
    Preset("sharpness", "toy", dataset="sparse_parity", model="mlp", widths=(128,),
           epochs=1000, batch_size=None, lr=0.05,
           extra={"d": 10, "k": 2, "n_train": 128, "n_test": None, "rho": 0.1,
                  "lr_nobias": 0.03, "seeds": (0, 1, 2), "trace_samples": 400,
                  "search_steps": 300, "search_fit_steps": 100, "search_lr": 0.02,
                  "search_weights": (0.1, 1e-3)}),
    Preset("sharpness", "full", dataset="sparse_parity", model="mlp", widths=(256,),
           epochs=4000, batch_size=None, lr=0.025,
           extra={"d": 12, "k": 2, "n_train": 256, "n_test": None, "rho": 0.05,
                  "lr_nobias": 0.015, "seeds": tuple(range(5)), "trace_samples": 800,
                  "search_steps": 2000, "search_fit_steps": 200, "search_lr": 0.01,
                  "search_weights": (0.1, 3e-4)}),
)
