"""Supervised contrastive loss (Khosla et al. 2020, arXiv:2004.11362) as a function and a module.

Train an embedding network with it through the one training loop, :func:`toolkit.train.fit`::

    fit(encoder, data, loss=supcon_loss, loss_kwargs={"temperature": 0.1}, metrics=("loss",))

(``metrics=("loss",)``: the outputs are embeddings, not logits, so there is no accuracy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import as_tensor, check_labels, check_positive
from ._base import check_features

__all__ = ["supcon_loss", "SupConLoss"]


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
