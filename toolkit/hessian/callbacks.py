"""A ``fit`` callback that tracks the top Hessian eigenvalue during training."""

from __future__ import annotations

from torch import nn

from .eigen import top_eigenvalues

__all__ = ["LambdaMaxTracker"]

# ----------------------------------------------------------------------------------- callbacks


class LambdaMaxTracker:
    """A :func:`toolkit.train.fit` callback adding ``lambda_max`` (top Hessian eigenvalue on
    ``data``) to the history; warm-starts Lanczos from the previous eigenvector, which cuts the
    products per call when the eigenvector moves slowly (Cohen et al. 2021, arXiv 2103.00065,
    track λ_max along training to see the edge of stability). ``params`` (names or patterns, see
    :func:`~toolkit.hessian.select_params`) tracks one block's λ_max instead."""

    def __init__(self, loss_fn, data, *, tol: float = 1e-3, max_iter: int = 100,
                 batch_size: int | None = None, key: str = "lambda_max", seed: int = 0,
                 params=None):
        self.loss_fn, self.data, self.key = loss_fn, data, key
        self.kw = dict(tol=tol, max_iter=max_iter, batch_size=batch_size, seed=seed, params=params)
        self._v = None
        self.n_hvp = 0

    def __call__(self, epoch: int, model: nn.Module, history_rows=None) -> dict:
        try:
            res = top_eigenvalues(model, self.loss_fn, self.data, v0=self._v, **self.kw)
        except FloatingPointError:  # a diverged run: record NaN, let training report it
            return {self.key: float("nan")}
        self._v = res.eigenvectors[0]
        self.n_hvp += res.n_hvp
        return {self.key: float(res.eigenvalues[0])}

