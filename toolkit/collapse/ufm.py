"""The unconstrained-features (layer-peeled) model: :func:`ufm` optimises free features jointly with
the classifier (Fang et al. 2021, arXiv:2101.12699; deep linear version of Dang et al. 2023,
arXiv:2301.00437), and :func:`ufm_mse_closed_form` gives the bias-free MSE optimum's norms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils import progress as _progress
from ._base import CollapseMetrics
from .metrics import nc_metrics

__all__ = ["UFMResult", "ufm", "ufm_mse_closed_form"]


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
    for i in _progress(range(1, n_outer + 1), enabled=progress, desc="UFM", leave=True):
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
