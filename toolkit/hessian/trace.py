"""Stochastic trace estimates: Hutchinson and Hutch++."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._checks import check_choice
from ..utils import progress as progress_bar
from .operator import HessianOperator

__all__ = ["TraceEstimate", "trace", "estimate_trace"]

# ------------------------------------------------------------------------------------- trace


@dataclass
class TraceEstimate:
    """A stochastic trace estimate with its standard error and the products it cost."""

    trace: float
    stderr: float
    n_hvp: int
    samples: np.ndarray
    method: str


def trace(model: nn.Module, loss_fn, data, *, n_samples: int = 100, method: str = "hutchinson",
          seed: int = 0, batch_size: int | None = None, hvp_method: str = "auto",
          params: str | Iterable[str] | None = None, progress: bool = True) -> TraceEstimate:
    r"""Stochastic estimate of tr(H) from ``n_samples`` Hessian-vector products.

    ``"hutchinson"``: tr(H) = E[zᵀHz] for Rademacher z (Hutchinson 1989; used for networks by
    Yao et al. 2020, arXiv 1912.07145); variance 2 Σ_{i≠j} H_ij².
    ``"hutch++"`` (Meyer, Musco, Musco, Woodruff 2021, arXiv 2010.09649): a third of the budget
    sketches the top of the spectrum, Q = orth(H S), whose part tr(QᵀHQ) is computed exactly; the
    rest estimates tr((I−QQᵀ)H(I−QQᵀ)) with Hutchinson. Exact when rank(H) ≤ n_samples/3; much
    lower variance than Hutchinson when a few outlier eigenvalues dominate, as for networks.

    Every term but Hutch++'s sketch is a quadratic form zᵀHz, not a product Hz: on a chain of
    Linear layers and activations :meth:`HessianOperator.quadratic_form` takes it by
    second-order forward mode at about half the time of a product (no backward pass). ``n_hvp``
    counts both kinds.
    """
    check_choice(method, "method", ("hutchinson", "hutch++"))
    if not isinstance(n_samples, int) or n_samples < (3 if method == "hutch++" else 1):
        raise ValueError(f"n_samples must be an integer >= {3 if method == 'hutch++' else 1} "
                         f"for {method}, got {n_samples!r}.")
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, method=hvp_method,
                         params=params, seed=seed)
    return estimate_trace(op, n_samples, method, seed=seed, progress=progress)


def estimate_trace(op: HessianOperator, n_samples: int, method: str = "hutchinson", *,
                   seed: int = 0, progress: bool = False) -> TraceEstimate:
    """:func:`trace` on an existing :class:`HessianOperator` (its ``n_hvp`` counts on)."""
    start = op.n_hvp
    gen = torch.Generator().manual_seed(seed)
    bar = progress_bar(total=n_samples, enabled=progress, desc=f"trace ({method})")
    exact_part = 0.0
    if method == "hutch++":
        s = n_samples // 3
        sketch = []
        for _ in range(s):
            sketch.append(op.matvec(op.random_vector(gen, "rademacher")).double())
            bar.update()
        q, _ = torch.linalg.qr(torch.stack(sketch, dim=1))
        for i in range(q.shape[1]):
            exact_part += op.quadratic_form(q[:, i].to(op.dtype))
            bar.update()
        n_rest = n_samples - 2 * s
    else:
        q, n_rest = None, n_samples
    samples = []
    for _ in range(n_rest):
        z = op.random_vector(gen, "rademacher").double()
        if q is not None:
            z = z - q @ (q.T @ z)
        # Hutchinson needs only zᵀHz: op.quadratic_form, cheaper than a product Hz on chains
        samples.append(op.quadratic_form(z.to(op.dtype)))
        bar.update()
    bar.close()
    samples_arr = np.asarray(samples)
    est = exact_part + float(samples_arr.mean())
    err = float(samples_arr.std(ddof=1) / math.sqrt(len(samples_arr))) if len(samples) > 1 \
        else math.nan
    return TraceEstimate(trace=est, stderr=err, n_hvp=op.n_hvp - start, samples=samples_arr,
                         method=method)


