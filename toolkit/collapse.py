"""Neural collapse: NC1-NC4, CDNV, a streaming accumulator, the unconstrained-features model,
the supervised contrastive loss and per-layer collapse of deep linear networks.

Conventions (every function in this module uses them; they are the ones of Papyan, Han & Donoho
2020, arXiv:2008.08186, made explicit where the literature disagrees)
-------------------------------------------------------------------------------------------
* ``h_i`` in R^d is the feature of sample i (a row of ``features``, shape (N, d)), ``y_i`` in
  {0, ..., C-1} its label, ``n_c`` the number of samples of class c, N = sum_c n_c.
* Class means ``mu_c = (1/n_c) sum_{y_i = c} h_i``.
* Global mean ``mu_G``: ``global_mean="class_means"`` (default) uses the mean of the class means,
  ``(1/C) sum_c mu_c``; ``global_mean="samples"`` uses the sample mean ``(1/N) sum_i h_i`` as written
  in Papyan et al. The two coincide on balanced data. Under imbalance the sample mean is pulled
  towards the majority classes, so the centred means of minority classes look longer; the mean of
  class means keeps every class on the same footing, which is the reference the ETF target
  ``I - 11^T/C`` assumes (each class weighs 1/C). Both are offered; the choice is recorded.
* ``M`` is the (C, d) matrix whose rows are the centred class means ``mu_c - mu_G`` (the papers
  write its transpose, a d x C matrix ``M~``; we keep rows = classes like ``nn.Linear.weight``).
* Within-class covariance over **all N samples**:
  ``Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T`` (classes weighted by size).
* Between-class covariance over **classes**: ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T
  = M^T M / C`` (each class weighs 1/C, whatever its size).
* NC1 ``= Tr(Sigma_W Sigma_B^+) / C`` with the Moore-Penrose pseudo-inverse. Since
  ``Sigma_B^+ = C (M^T M)^+ = C M^+ (M^+)^T``, with R the (N, d) matrix of residuals
  ``h_i - mu_{y_i}``, ``Tr(Sigma_W Sigma_B^+) = (C/N) ||R M^+||_F^2``: only the projection of the
  residuals on the (rank <= C-1) span of the class means matters. We compute ``M^+`` from a thin
  SVD of M (never from the squared, worse-conditioned Sigma_B), drop singular values below
  ``rtol * max(s_max, ||[mu_1 ... mu_C]||_F)`` with ``rtol = max(C, d) * eps`` (the null
  direction created by centring is rounding noise of size ~eps times the *uncentred* means, which
  dominates for features far from the origin), and never form the d x d matrix Sigma_W. The
  classifier's logits for NC4 come from the same residuals (``h W^T + b = r W^T + mu_y W^T + b``),
  so one product ``R [M^+ | W^T]`` serves both. Cost O(N d C) instead of O(N d^2), memory O(C d)
  instead of O(d^2 + N d). (Pseudo-inverting the d x d Sigma_B instead
  needs a rank cut too: its d - C + 1 null eigenvalues are pure rounding noise, and NumPy's
  default cut ``rcond=1e-15`` sits at the rounding level of a product of such matrices.)
* Weights ``W`` are the (C, d) weight of the last ``nn.Linear`` (rows ``w_c``), ``b`` its bias.

References: Papyan, Han & Donoho 2020 (2008.08186) for NC1-NC4; Fang, He, Long & Su 2021
(2101.12699) for the layer-peeled/unconstrained-features model and minority collapse; Galanti,
Gyorgy & Hutter 2022 (2112.15121) for the CDNV; Dang et al. 2023 (2301.00437) for deep linear
networks; Kini et al. 2023 (2306.07960) for supervised contrastive loss, ReLU and orthogonal frames;
Khosla et al. 2020 (2004.11362) for the SupCon loss; Zhou et al. 2025 (2502.15798) for MaxSup;
Pan & Cao 2023 (2309.04644) for batch norm and weight decay speeding collapse up.

Analysis only: nothing here plots or prints (see ``toolkit.plotting.collapse``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = [
    "GLOBAL_MEANS",
    "CollapseMetrics",
    "CollapseAccumulator",
    "nc_metrics",
    "class_means",
    "simplex_etf",
    "extract_features",
    "layer_inputs",
    "collapse_metrics",
    "CollapseCallback",
    "terminal_phase",
    "MeanGeometry",
    "mean_geometry",
    "layerwise_metrics",
    "UFMResult",
    "ufm",
    "ufm_mse_closed_form",
    "bn_mlp",
    "minority_collapse",
    "minority_collapse_curve",
    "supcon_loss",
    "SupConLoss",
    "train_supcon",
]

GLOBAL_MEANS = ("class_means", "samples")


# ----------------------------------------------------------------------------------------------
# argument checking
# ----------------------------------------------------------------------------------------------
def _as_tensor(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, Tensor):
        return x
    raise TypeError(
        f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}; "
        f"convert it with torch.as_tensor({name})"
    )


def _check_features(features, name: str = "features", allow_empty: bool = False) -> Tensor:
    features = _as_tensor(features, name)
    if features.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (N samples, d features); got shape {tuple(features.shape)}. "
            f"Flatten with {name}.flatten(1) or use extract_features(...)"
        )
    if not features.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {features.dtype}; use {name}.float()")
    if features.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (0 samples)")
    return features


def _check_labels(labels, n: int, n_classes: int, name: str = "labels") -> Tensor:
    labels = _as_tensor(labels, name)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D of length N; got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got {labels.dtype}; use .long()")
    if labels.shape[0] != n:
        raise ValueError(
            f"features and {name} have mismatched lengths ({n} vs {labels.shape[0]}); "
            "pass one label per feature row"
        )
    if n and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"{name} out of range: expected values in [0, {n_classes}) but found min "
            f"{int(labels.min())}, max {int(labels.max())}; pass n_classes=... or remap the labels"
        )
    return labels.long()


def _check_global_mean(global_mean: str) -> str:
    if global_mean not in GLOBAL_MEANS:
        raise ValueError(f"global_mean must be one of {GLOBAL_MEANS}, got {global_mean!r}")
    return global_mean


def _default_dtype(device: torch.device) -> torch.dtype:
    # float64 everywhere except Apple's MPS, which has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _infer_n_classes(labels, weight, n_classes) -> int:
    if n_classes is not None:
        if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, bool):
            raise TypeError(f"n_classes must be an int, got {type(n_classes).__name__}")
        return int(n_classes)
    if weight is not None:
        return int(_as_tensor(weight, "weight").shape[0])
    labels = _as_tensor(labels, "labels")
    if labels.numel() == 0:
        raise ValueError("labels is empty; cannot infer n_classes")
    return int(labels.max()) + 1


# ----------------------------------------------------------------------------------------------
# the metrics
# ----------------------------------------------------------------------------------------------
@dataclass
class CollapseMetrics:
    """Neural-collapse metrics (Papyan, Han & Donoho 2020, arXiv:2008.08186); all -> 0 at collapse.

    Fields (conventions in the module docstring; ``M`` rows are centred class means):

    * ``nc1`` -- NC1, ``Tr(Sigma_W Sigma_B^+)/C`` (within-class variability relative to the
      between-class spread; Sigma_W over all N samples, Sigma_B over classes).
    * ``equinorm_means`` -- NC2, std/mean of ``||mu_c - mu_G||`` over classes (population std).
    * ``equinorm_weights`` -- NC2, std/mean of ``||w_c||``; None without ``weight``.
    * ``equiangularity`` -- NC2, mean over c != c' of ``|cos(mu_c - mu_G, mu_c' - mu_G) + 1/(C-1)|``.
    * ``equiangularity_weights`` -- the same for the rows of W; None without ``weight``.
    * ``etf_error`` -- NC2, ``|| G/||G||_F - (I - 11^T/C)/sqrt(C-1) ||_F`` with ``G = M M^T``
      (C x C Gram of the centred class means); 0 iff the means form a simplex ETF up to scale.
    * ``self_duality`` -- NC3, ``|| W/||W||_F - M/||M||_F ||_F^2`` (W not centred, as in the paper);
      None without ``weight``.
    * ``ncc_mismatch`` -- NC4, fraction of samples whose classifier prediction differs from the
      nearest class mean (Euclidean); None without ``weight`` or ``predictions``.
    * ``cdnv`` -- class-distance normalised variance (Galanti, Gyorgy & Hutter 2022,
      arXiv:2112.15121), mean over c != c' of ``(Var_c + Var_c') / (2 ||mu_c - mu_c'||^2)`` with
      ``Var_c = (1/n_c) sum_{y_i=c} ||h_i - mu_c||^2``.
    * ``tr_within``, ``tr_between`` -- ``Tr(Sigma_W)`` and ``Tr(Sigma_B)`` (scale of the two).
    * ``n_samples``, ``n_classes``, ``global_mean`` -- what the numbers were computed on.

    Degenerate cases: if all class means coincide (Sigma_B = 0) the ratios are undefined and
    ``nc1``, ``equinorm_means``, ``equiangularity``, ``etf_error``, ``cdnv`` are ``nan``; features
    with inf/NaN (a diverged run) give ``nan`` metrics instead of an error, so a training callback
    never crashes the run it observes.
    """

    nc1: float
    equinorm_means: float
    equiangularity: float
    etf_error: float
    cdnv: float
    tr_within: float
    tr_between: float
    equinorm_weights: float | None = None
    equiangularity_weights: float | None = None
    self_duality: float | None = None
    ncc_mismatch: float | None = None
    n_samples: int = 0
    n_classes: int = 0
    global_mean: str = "class_means"

    def as_dict(self) -> dict:
        """All fields as a plain ``dict`` (floats/None/ints/str), e.g. for a history row."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def metric_names() -> tuple[str, ...]:
        """Names of the float metrics (the fields a history plot can show)."""
        return (
            "nc1", "equinorm_means", "equinorm_weights", "equiangularity",
            "equiangularity_weights", "etf_error", "self_duality", "ncc_mismatch", "cdnv",
        )


def simplex_etf(n_classes: int, dim: int | None = None, *, seed: int | None = None,
                dtype=torch.float64) -> Tensor:
    """A (C, d) simplex equiangular tight frame: rows of unit norm with pairwise cosine -1/(C-1).

    ``M = sqrt(C/(C-1)) (I - 11^T/C) P^T`` with P a (d, C) matrix with orthonormal columns
    (identity embedding if ``seed`` is None, a random rotation otherwise); needs ``d >= C``
    (``d = C`` by default). This is the limit geometry of NC2 (Papyan et al. 2020, 2008.08186).
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    dim = n_classes if dim is None else int(dim)
    if dim < n_classes:
        raise ValueError(f"dim must be >= n_classes ({n_classes}) for this embedding, got {dim}")
    centred = torch.eye(n_classes, dtype=dtype) - 1.0 / n_classes
    centred = centred * math.sqrt(n_classes / (n_classes - 1))
    if seed is None:
        basis = torch.eye(dim, n_classes, dtype=dtype)
    else:
        gen = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(torch.randn(dim, n_classes, generator=gen, dtype=dtype))
    return centred @ basis.T


class CollapseAccumulator:
    """Two-pass streaming neural-collapse metrics with O(C d) memory (O(d^2) optional).

    Pass 1 (``update_means``) accumulates per-class counts and feature sums; ``end_first_pass``
    forms the class means, the global mean and a thin SVD ``M = U S V^T`` of the centred means.
    Pass 2 (``update_residuals``) accumulates, per batch, the projected residual energy
    ``sum_i ||(h_i - mu_{y_i}) V S^{-1}||^2 = ||R M^+||_F^2`` (so that
    ``NC1 = Tr(Sigma_W Sigma_B^+)/C = ||R M^+||_F^2 / N``, see the module docstring), the per-class
    residual energies ``sum_{y_i=c} ||h_i - mu_c||^2`` (CDNV, ``Tr Sigma_W``) and the NC4 mismatch
    count. ``compute()`` returns the same :class:`CollapseMetrics` as :func:`nc_metrics`.

    Every statistic is a plain sum, so data-parallel ranks can combine them: call
    ``reduce_(torch.distributed.all_reduce)`` after each pass (or ``merge`` another accumulator
    that saw other data in the same pass). ``within_covariance=True`` also keeps the d x d
    ``sum_i r_i r_i^T`` (``within_cov()`` returns Sigma_W) for spectra; NC1 never needs it.

    Papyan, Han & Donoho 2020 (2008.08186); CDNV from Galanti et al. 2022 (2112.15121).
    """

    def __init__(self, n_classes: int, *, weight=None, bias=None,
                 global_mean: str = "class_means", dtype: torch.dtype | None = None,
                 device=None, rtol: float | None = None, within_covariance: bool = False):
        if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, bool):
            raise TypeError(f"n_classes must be an int, got {type(n_classes).__name__}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 (collapse compares classes), got {n_classes}")
        self.n_classes = int(n_classes)
        self.global_mean = _check_global_mean(global_mean)
        self.device = None if device is None else torch.device(device)
        self.dtype = dtype
        self.rtol = rtol
        self.within_covariance = bool(within_covariance)
        self.weight = None if weight is None else _check_features(weight, "weight").detach()
        if self.weight is not None and self.weight.shape[0] != self.n_classes:
            raise ValueError(
                f"weight has {self.weight.shape[0]} rows but n_classes={self.n_classes}; "
                "pass the (C, d) weight of the last nn.Linear"
            )
        self.bias = None if bias is None else _as_tensor(bias, "bias").detach()
        if self.bias is not None and tuple(self.bias.shape) != (self.n_classes,):
            raise ValueError(f"bias must have shape ({self.n_classes},), got "
                             f"{tuple(self.bias.shape)}")
        if self.bias is not None and self.weight is None:
            raise ValueError("bias given without weight; pass weight=... as well")
        self.dim: int | None = None
        self.counts: Tensor | None = None
        self.sums: Tensor | None = None
        self._pass = 1
        self._buffers: dict[str, Tensor] = {}
        # filled by end_first_pass
        self.means = self.global_mean_vector = self.centred = None
        self._basis = self._scales = self._left = None

    # -- helpers ---------------------------------------------------------------------------
    def _setup(self, features: Tensor) -> None:
        if self.device is None:
            self.device = features.device
        if self.dtype is None:
            self.dtype = _default_dtype(self.device)
        d = features.shape[1]
        if self.weight is not None and self.weight.shape[1] != d:
            raise ValueError(f"weight has {self.weight.shape[1]} columns but features have d={d}")
        self.dim = d
        # precision of pass 2's O(B d C) products: the features' own (see update_residuals)
        full = features.dtype == torch.float64 and self.dtype == torch.float64
        self.work_dtype = torch.float64 if full else torch.float32
        self.counts = torch.zeros(self.n_classes, dtype=torch.int64, device=self.device)
        self.sums = torch.zeros(self.n_classes, d, dtype=self.dtype, device=self.device)

    def _prepare(self, features, labels) -> tuple[Tensor, Tensor]:
        # empty batches are no-ops (a rank may hold no sample of a shard)
        features = _check_features(features, allow_empty=True)
        if self.dim is None:
            self._setup(features)
        elif features.shape[1] != self.dim:
            raise ValueError(f"features have d={features.shape[1]} but earlier batches had "
                             f"d={self.dim}")
        labels = _check_labels(labels, features.shape[0], self.n_classes)
        # as given (float32 from a network): pass 1 sums in ``dtype``, pass 2 works in work_dtype
        return features.detach().to(self.device), labels.to(self.device)

    def statistics(self) -> dict[str, Tensor]:
        """The sum-able statistics of the current pass (what ranks must all-reduce)."""
        if self._pass == 1:
            return {"counts": self.counts, "sums": self.sums}
        stats = {"counts2": self.counts2, "proj_energy": self.proj_energy,
                 "class_energy": self.class_energy, "mismatch": self.mismatch,
                 "n_predicted": self.n_predicted}
        if self.within_covariance:
            stats["scatter"] = self.scatter
        return stats

    def reduce_(self, op: Callable[[Tensor], object]) -> CollapseAccumulator:
        """Apply an in-place reduction (e.g. ``torch.distributed.all_reduce``) to every statistic
        of the current pass; call it on every rank after each pass."""
        if self.dim is None:
            raise RuntimeError("nothing accumulated yet; call update_means(...) first")
        for tensor in self.statistics().values():
            op(tensor)
        return self

    def merge(self, other: CollapseAccumulator) -> CollapseAccumulator:
        """Add the statistics of ``other`` (same pass, same classes, other samples) into self."""
        if not isinstance(other, CollapseAccumulator):
            raise TypeError(f"other must be a CollapseAccumulator, got {type(other).__name__}")
        if other._pass != self._pass or other.n_classes != self.n_classes:
            raise ValueError("can only merge accumulators in the same pass with the same n_classes")
        if other.dim is None:
            return self
        if self.dim is None:
            self.device, self.dtype = other.device, other.dtype
            self._setup(other.sums)
            self.work_dtype = other.work_dtype
        mine, theirs = self.statistics(), other.statistics()
        for key, tensor in mine.items():
            tensor += theirs[key].to(tensor.device)
        return self

    # -- pass 1 ----------------------------------------------------------------------------
    def update_means(self, features, labels) -> None:
        """Pass 1: add a batch of (features (B, d), labels (B,)) to the class sums and counts."""
        if self._pass != 1:
            raise RuntimeError("the first pass has ended; use update_residuals(...)")
        features, labels = self._prepare(features, labels)
        self.counts += torch.bincount(labels, minlength=self.n_classes)
        if features.dtype != self.dtype:
            converted = self._buffer("converted", *features.shape, self.dtype)
            features = converted.copy_(features)
        self.sums.index_add_(0, labels, features)

    def end_first_pass(self) -> None:
        """Form class means, the global mean and the SVD of the centred means (after pass 1)."""
        if self._pass != 1:
            return
        if self.dim is None:
            raise RuntimeError("no data seen; call update_means(...) on every batch first")
        empty = torch.nonzero(self.counts == 0).flatten().tolist()
        if empty:
            raise ValueError(
                f"class(es) {empty} have no samples; every class in 0..{self.n_classes - 1} needs "
                "at least one sample (pass n_classes matching the data, or remap the labels)"
            )
        counts = self.counts.to(self.dtype)
        self.means = self.sums / counts[:, None]
        if self.global_mean == "class_means":
            self.global_mean_vector = self.means.mean(0)
        else:
            self.global_mean_vector = self.sums.sum(0) / counts.sum()
        self.centred = self.means - self.global_mean_vector
        self.finite = bool(torch.isfinite(self.centred).all())
        if not self.finite:  # diverged training: report NaN metrics instead of failing
            self.centred = torch.nan_to_num(self.centred, nan=0.0, posinf=0.0, neginf=0.0)
        u, s, vh = torch.linalg.svd(self.centred, full_matrices=False)
        rtol = self.rtol
        if rtol is None:
            rtol = max(self.n_classes, self.dim) * torch.finfo(self.dtype).eps
        # Centring leaves rounding noise of size ~eps * |mu_c| (not eps * s_max): features far
        # from the origin need the cut relative to the uncentred means, or a noise direction
        # survives and NC1 explodes.
        means = self.means if self.finite else torch.nan_to_num(self.means, 0.0, 0.0, 0.0)
        scale = torch.maximum(s[0], torch.linalg.matrix_norm(means))  # Frobenius >= spectral
        keep = s > rtol * scale if s[0] > 0 else torch.zeros_like(s, dtype=torch.bool)
        self._left, self._scales, self._basis = u[:, keep], s[keep], vh[keep].T
        # Pass 2 works in self.work_dtype against the class means rounded to it, mu^ (see
        # update_residuals); compute() removes the rounding delta_c = mu_c - mu^_c exactly.
        work = self.work_dtype
        means = self.means.to(work)
        rounded = means.to(self.dtype)  # mu^, held in dtype
        self._rounding = self.means - rounded
        # V S^-1 = (M^+)^T U: ||R M^+|| = ||R V S^-1||
        whitened = self._whitened = self._basis / self._scales
        # NCC: argmin_c ||h - mu_c||^2 = argmax_c 2 (h - mu_G) . M_c - ||M_c||^2, and
        # (h - mu_G) . M_c = (r^ V S^-1 + (mu^_y - mu_G) V S^-1) S^2 U^T with r^ = h - mu^_y
        to_scores = 2 * self._left * self._scales**2  # (C, r)
        offsets = (rounded - self.global_mean_vector) @ whitened @ to_scores.T  # (C, C)
        self._work = {"means": means, "rank": whitened.shape[1],
                      "project": _pad_columns(whitened).to(work),
                      "to_scores": to_scores.to(work),
                      "offsets": (offsets - (self.centred**2).sum(1)).to(work)}
        if self.weight is not None:
            # the classifier's logits in residual form, h W^T + b = r^ W^T + (mu^_y W^T + b), so
            # that one product r^ [V S^-1 | W^T] serves NC1 and NC4 (one pass over the residuals)
            weight = self.weight.to(self.device, self.dtype)
            logit_offsets = rounded @ weight.T
            if self.bias is not None:
                logit_offsets = logit_offsets + self.bias.to(self.device, self.dtype)
            both = torch.cat([whitened, weight.T], dim=1)
            self._work["project_with_logits"] = _pad_columns(both).to(work)
            self._work["logit_offsets"] = logit_offsets.to(work)
        self._pass = 2
        self.counts2 = torch.zeros_like(self.counts)
        self.proj_energy = torch.zeros((), dtype=self.dtype, device=self.device)
        self.class_energy = torch.zeros(self.n_classes, dtype=self.dtype, device=self.device)
        self.mismatch = torch.zeros((), dtype=torch.int64, device=self.device)
        self.n_predicted = torch.zeros((), dtype=torch.int64, device=self.device)
        if self.within_covariance:
            self.scatter = torch.zeros(self.dim, self.dim, dtype=self.dtype, device=self.device)

    # -- pass 2 ----------------------------------------------------------------------------
    def update_residuals(self, features, labels, predictions=None) -> None:
        """Pass 2: the same samples again (any batching/order). ``predictions`` (B,) are the
        classifier's labels for NC4; if omitted they are ``argmax(h W^T + b)`` when ``weight`` was
        given (in ``work_dtype``, the features' precision, as the network computes them; from the
        residuals as ``r^ W^T + (mu^_y W^T + b)``, which shares one product with NC1), otherwise
        NC4 is skipped.

        Precision: the O(B d C) products run in ``work_dtype``, the features' own precision
        (float32 features from a network: float32, twice as fast as float64; float64 features:
        float64; set from the first batch), and every sum over samples is accumulated in
        ``dtype``. Residuals are formed *before* the product, as ``h - mu^_y`` with ``mu^`` the
        class means rounded to that precision (a difference of two nearby float32 numbers is
        exact, so collapsed features lose nothing to cancellation), and ``compute()`` removes
        the rounding exactly: since the residuals of a class sum to zero,
        ``sum ||(h - mu^_y) A||^2 = sum ||(h - mu_y) A||^2 + n_c ||(mu_c - mu^_c) A||^2``.
        """
        if self._pass == 1:
            self.end_first_pass()
        raw, labels = self._prepare(features, labels)
        if predictions is not None:
            predictions = _check_labels(predictions, raw.shape[0], self.n_classes,
                                        "predictions").to(self.device)
        self.counts2 += torch.bincount(labels, minlength=self.n_classes)
        if self.within_covariance:
            exact = raw.to(self.dtype) - self.means.index_select(0, labels)
            self.scatter += exact.T @ exact
        work, b, r = self._work, raw.shape[0], self._work["rank"]
        residuals = torch.index_select(work["means"], 0, labels,
                                       out=self._buffer("residuals", b, self.dim, self.work_dtype))
        torch.sub(raw.to(self.work_dtype), residuals, out=residuals)
        # per-sample energies in work_dtype (d or r terms each), summed over samples in dtype
        self.class_energy.index_add_(
            0, labels, (torch.linalg.vector_norm(residuals, dim=1) ** 2).to(self.dtype))
        if not r:  # all class means coincide: NC1 and NC4 are undefined
            return
        with_logits = predictions is None and self.weight is not None
        # the only O(B d C) product: R [V S^-1 | W^T] (just R V S^-1 without a classifier)
        project = work["project_with_logits"] if with_logits else work["project"]
        out = torch.mm(residuals, project, out=self._buffer("out", b, project.shape[1],
                                                            self.work_dtype))
        if with_logits:
            # h W^T + b in residual form (end_first_pass), in the precision of the features
            offsets = torch.index_select(work["logit_offsets"], 0, labels,
                                         out=self._buffer("gathered", b, self.n_classes,
                                                          self.work_dtype))
            logits = offsets.add_(out[:, r:r + self.n_classes])
            predictions = _argmax_rows(logits)
        proj = out[:, :r]
        self.proj_energy += (torch.linalg.vector_norm(proj, dim=1).to(self.dtype) ** 2).sum()
        if predictions is not None:
            scores = torch.index_select(work["offsets"], 0, labels,
                                        out=self._buffer("scores", b, self.n_classes,
                                                         self.work_dtype))
            scores.addmm_(proj, work["to_scores"].T)
            self.mismatch += (_argmax_rows(scores) != predictions).sum()
            self.n_predicted += predictions.shape[0]

    def _buffer(self, name: str, rows: int, cols: int, dtype: torch.dtype) -> Tensor:
        """A reusable (rows, cols) work buffer (grown when a larger batch arrives): a fresh
        multi-MB tensor per batch costs page faults, measured at ~1/4 of nc_metrics' time at
        N=50,000, d=512, C=100."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols or buf.dtype != dtype:
            buf = torch.empty(rows, cols, dtype=dtype, device=self.device)
            self._buffers[name] = buf
        return buf[:rows]

    # -- results ---------------------------------------------------------------------------
    def within_cov(self) -> Tensor:
        """Sigma_W = (1/N) sum_i r_i r_i^T (needs ``within_covariance=True`` and pass 2)."""
        if not self.within_covariance or self._pass != 2:
            raise RuntimeError("construct with within_covariance=True and run both passes")
        return self.scatter / self.counts2.sum()

    def compute(self) -> CollapseMetrics:
        """The metrics from the accumulated statistics (after both passes)."""
        if self._pass != 2:
            raise RuntimeError("call update_residuals(...) on every batch (second pass) first")
        if not torch.equal(self.counts2, self.counts):
            raise RuntimeError(
                "the second pass saw different class counts than the first "
                f"({self.counts2.tolist()} vs {self.counts.tolist()}); feed the same samples twice"
            )
        return _metrics_from_stats(self)


def _pad_columns(matrix: Tensor) -> Tensor:
    """Zero columns up to a multiple of 8: BLAS kernels are ~15 % faster on such widths (the
    rank C - 1 is odd for the usual C); zero projections change no sum."""
    return F.pad(matrix, (0, -matrix.shape[1] % 8))


def _argmax_rows(scores: Tensor) -> Tensor:
    """``scores.argmax(1)``; on CPU through NumPy, whose SIMD argmax is ~4x faster than torch's
    row-wise one for (batch, classes) score matrices (NC4 takes two per batch)."""
    if scores.device.type == "cpu":
        return torch.from_numpy(np.argmax(scores.numpy(), axis=1))
    return scores.argmax(1)


def _offdiag(matrix: Tensor) -> Tensor:
    c = matrix.shape[0]
    return matrix[~torch.eye(c, dtype=torch.bool, device=matrix.device)]


def _equinorm(vectors: Tensor) -> float:
    norms = vectors.norm(dim=1)
    return float(norms.std(unbiased=False) / norms.mean())


def _equiangularity(vectors: Tensor) -> float:
    c = vectors.shape[0]
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    return float((_offdiag(unit @ unit.T) + 1.0 / (c - 1)).abs().mean())


def _metrics_from_stats(acc: CollapseAccumulator) -> CollapseMetrics:
    c = acc.n_classes
    n = int(acc.counts.sum())
    centred = acc.centred
    counts = acc.counts.to(acc.dtype)
    degenerate = acc._basis.shape[1] == 0 or not acc.finite
    nan = float("nan")
    # remove the rounding of the class means used in pass 2 (update_residuals docstring)
    delta = acc._rounding
    class_energy = acc.class_energy - counts * (delta**2).sum(1)
    proj_energy = acc.proj_energy - (counts * ((delta @ acc._whitened) ** 2).sum(1)).sum()
    nc1 = nan if degenerate else float(proj_energy / n)
    gram = centred @ centred.T
    target = (torch.eye(c, dtype=acc.dtype, device=acc.device) - 1.0 / c) / math.sqrt(c - 1)
    etf = nan if degenerate else float(torch.linalg.norm(gram / torch.linalg.norm(gram) - target))
    variances = class_energy / counts
    dist_sq = torch.cdist(acc.means, acc.means, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    pair_var = (variances[:, None] + variances[None, :]) / 2
    cdnv = nan if degenerate else float(_offdiag(pair_var / dist_sq).mean())
    metrics = CollapseMetrics(
        nc1=nc1,
        equinorm_means=nan if degenerate else _equinorm(centred),
        equiangularity=nan if degenerate else _equiangularity(centred),
        etf_error=etf,
        cdnv=cdnv,
        tr_within=float(class_energy.sum() / n),
        tr_between=float((centred**2).sum() / c),
        n_samples=n,
        n_classes=c,
        global_mean=acc.global_mean,
    )
    if not acc.finite:
        metrics.equinorm_means = metrics.tr_within = metrics.tr_between = nan
    if acc.weight is not None:
        w = acc.weight.to(acc.device, acc.dtype)
        metrics.equinorm_weights = _equinorm(w)
        metrics.equiangularity_weights = _equiangularity(w)
        if not degenerate:
            diff = w / torch.linalg.norm(w) - centred / torch.linalg.norm(centred)
            metrics.self_duality = float((diff**2).sum())
    if int(acc.n_predicted) > 0 and acc.finite:
        metrics.ncc_mismatch = float(acc.mismatch) / int(acc.n_predicted)
    return metrics


def nc_metrics(features, labels, *, weight=None, bias=None, predictions=None,
               global_mean: str = "class_means", n_classes: int | None = None,
               chunk_size: int = 1024, dtype: torch.dtype | None = None,
               rtol: float | None = None) -> CollapseMetrics:
    """Neural-collapse metrics NC1-NC4 and CDNV of penultimate ``features`` (N, d).

    Papyan, Han & Donoho 2020 (arXiv:2008.08186) define, with the conventions of the module
    docstring (Sigma_W averaged over all N samples, Sigma_B over the C classes, global mean the
    mean of class means by default or the sample mean with ``global_mean="samples"``):

    * NC1 = Tr(Sigma_W Sigma_B^+)/C, computed exactly as ||R M^+||_F^2 / N (no d x d matrix);
    * NC2 = equinorm (std/mean of norms), equiangularity (|cos + 1/(C-1)|) and the distance of the
      normalised Gram of the centred means to the simplex ETF;
    * NC3 = ||W/||W||_F - M/||M||_F||_F^2 (needs ``weight``);
    * NC4 = fraction of samples where the classifier disagrees with the nearest class mean (needs
      ``weight`` [and ``bias``] or ``predictions``);
    * CDNV (Galanti et al. 2022, arXiv:2112.15121).

    Computation streams over row chunks of ``chunk_size`` through :class:`CollapseAccumulator`
    in ``dtype`` (float64 by default, float32 on MPS); cost O(N d C), memory O(C d + chunk d).
    ``n_classes`` defaults to ``weight.shape[0]`` or ``labels.max() + 1``; every class must occur.
    Returns a :class:`CollapseMetrics` (fields needing W or predictions are None without them).
    """
    features = _check_features(features)
    c = _infer_n_classes(labels, weight, n_classes)
    labels = _check_labels(labels, features.shape[0], c)
    if predictions is not None:
        predictions = _check_labels(predictions, features.shape[0], c, "predictions")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    acc = CollapseAccumulator(c, weight=weight, bias=bias, global_mean=global_mean, dtype=dtype,
                              device=features.device, rtol=rtol)
    starts = range(0, features.shape[0], chunk_size)
    for s in starts:
        acc.update_means(features[s:s + chunk_size], labels[s:s + chunk_size])
    for s in starts:
        pred = None if predictions is None else predictions[s:s + chunk_size]
        acc.update_residuals(features[s:s + chunk_size], labels[s:s + chunk_size], pred)
    return acc.compute()


def class_means(features, labels, *, n_classes: int | None = None,
                global_mean: str = "class_means") -> tuple[Tensor, Tensor, Tensor]:
    """Class means (C, d), global mean (d,) and counts (C,) of ``features`` (module conventions).

    ``global_mean="class_means"`` averages the class means, ``"samples"`` averages the samples
    (Papyan et al. 2020, arXiv:2008.08186). Means are in the features' dtype.
    """
    features = _check_features(features)
    c = _infer_n_classes(labels, None, n_classes)
    labels = _check_labels(labels, features.shape[0], c).to(features.device)
    _check_global_mean(global_mean)
    counts = torch.bincount(labels, minlength=c)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"class(es) {empty} have no samples; remap labels or pass n_classes")
    sums = torch.zeros(c, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    means = sums / counts[:, None].to(features.dtype)
    g = means.mean(0) if global_mean == "class_means" else sums.sum(0) / counts.sum()
    return means, g, counts


# ----------------------------------------------------------------------------------------------
# features from models
# ----------------------------------------------------------------------------------------------
def _resolve_layer(model: nn.Module, layer) -> nn.Module:
    if layer is None:
        head = getattr(model, "head", None)
        if isinstance(head, nn.Linear):
            return head
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("model has no nn.Linear; pass layer=<module or name> explicitly")
        return linears[-1]
    if isinstance(layer, str):
        named = dict(model.named_modules())
        if layer not in named:
            raise ValueError(f"layer {layer!r} not found; valid names: {list(named)[:20]}...")
        return named[layer]
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("layer is not a submodule of model")
        return layer
    raise TypeError(f"layer must be None, a module name or an nn.Module, got {type(layer).__name__}")


def _model_device(model: nn.Module, device) -> torch.device:
    from toolkit.utils import model_device

    return torch.device(device) if device is not None else model_device(model)


def _batches(data, batch_size, device):
    from toolkit import utils

    return utils.iterate_batches(data, batch_size=batch_size, device=device)


class _Capture:
    """Forward pre-hooks that store (a flattened copy of) the inputs of some modules."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.store: dict[str, Tensor] = {}
        self.handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(module, inputs):
            self.store[name] = inputs[0].detach().flatten(1)
        return hook

    def pop(self, name: str) -> Tensor:
        if name not in self.store:
            raise ValueError(f"layer {name!r} was not called during model(x); pick a module "
                             "that the forward pass uses")
        return self.store.pop(name)

    def close(self):
        for h in self.handles:
            h.remove()


class _EvalMode:
    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()
        return self

    def __exit__(self, *exc):
        self.model.train(self.was_training)


@torch.no_grad()
def extract_features(model: nn.Module, data, *, layer=None, device=None,
                     batch_size: int | None = None, progress: bool = False
                     ) -> tuple[Tensor, Tensor]:
    """Features at the input of ``layer`` (default: the last ``nn.Linear``, i.e. the penultimate
    features ``h`` of Papyan et al. 2020, arXiv:2008.08186) for every sample of ``data``.

    ``data``: (x, y) tuple, Dataset or DataLoader; processed batch by batch (``batch_size`` None =
    the loader's batches / one batch) with a forward pre-hook, model in eval mode (restored after).
    ``layer``: None, a name from ``model.named_modules()`` or a submodule. Returns
    (features (N, d) flattened, labels (N,)) on the model's device.
    """
    device = _model_device(model, device)
    target = _resolve_layer(model, layer)
    cap = _Capture({"h": target})
    feats, labels = [], []
    try:
        with _EvalMode(model):
            for x, y in tqdm(_batches(data, batch_size, device), disable=not progress,
                             desc="features"):
                model(x)
                feats.append(cap.pop("h"))
                labels.append(y)
    finally:
        cap.close()
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def layer_inputs(model: nn.Module, data, *, layers=None, include_output: bool = True,
                 device=None, batch_size: int | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """Inputs of several layers in one streaming pass (default: every ``nn.Linear``, in order),
    plus the model output under the key ``"output"``; for per-layer collapse (Dang et al. 2023,
    arXiv:2301.00437). Returns ({name: (N, d_l)}, labels)."""
    device = _model_device(model, device)
    if layers is None:
        modules = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    else:
        modules = {(n if isinstance(n, str) else f"layer{i}"): _resolve_layer(model, n)
                   for i, n in enumerate(layers)}
    if not modules:
        raise ValueError("no layers to capture; pass layers=[...]")
    cap = _Capture(modules)
    out: dict[str, list] = {k: [] for k in modules}
    if include_output:
        out["output"] = []
    labels = []
    try:
        with _EvalMode(model):
            for x, y in _batches(data, batch_size, device):
                o = model(x)
                for k in modules:
                    out[k].append(cap.pop(k))
                if include_output:
                    out["output"].append(o.detach().flatten(1))
                labels.append(y)
    finally:
        cap.close()
    return {k: torch.cat(v) for k, v in out.items()}, torch.cat(labels)


@torch.no_grad()
def collapse_metrics(model: nn.Module, data, *, layer=None, n_classes: int | None = None,
                     global_mean: str = "class_means", batch_size: int | None = None,
                     device=None, progress: bool = False,
                     distributed: bool | None = None) -> CollapseMetrics:
    """NC1-NC4 of a model on ``data`` in two streaming passes (never stores the features).

    Features are the inputs of ``layer`` (default the last ``nn.Linear``, whose weight/bias give
    NC2-weights and NC3); NC4 uses the model's own predictions ``argmax model(x)`` when the output
    has C columns. Model in eval mode during the passes (restored after). Equal to
    ``nc_metrics(*extract_features(model, data), weight=..., bias=...)``
    (Papyan, Han & Donoho 2020, arXiv:2008.08186).

    Under torchrun (``distributed=None`` detects it) each rank streams its contiguous shard of
    the samples and the accumulator's sums are all-reduced after each pass, so every rank returns
    the metrics of the whole data set (needs at least one sample per rank).
    """
    return _streaming_accumulator(model, data, layer=layer, n_classes=n_classes,
                                  global_mean=global_mean, batch_size=batch_size, device=device,
                                  progress=progress, distributed=distributed).compute()


def _streaming_accumulator(model, data, *, layer, n_classes, global_mean, batch_size, device,
                           progress, distributed=None) -> CollapseAccumulator:
    from toolkit import distributed as dist_utils
    from toolkit.utils import as_tensors

    sharded = dist_utils.is_distributed() if distributed is None else distributed
    if sharded:
        x_all, y_all = as_tensors(data)
        part = dist_utils.shard_range(len(x_all))
        data = (x_all[part.start:part.stop], y_all[part.start:part.stop])
        progress = progress and dist_utils.is_main()
    device = _model_device(model, device)
    target = _resolve_layer(model, layer)
    linear = isinstance(target, nn.Linear)
    if n_classes is None:
        if not linear:
            raise ValueError("n_classes is required when layer is not an nn.Linear")
        n_classes = target.out_features
    weight = bias = None
    if linear and target.out_features == n_classes:
        weight, bias = _linear_weight(target), _linear_bias(target)
    acc = CollapseAccumulator(n_classes, weight=weight, bias=bias, global_mean=global_mean,
                              device=device)
    cap = _Capture({"h": target})
    try:
        with _EvalMode(model):
            for x, y in tqdm(_batches(data, batch_size, device), disable=not progress,
                             desc="NC pass 1"):
                model(x)
                acc.update_means(cap.pop("h"), y)
            if sharded:
                acc.reduce_(dist_utils.all_reduce_sum)
                acc.end_first_pass()
            for x, y in tqdm(_batches(data, batch_size, device), disable=not progress,
                             desc="NC pass 2"):
                out = model(x)
                pred = out.argmax(1) if out.ndim == 2 and out.shape[1] == n_classes else None
                acc.update_residuals(cap.pop("h"), y, pred)
            if sharded:
                acc.reduce_(dist_utils.all_reduce_sum)
    finally:
        cap.close()
    return acc


def _linear_weight(layer: nn.Linear) -> Tensor:
    # NTKLinear (toolkit.models) multiplies by weight_scale in forward: use the effective weight.
    return layer.weight.detach() * getattr(layer, "weight_scale", 1.0)


def _linear_bias(layer: nn.Linear) -> Tensor | None:
    if layer.bias is None:
        return None
    return layer.bias.detach() * getattr(layer, "bias_scale", 1.0)


class CollapseCallback:
    """Training callback for ``toolkit.train.fit``: records NC metrics every ``every`` epochs.

    ``callback(epoch, model, history_rows) -> dict | None`` (the core contract); the dict holds
    ``prefix + name`` for every metric of :class:`CollapseMetrics` (epochs it skips are NaN in
    the history; with ``fit(callback_every=k)`` it is only called every k epochs anyway).
    Metrics are computed by :func:`collapse_metrics` in two streaming passes over ``data``
    (usually the training set, as in Papyan et al. 2020, arXiv:2008.08186).

    With ``snapshot=n`` it also keeps, per recorded epoch, the features of ``n`` fixed samples
    (stratified, chosen with ``seed``), the class means and the head weight in ``self.snapshots``
    (a list of dicts) for the epoch-slider widget. With ``snapshot_path`` the snapshots are saved
    there after every recording and loaded back at construction, so a run resumed from a
    checkpoint (``fit(checkpoint_dir=...)``) keeps its earlier epochs.
    """

    def __init__(self, data, *, every: int = 1, layer=None, batch_size: int | None = None,
                 global_mean: str = "class_means", prefix: str = "", snapshot: int = 0,
                 seed: int = 0, n_classes: int | None = None, snapshot_path=None):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if not isinstance(snapshot, int) or snapshot < 0:
            raise ValueError(f"snapshot must be a non-negative int, got {snapshot!r}")
        self.data, self.every, self.layer = data, every, layer
        self.batch_size, self.global_mean, self.prefix = batch_size, _check_global_mean(
            global_mean), prefix
        self.snapshot, self.seed, self.n_classes = snapshot, seed, n_classes
        self.snapshot_path = None if snapshot_path is None else Path(snapshot_path)
        self.snapshots: list[dict] = []
        if self.snapshot_path is not None and self.snapshot_path.exists():
            self.snapshots = torch.load(self.snapshot_path, map_location="cpu")
        self._snap_data = None

    def _snapshot_data(self):
        if self._snap_data is None:
            from toolkit import utils

            x, y = utils.as_tensors(self.data, device="cpu")
            gen = torch.Generator().manual_seed(self.seed)
            classes = torch.unique(y)
            per = max(1, self.snapshot // len(classes))
            idx = []
            for c in classes:
                members = torch.nonzero(y == c).flatten()
                idx.append(members[torch.randperm(len(members), generator=gen)[:per]])
            idx = torch.cat(idx)
            self._snap_data = (x[idx], y[idx])
        return self._snap_data

    def __call__(self, epoch: int, model: nn.Module, history_rows=None) -> dict | None:
        if epoch % self.every:
            return None
        target = _resolve_layer(model, self.layer)
        with torch.no_grad():
            acc = _streaming_accumulator(model, self.data, layer=target, n_classes=self.n_classes,
                                         global_mean=self.global_mean, batch_size=self.batch_size,
                                         device=None, progress=False)
        metrics = acc.compute()
        row = {self.prefix + k: v for k, v in metrics.as_dict().items()
               if k in CollapseMetrics.metric_names()}
        if self.snapshot:
            x, y = self._snapshot_data()
            feats, labels = extract_features(model, (x, y), layer=target)
            snap = {"epoch": epoch, "features": feats.float().cpu(), "labels": labels.cpu(),
                    "means": acc.means.float().cpu(),
                    "global_mean": acc.global_mean_vector.float().cpu()}
            if acc.weight is not None:
                snap["weight"] = acc.weight.float().cpu()
            # a resumed run records epochs again: keep one snapshot per epoch, in order
            self.snapshots = [s for s in self.snapshots if s["epoch"] < epoch] + [snap]
            if self.snapshot_path is not None:
                from toolkit.utils import atomic_save

                atomic_save(self.snapshots, self.snapshot_path)
        return row


def terminal_phase(history: pd.DataFrame, metric: str = "nc1") -> dict:
    """Summary of the terminal phase of training (Papyan, Han & Donoho 2020, arXiv:2008.08186):
    ``zero_error_epoch`` (first epoch with ``train_acc == 1``, None if never), the ``metric`` at
    the first recorded epoch at or after it (``at_zero_error``), its ``final`` value and the
    ``drop`` factor ``at_zero_error / final`` (NaN when undefined)."""
    if "train_acc" not in history or "epoch" not in history:
        raise ValueError("history needs 'epoch' and 'train_acc' columns (from toolkit.train.fit)")
    zero = history.loc[history["train_acc"] >= 1.0, "epoch"]
    out = {"zero_error_epoch": None if zero.empty else int(zero.min()),
           "at_zero_error": float("nan"), "final": float("nan"), "drop": float("nan")}
    if metric not in history:
        return out
    rows = history[["epoch", metric]].dropna()
    if rows.empty:
        return out
    out["final"] = float(rows[metric].iloc[-1])
    if out["zero_error_epoch"] is not None:
        after = rows[rows["epoch"] >= out["zero_error_epoch"]]
        if not after.empty:
            out["at_zero_error"] = float(after[metric].iloc[0])
            out["drop"] = out["at_zero_error"] / out["final"] if out["final"] > 0 else float("inf")
    return out


# ----------------------------------------------------------------------------------------------
# geometry of class means: ETF vs orthogonal frame
# ----------------------------------------------------------------------------------------------
@dataclass
class MeanGeometry:
    """Geometry of class means: cosines (C, C), norms (C,), counts (C,), and summaries.

    ``center=None`` keeps the raw (uncentred) means -- the right view for bias-free models whose
    optimum is an orthogonal frame (Dang et al. 2023, arXiv:2301.00437; Kini et al. 2023,
    arXiv:2306.07960); ``"class_means"``/``"samples"`` subtract that global mean (ETF view).
    """

    means: Tensor
    cosines: Tensor
    norms: Tensor
    counts: Tensor
    center: str | None

    @property
    def offdiag(self) -> Tensor:
        return _offdiag(self.cosines)

    def as_dict(self) -> dict:
        """Scalar summaries: ``max_abs_cos`` (0 for an orthogonal frame), ``mean_cos``,
        ``std_cos`` (0 for a symmetric frame), ``etf_deviation`` (max |cos + 1/(C-1)|, 0 for an
        ETF), ``norm_ratio`` (max/min norm), ``norm_count_corr`` (Spearman correlation of class
        sizes with mean norms; nan when balanced)."""
        off = self.offdiag
        c = self.cosines.shape[0]
        corr = float("nan")
        if len(torch.unique(self.counts)) > 1:
            from scipy.stats import spearmanr

            corr = float(spearmanr(self.counts.cpu().numpy(), self.norms.cpu().numpy())[0])
        return {
            "max_abs_cos": float(off.abs().max()),
            "mean_cos": float(off.mean()),
            "std_cos": float(off.std(unbiased=False)),
            "etf_deviation": float((off + 1.0 / (c - 1)).abs().max()),
            "norm_ratio": float(self.norms.max() / self.norms.min()),
            "norm_count_corr": corr,
        }


def mean_geometry(features, labels, *, center: str | None = None, normalize: bool = False,
                  n_classes: int | None = None) -> MeanGeometry:
    """Class-mean cosines and norms; ``normalize=True`` first projects features on the sphere
    (as the SupCon loss sees them, Khosla et al. 2020, arXiv:2004.11362). ``center``: None (raw
    means: orthogonal-frame view) or a ``global_mean`` convention (ETF view)."""
    features = _check_features(features)
    if normalize:
        features = F.normalize(features, dim=1)
    gm = "class_means" if center is None else _check_global_mean(center)
    means, g, counts = class_means(features, labels, n_classes=n_classes, global_mean=gm)
    if center is not None:
        means = means - g
    norms = means.norm(dim=1)
    unit = means / norms.clamp_min(torch.finfo(means.dtype).tiny)[:, None]
    return MeanGeometry(means, unit @ unit.T, norms, counts, center)


def layerwise_metrics(features_by_layer, labels, *, global_mean: str = "class_means",
                      n_classes: int | None = None) -> pd.DataFrame:
    """Per-layer collapse table (Dang et al. 2023, arXiv:2301.00437): one row per layer with
    ``nc1``, ``etf_error``, ``equinorm_means`` (centred means) and the orthogonal-frame
    summaries of the raw means (``max_abs_cos``, ``std_cos``, ``norm_ratio``, ``norm_count_corr``).

    ``features_by_layer``: dict {name: (N, d_l)} or a sequence (named ``layer0``...)."""
    if isinstance(features_by_layer, dict):
        items = list(features_by_layer.items())
    elif isinstance(features_by_layer, (list, tuple)):
        items = [(f"layer{i}", f) for i, f in enumerate(features_by_layer)]
    else:
        raise TypeError("features_by_layer must be a dict {name: features} or a list of tensors")
    rows = []
    for depth, (name, feats) in enumerate(items):
        m = nc_metrics(feats, labels, global_mean=global_mean, n_classes=n_classes)
        geo = mean_geometry(feats.double(), labels, n_classes=n_classes).as_dict()
        rows.append({"layer": name, "depth": depth, "nc1": m.nc1, "etf_error": m.etf_error,
                     "equinorm_means": m.equinorm_means, **geo})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# a network that collapses fast enough for a CPU demo
# ----------------------------------------------------------------------------------------------
def bn_mlp(in_dim: int, widths: Sequence[int], n_classes: int, *,
           activation: str = "relu") -> nn.Module:
    """MLP with ``BatchNorm1d`` after every hidden ``nn.Linear`` (Linear -> BN -> activation), with
    ``.features`` and ``.head`` like ``toolkit.models.MLP``.

    Batch normalisation before the last layer plus weight decay make neural collapse appear much
    sooner (Pan & Cao 2023, arXiv:2309.04644): on 300 digits a plain MLP's NC1 plateaus near 0.1
    while this one falls by more than 10x within 300 full-batch epochs.
    """
    from toolkit.models import make_activation

    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1 or in_dim < 1 or n_classes < 2:
        raise ValueError("need in_dim >= 1, at least one positive width and n_classes >= 2")
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip([in_dim, *widths[:-1]], widths):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), make_activation(activation)]
    return _FeaturesHead(nn.Sequential(*layers), nn.Linear(widths[-1], n_classes))


class _FeaturesHead(nn.Module):
    def __init__(self, features: nn.Module, head: nn.Linear):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# ----------------------------------------------------------------------------------------------
# unconstrained features model
# ----------------------------------------------------------------------------------------------
@dataclass
class UFMResult:
    """Solution of :func:`ufm`: free features ``features`` (N, d), labels, the hidden linear
    layers ``layers`` (list of (d, d), empty for depth 1), the classifier ``weight`` (C, d),
    ``bias`` (C,) or None, the optimisation ``history`` and the ``config`` used."""

    features: Tensor
    labels: Tensor
    weight: Tensor
    bias: Tensor | None
    layers: list[Tensor] = field(default_factory=list)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    config: dict = field(default_factory=dict)

    def layer_features(self) -> list[Tensor]:
        """Features entering each layer: ``[H, W_1 H, W_2 W_1 H, ...]``; the last one feeds
        ``weight`` (Dang et al. 2023, arXiv:2301.00437)."""
        out = [self.features]
        for layer in self.layers:
            out.append(out[-1] @ layer.T)
        return out

    def metrics(self, global_mean: str = "class_means") -> CollapseMetrics:
        """NC metrics of the top-layer features with the classifier."""
        return nc_metrics(self.layer_features()[-1], self.labels, weight=self.weight,
                          bias=self.bias, global_mean=global_mean)


def _split_decay(weight_decay) -> tuple[float, float, float]:
    if isinstance(weight_decay, (int, float)):
        return float(weight_decay), float(weight_decay), float(weight_decay)
    if isinstance(weight_decay, (tuple, list)) and len(weight_decay) == 3:
        return tuple(float(v) for v in weight_decay)
    raise TypeError("weight_decay must be a float or a tuple (lambda_W, lambda_H, lambda_b)")


def ufm(class_counts: Sequence[int], dim: int, *, loss: str = "ce", bias: bool = True,
        weight_decay=5e-3, depth: int = 1, optimizer: str = "lbfgs", lr: float = 1.0,
        steps: int = 200, record_every: int = 10, init_scale: float = 1.0, seed: int = 0,
        device=None, dtype: torch.dtype = torch.float64, progress: bool = True) -> UFMResult:
    """Unconstrained-features model (layer-peeled model of Fang et al. 2021, arXiv:2101.12699):
    features are free parameters ``H`` (N, d), one per sample, optimised jointly with the classifier.

    Objective (regularised form; loss averaged over samples)::

        (1/N) sum_i loss(W_L ... W_1 h_i + b, y_i)
          + lam_W/2 sum_l ||W_l||_F^2 + lam_H/2 (1/N) ||H||_F^2 + lam_b/2 ||b||^2

    ``loss="ce"`` (cross-entropy) or ``"mse"`` (``1/2 ||z - e_y||^2`` with one-hot targets).
    ``depth`` counts linear layers (1 = the plain UFM; deeper = the deep linear UFM of Dang et al.
    2023, arXiv:2301.00437, hidden maps d x d). ``weight_decay``: one float or
    ``(lam_W, lam_H, lam_b)``. ``class_counts``: samples per class (balanced or not, see
    ``toolkit.data.class_counts``). ``optimizer``: ``"lbfgs"`` (strong-Wolfe line search, ``record_every``
    iterations per step; converges to ~1e-9 gradient in a few hundred iterations) or ``"gd"``
    (plain full-batch gradient descent with step ``lr``; shows the dynamics).

    Known optima: balanced CE (with or without bias) and balanced MSE with bias -> simplex ETF,
    W aligned with the class means (Papyan et al. 2020; Zhu et al. 2021, arXiv:2105.02375);
    imbalanced CE -> minority collapse as the ratio grows (Fang et al. 2021); bias-free MSE ->
    orthogonal frame whose lengths depend on class size (Dang et al. 2023).
    """
    counts = [int(n) for n in class_counts]
    if len(counts) < 2 or min(counts) < 1:
        raise ValueError(f"class_counts needs >= 2 classes with >= 1 sample each, got {counts}")
    if loss not in ("ce", "mse"):
        raise ValueError(f"loss must be 'ce' or 'mse', got {loss!r}")
    if optimizer not in ("lbfgs", "gd"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'gd', got {optimizer!r}")
    if depth < 1 or dim < 1 or steps < 1 or record_every < 1:
        raise ValueError("depth, dim, steps and record_every must be positive")
    lam_w, lam_h, lam_b = _split_decay(weight_decay)
    c, n = len(counts), sum(counts)
    device = torch.device("cpu") if device is None else torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(c), torch.tensor(counts)).to(device)

    def init(*shape, scale):
        return (torch.randn(*shape, generator=gen, dtype=dtype) * scale).to(device)

    # H = sqrt(N) U: the same problem, but the curvature in U is O(1) like in W (in H it is
    # O(1/N)), which keeps L-BFGS well conditioned for any number of samples.
    root_n = math.sqrt(n)
    u = (init(n, dim, scale=init_scale) / root_n).requires_grad_()
    hidden = [init(dim, dim, scale=init_scale / math.sqrt(dim)).requires_grad_()
              for _ in range(depth - 1)]
    w = init(c, dim, scale=init_scale / math.sqrt(dim)).requires_grad_()
    b = torch.zeros(c, dtype=dtype, device=device, requires_grad=True) if bias else None
    params = [u, *hidden, w] + ([b] if bias else [])
    onehot = F.one_hot(labels, c).to(dtype)

    def objective():
        h = u * root_n
        z = h
        for layer in hidden:
            z = z @ layer.T
        logits = z @ w.T + (b if bias else 0.0)
        if loss == "ce":
            data_term = F.cross_entropy(logits, labels)
        else:
            data_term = 0.5 * ((logits - onehot) ** 2).sum(1).mean()
        reg = 0.5 * lam_w * sum((p**2).sum() for p in [*hidden, w])
        reg = reg + 0.5 * lam_h * (h**2).sum() / n
        if bias:
            reg = reg + 0.5 * lam_b * (b**2).sum()
        return data_term + reg

    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=record_every, max_eval=4 * record_every,
                                history_size=10,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                                tolerance_change=1e-16)
        n_outer = max(1, steps // record_every)
    else:
        opt = torch.optim.SGD(params, lr=lr)
        n_outer = steps

    def closure():
        opt.zero_grad()
        value = objective()
        value.backward()
        return value

    def snapshot(step):
        with torch.no_grad():
            top = u * root_n
            for layer in hidden:
                top = top @ layer.T
            m = nc_metrics(top.detach(), labels, weight=w.detach(),
                           bias=None if b is None else b.detach())
            return {"step": step, "objective": float(objective()), **{
                k: v for k, v in m.as_dict().items() if k in CollapseMetrics.metric_names()}}

    rows = [snapshot(0)]
    for i in tqdm(range(1, n_outer + 1), disable=not progress, desc="UFM"):
        opt.step(closure)
        step = i * record_every if optimizer == "lbfgs" else i
        if optimizer == "lbfgs" or i % record_every == 0 or i == n_outer:
            rows.append(snapshot(step))
    config = dict(class_counts=counts, dim=dim, loss=loss, bias=bias, weight_decay=(lam_w, lam_h,
                  lam_b), depth=depth, optimizer=optimizer, lr=lr, steps=steps, seed=seed)
    return UFMResult((u * root_n).detach(), labels, w.detach(), None if b is None else b.detach(),
                     [layer.detach() for layer in hidden], pd.DataFrame(rows), config)


def ufm_mse_closed_form(class_counts: Sequence[int], weight_decay=5e-3) -> pd.DataFrame:
    """Norms at the optimum of the bias-free MSE UFM (depth 1, d >= C), per class.

    With ``rho_k = n_k/N`` and the objective of :func:`ufm` (``loss="mse"``, ``bias=False``), the
    global minimisers form an orthogonal frame (Dang et al. 2023, arXiv:2301.00437): class means
    ``h_k = b_k q_k`` and classifier rows ``w_k = a_k q_k`` with orthonormal ``q_k``. Per class the
    objective is ``rho/2 (ab-1)^2 + lam_W/2 a^2 + lam_H rho/2 b^2``, whose stationarity gives
    ``ab = 1 - sqrt(lam_W lam_H / rho)`` and ``a^2 lam_W = rho lam_H b^2``, hence::

        ||h_k||^2 = (1 - sqrt(lam_W lam_H / rho_k)) sqrt(lam_W / (rho_k lam_H))
        ||w_k||^2 = (1 - sqrt(lam_W lam_H / rho_k)) sqrt(rho_k lam_H / lam_W)

    (a class with ``rho_k <= lam_W lam_H`` collapses to zero). Minority classes get *longer*
    features and *shorter* classifier rows. Returns columns class, n, feature_norm, weight_norm.
    """
    lam_w, lam_h, _ = _split_decay(weight_decay)
    counts = np.asarray([int(n) for n in class_counts], dtype=float)
    if len(counts) < 2 or counts.min() < 1:
        raise ValueError(f"class_counts needs >= 2 classes with >= 1 sample, got {class_counts}")
    if lam_w <= 0 or lam_h <= 0:
        raise ValueError("the closed form needs positive lambda_W and lambda_H")
    rho = counts / counts.sum()
    product = np.clip(1 - np.sqrt(lam_w * lam_h / rho), 0.0, None)
    return pd.DataFrame({
        "class": np.arange(len(counts)), "n": counts.astype(int),
        "feature_norm": np.sqrt(product * np.sqrt(lam_w / (rho * lam_h))),
        "weight_norm": np.sqrt(product * np.sqrt(rho * lam_h / lam_w)),
    })


def minority_collapse(weight, minority: Sequence[int]) -> dict:
    """How far the minority classifier vectors have merged (Fang et al. 2021, arXiv:2101.12699):
    ``minority_distance`` = mean ||w_k - w_k'|| over minority pairs divided by the mean ||w_c||
    over all classes (-> 0 at collapse; the robust measure), ``minority_cos`` = mean pairwise
    cosine of the minority rows (-> 1 at collapse, -1/(C-1) in a balanced ETF; ill-defined once
    the rows shrink to zero, as they can under weight decay) and ``minority_norm`` = mean minority
    ||w_k|| over the mean ||w_c|| of all classes."""
    w = _check_features(weight, "weight")
    idx = torch.as_tensor(list(minority), dtype=torch.long)
    if len(idx) < 2:
        raise ValueError("minority needs at least two class indices")
    if int(idx.min()) < 0 or int(idx.max()) >= w.shape[0]:
        raise ValueError(f"minority indices must be in [0, {w.shape[0]})")
    wm = w[idx]
    unit = F.normalize(wm, dim=1)
    dist = torch.cdist(wm, wm, compute_mode="donot_use_mm_for_euclid_dist")
    scale = w.norm(dim=1).mean()
    return {"minority_cos": float(_offdiag(unit @ unit.T).mean()),
            "minority_distance": float(_offdiag(dist).mean() / scale),
            "minority_norm": float(wm.norm(dim=1).mean() / scale)}


def minority_collapse_curve(ratios: Iterable[float], *, n_classes: int = 6, n_major: int = 20,
                            n_minority: int | None = None, dim: int | None = None,
                            weight_decay=5e-3, steps: int = 300, seed: int = 0,
                            progress: bool = True, **ufm_kwargs) -> pd.DataFrame:
    """Sweep the imbalance ratio R = n_major/n_minor (>= 1, Fang's convention) of a CE UFM with
    step imbalance (the last ``n_minority`` classes, default half, have ``n_major/R`` samples, see
    ``toolkit.data.class_counts``) and record minority collapse (Fang et al. 2021,
    arXiv:2101.12699): one row per ratio with the class counts, the minority
    cosine/distance of :func:`minority_collapse`, the majority cosine and the final objective."""
    from toolkit.data import class_counts

    n_minority = n_classes // 2 if n_minority is None else n_minority
    dim = n_classes if dim is None else dim
    rows = []
    for ratio in tqdm(list(ratios), disable=not progress, desc="ratios"):
        if ratio < 1:
            raise ValueError(f"ratios are majority/minority sizes (>= 1), got {ratio}")
        counts = class_counts(1.0 / ratio, n_major, n_classes, profile="step",
                              minority_classes=n_minority)
        ufm_kwargs.setdefault("record_every", steps)
        res = ufm(counts, dim, loss="ce", weight_decay=weight_decay, steps=steps, seed=seed,
                  progress=False, **ufm_kwargs)
        minority = list(range(n_classes - n_minority, n_classes))
        majority = list(range(n_classes - n_minority))
        row = {"ratio": float(ratio), "n_major": counts[0], "n_minor": counts[-1],
               **minority_collapse(res.weight, minority),
               "objective": float(res.history["objective"].iloc[-1])}
        if len(majority) >= 2:
            row["majority_cos"] = minority_collapse(res.weight, majority)["minority_cos"]
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# supervised contrastive loss
# ----------------------------------------------------------------------------------------------
def supcon_loss(features: Tensor, labels: Tensor, *, temperature: float = 0.1,
                normalize: bool = True) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, arXiv:2004.11362, the L_out form)::

        L = (1/|A|) sum_{i in A} -1/|P(i)| sum_{p in P(i)}
              log( exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t) )

    with ``z = h/||h||`` (``normalize=True``), P(i) the other samples of i's class and A the
    anchors with |P(i)| >= 1. Kini et al. 2023 (arXiv:2306.07960) prove that with non-negative
    embeddings (a ReLU before the normalisation) its minimisers form an orthogonal frame whatever
    the class sizes, provided every batch holds all classes (full batch does).
    """
    features = _check_features(features)
    labels = _as_tensor(labels, "labels")
    labels = _check_labels(labels, features.shape[0], int(labels.max()) + 1 if len(labels) else 1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = F.normalize(features, dim=1) if normalize else features
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positives.sum(1)
    anchors = n_pos > 0
    if not bool(anchors.any()):
        raise ValueError("no anchor has a positive (every class occurs once); use larger batches")
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)
    return -(pos_log_prob[anchors] / n_pos[anchors]).mean()


class SupConLoss(nn.Module):
    """``SupConLoss(temperature)(embeddings, labels)``: :func:`supcon_loss` as a module, usable as
    ``fit(model, data, loss=SupConLoss())`` when the model outputs embeddings."""

    def __init__(self, temperature: float = 0.1, normalize: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.normalize = temperature, normalize

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(features, labels, temperature=self.temperature,
                           normalize=self.normalize)


def train_supcon(model: nn.Module, data, *, epochs: int = 100, lr: float = 1e-2,
                 optimizer: str = "adam", weight_decay: float = 0.0, momentum: float = 0.9,
                 batch_size: int | None = None, temperature: float = 0.1, device=None,
                 seed: int = 0, callbacks: Sequence[Callable] = (), callback_every: int = 1,
                 progress: bool = True) -> pd.DataFrame:
    """Train an embedding network ``model`` (outputs embeddings, e.g. ending in a ReLU as in Kini
    et al. 2023, arXiv:2306.07960) with :func:`supcon_loss` (Khosla et al. 2020, 2004.11362).

    Full batch by default (every batch holds every class, which Kini et al. show is needed for a
    symmetric geometry). ``optimizer``: "adam" or "sgd". Callbacks follow the core contract
    ``cb(epoch, model, rows) -> dict|None`` (epoch 0 = before training). Returns a DataFrame with
    ``epoch``, ``loss`` (epoch 0: at initialisation in eval mode; later: the mean of the batch
    losses seen during that epoch, before each step) and the callbacks' keys.
    """
    from toolkit import utils

    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    device = _model_device(model, device)
    model.to(device)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    rows: list[dict] = []

    def record(epoch, loss_value):
        row = {"epoch": epoch, "loss": loss_value}
        if epoch % callback_every == 0 or epoch == epochs:
            for cb in callbacks:
                with _EvalMode(model):
                    extra = cb(epoch, model, rows)
                if extra:
                    row.update(extra)
        rows.append(row)

    with torch.no_grad(), _EvalMode(model):
        losses, sizes = [], []
        for x, y in utils.iterate_batches(data, batch_size=batch_size, device=device):
            losses.append(float(supcon_loss(model(x), y, temperature=temperature)))
            sizes.append(len(y))
    record(0, float(np.average(losses, weights=sizes)))
    model.train()
    for epoch in tqdm(range(1, epochs + 1), disable=not progress, desc="SupCon"):
        losses, sizes = [], []
        for x, y in utils.iterate_batches(data, batch_size=batch_size, device=device):
            opt.zero_grad()
            loss = supcon_loss(model(x), y, temperature=temperature)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            sizes.append(len(y))
        record(epoch, float(np.average(losses, weights=sizes)))
        model.train()
    return pd.DataFrame(rows)
