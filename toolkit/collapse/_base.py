"""What every collapse module shares: the global-mean conventions, the (N, d) feature check, the
result dataclass :class:`CollapseMetrics` and the NC2 summaries of a set of vectors.

It sits below ``metrics`` and ``accumulator`` (the accumulator returns a ``CollapseMetrics``, and
``nc_metrics`` streams through the accumulator), so neither imports the other's module for it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .._checks import as_tensor, check_choice, check_positive_int, check_tensor

__all__ = ["GLOBAL_MEANS", "CollapseMetrics"]

GLOBAL_MEANS = ("class_means", "samples")


def check_features(features, name: str = "features", allow_empty: bool = False) -> Tensor:
    """Features are a floating (N samples, d) matrix (flatten with ``.flatten(1)``) of finite
    values: NaN/inf would turn every metric into NaN."""
    features = check_tensor(features, name, ndim=2, floating=True, nonempty=not allow_empty)
    finite = torch.isfinite(features)
    if features.numel() and not bool(finite.all()):
        rows = torch.nonzero(~finite.all(dim=1)).flatten()
        raise ValueError(f"{name} has {int((~finite).sum())} non-finite values (NaN or inf) in "
                         f"{len(rows)} of {features.shape[0]} rows (first: {rows[:5].tolist()}); "
                         "the metrics would all be NaN. They usually come from a diverged model "
                         "(check its training loss and weights) or non-finite inputs; drop those "
                         f"rows ({name}[torch.isfinite({name}).all(1)], with their labels) or fix "
                         "the model first.")
    return features


def check_global_mean(global_mean: str) -> str:
    return check_choice(global_mean, "global_mean", GLOBAL_MEANS)


def default_dtype(device: torch.device) -> torch.dtype:
    # float64 everywhere except Apple's MPS, which has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def infer_n_classes(labels, weight, n_classes) -> int:
    """``n_classes`` if given, else the rows of the classifier ``weight``, else ``labels.max()+1``."""
    if n_classes is not None:
        return check_positive_int(n_classes, "n_classes")
    if weight is not None:
        return int(as_tensor(weight, "weight").shape[0])
    labels = as_tensor(labels, "labels")
    if labels.numel() == 0:
        raise ValueError("labels is empty; cannot infer n_classes, pass n_classes=...")
    return int(labels.max()) + 1


def offdiag(matrix: Tensor) -> Tensor:
    c = matrix.shape[0]
    return matrix[~torch.eye(c, dtype=torch.bool, device=matrix.device)]


def equinorm(vectors: Tensor) -> float:
    norms = vectors.norm(dim=1)
    return float(norms.std(unbiased=False) / norms.mean())


def equiangularity(vectors: Tensor) -> float:
    c = vectors.shape[0]
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    return float((offdiag(unit @ unit.T) + 1.0 / (c - 1)).abs().mean())


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
    ``nc1``, ``equinorm_means``, ``equiangularity``, ``etf_error``, ``cdnv`` are ``nan``. Features
    with inf/NaN (a diverged model, non-finite inputs) raise a ``ValueError`` naming ``features``
    rather than returning NaN metrics (``toolkit.train.fit`` itself stops a run whose loss turns
    non-finite before its callbacks see it).
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


