"""Neural-collapse measurements on features: NC1-NC4 and CDNV (:func:`nc_metrics`), class means,
the simplex ETF, the geometry of class means (ETF versus orthogonal frame), per-layer tables, the
terminal-phase summary of a training history and minority collapse of classifier rows.

Conventions are in the docstring of :mod:`toolkit.collapse`. Analysis only: nothing here plots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_labels
from ._base import CollapseMetrics, check_features, check_global_mean, infer_n_classes, offdiag
from .accumulator import CollapseAccumulator

__all__ = ["CollapseMetrics", "nc_metrics", "class_means", "simplex_etf", "MeanGeometry",
           "mean_geometry", "layerwise_metrics", "terminal_phase", "minority_collapse"]


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
    features = check_features(features)
    c = infer_n_classes(labels, weight, n_classes)
    labels = check_labels(labels, features.shape[0], c)
    if predictions is not None:
        predictions = check_labels(predictions, features.shape[0], c, "predictions")
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
    features = check_features(features)
    c = infer_n_classes(labels, None, n_classes)
    labels = check_labels(labels, features.shape[0], c).to(features.device)
    check_global_mean(global_mean)
    counts = torch.bincount(labels, minlength=c)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"class(es) {empty} have no samples; remap labels or pass n_classes")
    sums = torch.zeros(c, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    means = sums / counts[:, None].to(features.dtype)
    g = means.mean(0) if global_mean == "class_means" else sums.sum(0) / counts.sum()
    return means, g, counts


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
        return offdiag(self.cosines)

    def as_dict(self) -> dict:
        """Scalar summaries: ``max_abs_cos`` (0 for an orthogonal frame), ``mean_cos``,
        ``std_cos`` (0 for a symmetric frame), ``etf_deviation`` (max |cos + 1/(C-1)|, 0 for an
        ETF), ``norm_ratio`` (max/min norm), ``norm_count_corr`` (Spearman correlation of class
        sizes with mean norms; nan when balanced)."""
        off = self.offdiag
        c = self.cosines.shape[0]
        corr = float("nan")
        if len(torch.unique(self.counts)) > 1:
            import warnings

            from scipy.stats import spearmanr

            with warnings.catch_warnings():  # equal norms: the correlation is nan, say nothing
                warnings.simplefilter("ignore", RuntimeWarning)
                warnings.filterwarnings("ignore", message=".*constant.*")
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
    features = check_features(features)
    if normalize:
        features = F.normalize(features, dim=1)
    gm = "class_means" if center is None else check_global_mean(center)
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


def minority_collapse(weight, minority: Sequence[int]) -> dict:
    """How far the minority classifier vectors have merged (Fang et al. 2021, arXiv:2101.12699):
    ``minority_distance`` = mean ||w_k - w_k'|| over minority pairs divided by the mean ||w_c||
    over all classes (-> 0 at collapse; the robust measure), ``minority_cos`` = mean pairwise
    cosine of the minority rows (-> 1 at collapse, -1/(C-1) in a balanced ETF; ill-defined once
    the rows shrink to zero, as they can under weight decay) and ``minority_norm`` = mean minority
    ||w_k|| over the mean ||w_c|| of all classes."""
    w = check_features(weight, "weight")
    idx = torch.as_tensor(list(minority), dtype=torch.long)
    if len(idx) < 2:
        raise ValueError("minority needs at least two class indices")
    if int(idx.min()) < 0 or int(idx.max()) >= w.shape[0]:
        raise ValueError(f"minority indices must be in [0, {w.shape[0]})")
    wm = w[idx]
    unit = F.normalize(wm, dim=1)
    dist = torch.cdist(wm, wm, compute_mode="donot_use_mm_for_euclid_dist")
    scale = w.norm(dim=1).mean()
    return {"minority_cos": float(offdiag(unit @ unit.T).mean()),
            "minority_distance": float(offdiag(dist).mean() / scale),
            "minority_norm": float(wm.norm(dim=1).mean() / scale)}
