"""Batch-binding (Kini et al. 2023, arXiv:2306.07960, §5): a batch sampler for mini-batch SCL.

Supervised contrastive loss only compares samples inside a batch. With small batches on imbalanced
data many batches miss the minority classes, and the embedding geometry that mini-batch SCL
reaches drifts from the orthogonal frame of the full-batch (ReLU) minimiser. Kini et al.'s
batch-binding fixes one sample per class once and appends that same set to every mini-batch, so
every batch holds every class. :class:`BatchBindingSampler` yields those index lists; pass it as
``toolkit.train.fit(..., batch_sampler=sampler)`` (or to a ``torch.utils.data.DataLoader``).
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler

from .._checks import as_tensor, check_positive_int

__all__ = ["BatchBindingSampler"]


class BatchBindingSampler(Sampler):
    """Random mini-batches of ``batch_size`` indices, each with the same ``C`` binding samples
    (one per class, drawn once from ``seed``) appended; ``bind=False`` gives the plain random
    batches (the control), drawn by the same generator.

    Every epoch shuffles the ``n`` indices with ``self.generator`` and cuts them into
    ``ceil(n / batch_size)`` batches; a binding sample that the shuffle already put in a batch is
    not appended twice. ``fit`` checkpoints and restores ``self.generator``'s state, so a resumed
    run draws the same batches as an uninterrupted one.
    """

    def __init__(self, labels, batch_size: int, *, bind: bool = True, seed: int = 0):
        labels = as_tensor(labels, "labels").reshape(-1).long().cpu()
        if len(labels) == 0:
            raise ValueError("labels is empty.")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.n = len(labels)
        self.bind = bool(bind)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        classes = torch.unique(labels)
        pick = torch.Generator().manual_seed(self.seed + 7919)
        self.binding = [int(torch.nonzero(labels == c).flatten()[
            torch.randint(int((labels == c).sum()), (1,), generator=pick)]) for c in classes]
        self.config = dict(n=self.n, batch_size=self.batch_size, bind=self.bind, seed=self.seed)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        for start in range(0, self.n, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.bind:
                present = set(batch)
                batch = batch + [i for i in self.binding if i not in present]
            yield batch

    def __repr__(self) -> str:
        return (f"BatchBindingSampler(n={self.n}, batch_size={self.batch_size}, bind={self.bind}, "
                f"seed={self.seed})")
