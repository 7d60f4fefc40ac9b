r"""Curvature per layer: the diagonal blocks of the loss Hessian, one row per block.

For a group of parameters :math:`B` (a layer, a transformer block) the block
:math:`H_{BB} = ∇²_{θ_B} L` is the Hessian of the loss in those parameters with all others fixed,
the principal sub-matrix of the full Hessian. :func:`layer_table` reports its largest eigenvalue
and trace per block, laid out like WeightWatcher's per-layer table (Martin & Mahoney, arXiv
1810.01075, tabulate the spectra of the *weight matrices* layer by layer; here each row is the loss
curvature of one block instead). Two facts tie the rows to the whole Hessian: a block's λ_max never
exceeds the full λ_max (Cauchy interlacing for a principal sub-matrix), and the block traces add
up to the full trace when the groups cover every parameter once. The off-diagonal blocks — how layers'
curvature couples — are not in the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._checks import check_module, check_positive, check_positive_int
from ..utils import progress as progress_bar
from .eigen import _lanczos_eigs
from .operator import HessianOperator, select_params
from .trace import estimate_trace

__all__ = ["parameter_groups", "layer_table"]


def parameter_groups(model: nn.Module, groups="module",
                     params: str | Iterable[str] | None = None) -> dict[str, list[str]]:
    """``label -> parameter names`` for :func:`layer_table`.

    ``groups``: ``"module"`` (the parameters each module holds itself, labelled by the module's
    name, e.g. ``"blocks.layers.0.linear1"``), ``"parameter"`` (one group per parameter), an int
    ``depth`` (parameters grouped by the first ``depth`` parts of their module's name, e.g. depth 3
    on ``blocks.layers.0.linear1.weight`` gives ``blocks.layers.0``, one group per transformer
    block, and ``head.weight`` gives ``head``), or a dict ``label -> name/pattern or list of them`` (see
    :func:`~toolkit.hessian.select_params`). ``params`` first restricts the parameters considered
    (default: all that require grad)."""
    check_module(model)
    allowed = select_params(model, params)
    if isinstance(groups, Mapping):
        out = {}
        for label, pats in groups.items():
            names = [n for n in select_params(model, pats) if n in allowed]
            if not names:
                raise ValueError(f"group {label!r} selects no parameter among those considered.")
            out[str(label)] = names
        return out
    if groups == "parameter":
        return {n: [n] for n in allowed}
    if groups == "module":
        depth = None
    elif isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1:
        depth = groups
    else:
        raise ValueError("groups must be 'module', 'parameter', a positive int depth or a dict "
                         f"label -> parameter names/patterns, got {groups!r}.")
    out: dict[str, list[str]] = {}
    for n in allowed:
        parts = n.split(".")
        label = ".".join(parts[:-1] if depth is None else parts[:-1][:depth]) or "(model)"
        out.setdefault(label, []).append(n)
    return out


def layer_table(model: nn.Module, loss_fn, data, *, groups="module",
                params: str | Iterable[str] | None = None, exact_below: int = 256,
                tol: float = 1e-3, max_iter: int = 100, trace_samples: int = 60,
                batch_size: int | None = None, hvp_method: str = "auto", seed: int = 0,
                progress: bool = True) -> pd.DataFrame:
    r"""One row per parameter group: the largest eigenvalue and the trace of its Hessian block.

    Groups come from :func:`parameter_groups` (``groups="module"`` by default). A block of at most
    ``exact_below`` parameters is formed densely (that many Hessian-vector products) and its
    eigenvalues and trace are exact; a larger one gets λ_max by Lanczos (``tol``, ``max_iter``, as
    :func:`~toolkit.hessian.top_eigenvalues`) and the trace by Hutch++ with ``trace_samples``
    products (:func:`~toolkit.hessian.trace`), with its standard error.

    Columns: ``group``, ``n_params``, ``lambda_max``, ``trace``, ``trace_stderr`` (0 when exact),
    ``mean_curvature`` (= trace / n_params, the mean eigenvalue of the block), ``exact`` and
    ``n_hvp``. ``data``, ``loss_fn`` and ``batch_size`` are as for
    :class:`~toolkit.hessian.HessianOperator`.
    """
    check_positive_int(exact_below, "exact_below", allow_zero=True)
    check_positive(tol, "tol")
    check_positive_int(max_iter, "max_iter")
    if not isinstance(trace_samples, int) or trace_samples < 3:
        raise ValueError(f"trace_samples must be an integer >= 3 (Hutch++), got {trace_samples!r}.")
    table = parameter_groups(model, groups, params)
    rows = []
    for label, names in progress_bar(table.items(), enabled=progress, desc="layer table"):
        op = HessianOperator(model, loss_fn, data, batch_size=batch_size, method=hvp_method,
                             params=names, seed=seed)
        if op.numel <= max(exact_below, 2):
            block = op.dense().double()
            eig = torch.linalg.eigvalsh((block + block.T) / 2)
            top, tr, err, exact = float(eig[-1]), float(torch.trace(block)), 0.0, True
        else:
            v0 = op.random_vector(torch.Generator().manual_seed(seed))
            top = float(np.max(_lanczos_eigs(op, 1, "largest", tol, max_iter, v0)[0]))
            est = estimate_trace(op, trace_samples, "hutch++", seed=seed)
            tr, err, exact = est.trace, est.stderr, False
        rows.append({"group": label, "n_params": op.numel, "lambda_max": top, "trace": tr,
                     "trace_stderr": err, "mean_curvature": tr / op.numel, "exact": exact,
                     "n_hvp": op.n_hvp})
    return pd.DataFrame(rows)
