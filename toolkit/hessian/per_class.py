"""Per-class Hessians under class imbalance and SAM's sharpness."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from .. import batches as B
from .._checks import check_positive
from ..train import ASAM_ETA, sam_scale
from ..utils import as_tensors, model_device
from ..utils import progress as progress_bar
from ._autodiff import second_order
from .eigen import _lanczos_eigs
from .operator import HessianOperator, Params

__all__ = ["class_subset", "class_hessian", "minority_majority", "Sharpness", "sharpness"]

# --------------------------------------------------------------------------- per-class Hessian


def _labelled(data, device=None):
    """(data as an (x, y) pair or a dict of columns, its integer labels)."""
    if B.is_columns(data):
        if "labels" not in data:
            raise ValueError("class Hessians of a dict of columns need its 'labels' column, got "
                             f"the columns {sorted(data)}.")
        data = B.to_device(dict(data), device)
        y = data["labels"]
    else:
        data = as_tensors(data, device)
        y = data[1]
    if y.dtype.is_floating_point:
        raise TypeError("class Hessians need integer class labels.")
    return data, y


def class_subset(data, cls: int, device=None):
    """The samples of class ``cls``: an (x, y) pair, or a dict of columns (labels in
    ``"labels"``) for dict data."""
    data, y = _labelled(data, device)
    sel = y == int(cls)
    if not bool(sel.any()):
        raise ValueError(f"class {cls} has no samples in data.")
    return B.select(data, sel) if isinstance(data, dict) else (data[0][sel], y[sel])


def class_hessian(model: nn.Module, loss_fn, data, *, classes: Iterable[int] | None = None,
                  tol: float = 1e-3, max_iter: int = 100, batch_size: int | None = None,
                  hvp_method: str = "auto", params: str | Iterable[str] | None = None,
                  seed: int = 0, progress: bool = True) -> pd.DataFrame:
    r"""Extreme eigenvalues of each class's loss Hessian, H_c = ∇² (1/N_c) Σ_{i: y_i = c} ℓ_i.

    Rangwani et al. 2022 (arXiv 2212.13827): with class imbalance, the loss of minority classes
    sits at a saddle — H_c has large negative eigenvalues (λ_min ≪ 0) — while majority classes
    are at minima; sharpness-aware minimisation escapes those saddles. Returns a DataFrame with
    columns ``class``, ``n_samples``, ``lambda_max``, ``lambda_min`` (Lanczos, both ends) and
    ``ratio`` = |λ_min| / λ_max (Li et al. 2018's non-convexity measure).
    ``data``: an (x, y) pair (or dataset) with integer labels, or a dict of columns whose
    ``"labels"`` are the classes.
    """
    data, y = _labelled(data, model_device(model))
    classes = sorted(int(c) for c in torch.unique(y)) if classes is None else list(classes)
    rows = []
    for c in progress_bar(classes, enabled=progress, desc="class Hessians"):
        sub = class_subset(data, c)
        op = HessianOperator(model, loss_fn, sub, batch_size=batch_size, method=hvp_method,
                             params=params, seed=seed)
        v0 = op.random_vector(torch.Generator().manual_seed(seed))
        top = float(_lanczos_eigs(op, 1, "largest", tol, max_iter, v0)[0][0])
        low = float(_lanczos_eigs(op, 1, "smallest", tol, 3 * max_iter, v0)[0][0])
        rows.append({"class": c, "n_samples": B.batch_len(sub), "lambda_max": float(top),
                     "lambda_min": float(low), "ratio": abs(low) / max(abs(top), 1e-30)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- sharpness



def minority_majority(table: pd.DataFrame, column: str = "lambda_min") -> tuple[float, float]:
    """(mean over minority classes, mean over majority classes) of a :func:`class_hessian` column.

    Majority classes are those with the largest ``n_samples``; every smaller class is a minority
    class (Rangwani et al. 2022, arXiv 2212.13827: minority classes sit at saddle points, i.e.
    their class loss has markedly negative ``lambda_min``)."""
    small = table["n_samples"] < table["n_samples"].max()
    if not small.any():
        raise ValueError("all classes have the same size: there is no minority class.")
    return float(table.loc[small, column].mean()), float(table.loc[~small, column].mean())

@dataclass
class Sharpness:
    """Worst-case loss increase in a ρ-ball (first order): ``sharpness`` = ``perturbed_loss`` −
    ``loss``; ``grad_norm`` = ‖T∇L‖; ``epsilon`` is the perturbation (dict)."""

    sharpness: float
    loss: float
    perturbed_loss: float
    grad_norm: float
    rho: float
    epsilon: Params = field(repr=False)


def sharpness(model: nn.Module, loss_fn, data, *, rho: float = 0.05, adaptive: bool = False,
              asam_eta: float = ASAM_ETA, batch_size: int | None = None,
              params: str | Iterable[str] | None = None) -> Sharpness:
    r"""SAM's sharpness: max_{‖T⁻¹ε‖ ≤ ρ} L(θ + ε) − L(θ), at the first-order maximiser.

    Foret et al. 2021 (arXiv 2010.01412): linearising L inside the ball gives
    ε* = ρ T² ∇L / ‖T ∇L‖ with T = I (SAM) or, for ASAM (Kwon et al. 2021, arXiv 2102.11600),
    T = diag(|θ|) + η I (η = ``asam_eta``, :func:`toolkit.train.sam_scale`), which makes the
    measure (nearly, up to η) invariant to the per-neuron rescalings that leave a ReLU network's
    function unchanged, and still perturbs weights that are exactly 0. Returns L(θ + ε*) − L(θ)
    with the parts; the same ε* as :class:`toolkit.train.SAM` uses. Near a stationary point the
    gradient direction is noise and the value is of order ρ²λ_max/2.
    """
    check_positive(rho, "rho")
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, params=params, check=True)
    g, loss = op.gradient()
    theta = op.flatten(op.params)
    t = sam_scale(theta, adaptive, asam_eta)
    gnorm = float((t * g).norm())
    eps = rho * t**2 * g / max(gnorm, 1e-12)
    shifted = op.unflatten(theta + eps)
    total, count = 0.0, 0
    with torch.no_grad(), second_order():
        for batch in op.batches():
            total += float(op._loss(shifted, batch)) * B.batch_len(batch)
            count += B.batch_len(batch)
    if op.sharded:
        total, count = op._reduce(torch.tensor([total, float(count)], dtype=torch.float64)).tolist()
    perturbed = total / count
    return Sharpness(sharpness=perturbed - loss, loss=loss, perturbed_loss=perturbed,
                     grad_norm=gnorm, rho=rho, epsilon=op.unflatten(eps))


