"""Supervised contrastive loss (Khosla et al. 2020, arXiv:2004.11362) as a function and a module.

Train an embedding network with it through the one training loop, :func:`toolkit.train.fit`::

    fit(encoder, data, loss=supcon_loss, loss_kwargs={"temperature": 0.1}, metrics=("loss",))

(``metrics=("loss",)``: the outputs are embeddings, not logits, so there is no accuracy).

:func:`ufm_supcon` solves the unconstrained-features form (free embeddings, one per sample), the
setting of Kini et al.'s theorem (arXiv:2306.07960); it converges in about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import as_tensor, check_labels, check_positive
from ._base import check_features
from .metrics import MeanGeometry, mean_geometry

__all__ = ["supcon_loss", "SupConLoss", "SupConUFMResult", "ufm_supcon"]


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
    features = check_features(features)
    labels = as_tensor(labels, "labels")
    labels = check_labels(labels, features.shape[0], int(labels.max()) + 1 if len(labels) else 1)
    check_positive(temperature, "temperature")
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
    ``fit(model, data, loss=SupConLoss(), metrics=("loss",))`` when the model outputs embeddings."""

    def __init__(self, temperature: float = 0.1, normalize: bool = True):
        super().__init__()
        check_positive(temperature, "temperature")
        self.temperature, self.normalize = temperature, normalize

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(features, labels, temperature=self.temperature,
                           normalize=self.normalize)


@dataclass
class SupConUFMResult:
    """Solution of :func:`ufm_supcon`: the free ``features`` (N, d) (non-negative when
    ``relu=True``), ``labels``, the final SupCon ``loss``, the ``history`` of the kept restart
    (columns step, loss) and the ``config``; ``losses`` lists every restart's final loss."""

    features: Tensor
    labels: Tensor
    loss: float
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    losses: list[float] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def geometry(self) -> MeanGeometry:
        """Cosines and norms of the class means of the normalised embeddings (raw, uncentred:
        the view in which an ETF has cosines -1/(C-1) and an orthogonal frame 0)."""
        return mean_geometry(self.features, self.labels, normalize=True)


def ufm_supcon(class_counts: Sequence[int], dim: int, *, relu: bool = False,
               temperature: float = 1.0, steps: int = 500, lr: float = 0.05, restarts: int = 1,
               record_every: int = 50, seed: int = 0, device=None,
               dtype: torch.dtype = torch.float64) -> SupConUFMResult:
    """Supervised contrastive loss in the unconstrained-features model (Kini et al. 2023,
    arXiv:2306.07960): one free embedding ``h_i`` in R^d per sample, minimise the full-batch
    :func:`supcon_loss` of ``h/||h||`` directly with Adam (step ``lr``, ``steps`` steps).

    ``relu=True`` imposes the entry-wise non-negativity that a final ReLU gives a network
    (``h >= 0``), by projected gradient: after each step the embeddings are clamped at 0 (a ReLU in
    the forward pass instead would freeze every entry that turns negative). Kini et al. prove that
    the global minimisers under this constraint are an **orthogonal frame** (class means pairwise
    orthogonal, every sample at its class mean) whatever the class sizes, for ``d >= C``; without
    the constraint the balanced minimiser is a simplex ETF (Graf et al. 2021, arXiv:2106.04187)
    and class imbalance makes it asymmetric. Projected gradient can stall at a stationary point in
    which two classes share a support (cosine 1, higher loss); ``restarts`` runs from
    ``seed, seed+1, ...`` and keeps the lowest final loss. ``temperature`` defaults to 1: at 0.1
    the negatives' terms are ~e^-12 once the classes separate, the loss is flat in the geometry
    and Adam stops far from the minimiser.
    """
    counts = [int(n) for n in class_counts]
    if len(counts) < 2 or min(counts) < 2:
        raise ValueError(f"class_counts needs >= 2 classes with >= 2 samples each (a positive "
                         f"pair), got {counts}")
    if dim < 1 or steps < 1 or restarts < 1 or record_every < 1:
        raise ValueError("dim, steps, restarts and record_every must be positive")
    check_positive(temperature, "temperature")
    check_positive(lr, "lr")
    device = torch.device("cpu") if device is None else torch.device(device)
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)).to(device)
    best = None
    losses = []
    for r in range(restarts):
        gen = torch.Generator().manual_seed(seed + r)
        h = torch.randn(sum(counts), dim, generator=gen, dtype=dtype)
        h = (h.abs() if relu else h).to(device).requires_grad_()
        opt = torch.optim.Adam([h], lr=lr)
        rows = []
        for step in range(steps + 1):
            opt.zero_grad()
            loss = supcon_loss(h, labels, temperature=temperature)
            if step % record_every == 0 or step == steps:
                rows.append({"step": step, "loss": float(loss.detach())})
            if step == steps:
                break
            loss.backward()
            opt.step()
            if relu:
                with torch.no_grad():
                    h.clamp_(min=0.0)
        final = rows[-1]["loss"]
        losses.append(final)
        if best is None or final < best[0]:
            best = (final, h.detach(), pd.DataFrame(rows))
    config = dict(class_counts=counts, dim=dim, relu=relu, temperature=temperature, steps=steps,
                  lr=lr, restarts=restarts, seed=seed)
    return SupConUFMResult(best[1], labels, best[0], best[2], losses, config)
