r"""What a constant kernel predicts: kernel regression, step sizes and residual modes.

The linearised network trained by gradient descent on the squared loss is kernel gradient
descent with its initial NTK (Lee et al. 2019, arXiv 1902.06720): :func:`kernel_regression`
gives its prediction at any time, :func:`gd_kernel_lr` converts PyTorch's step size to the
function-space one, :func:`stable_lr` picks a step size relative to the kernel, and
:func:`residual_modes` compares measured training residuals with the decay the kernel predicts
along its eigenvectors. Functions of tensors only; nothing here trains or plots.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from toolkit._checks import check_positive, check_positive_int, check_tensor

from ._context import _flatten_kernel

__all__ = ["gd_kernel_lr", "kernel_regression", "residual_modes", "stable_lr"]


def _as_targets(y: torch.Tensor, n: int, name: str) -> torch.Tensor:
    y = y if y.ndim > 1 else y[:, None]
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} rows but the kernel has {n}")
    return y


def _time_factor(evals, t, lr, discrete):
    r"""g(lambda) with f_t - f_0 = K_* V diag(g) V^T (y - f_0) (see kernel_regression)."""
    tol = evals.abs().max() * evals.shape[0] * torch.finfo(evals.dtype).eps
    safe = torch.where(evals.abs() > tol, evals, torch.ones_like(evals))
    if t is None:
        return torch.where(evals.abs() > tol, 1.0 / safe, torch.zeros_like(evals))
    if discrete:
        decay = (1 - lr * evals) ** t
        limit = lr * t * torch.ones_like(evals)
    else:
        decay = torch.exp(-lr * evals * t)
        limit = lr * t * torch.ones_like(evals)
    return torch.where(evals.abs() > tol, (1 - decay) / safe, limit)


def kernel_regression(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    k_test_train: torch.Tensor,
    *,
    t: float | Sequence[float] | None = None,
    lr: float = 1.0,
    ridge: float = 0.0,
    f0_train: torch.Tensor | None = None,
    f0_test: torch.Tensor | None = None,
    discrete: bool = False,
) -> torch.Tensor:
    r"""Prediction of the linearised network trained on MSE, at time ``t`` (Lee et al. 2019,
    arXiv 1902.06720, eq. 9-10).

    Gradient flow :math:`\dot f = -\eta\,K\,(f - y)` on the training inputs (the function-space
    form of gradient flow on :math:`\tfrac12\|f-y\|^2` with learning rate :math:`\eta` =
    ``lr``) gives, with :math:`K = V\Lambda V^\top` (``k_train`` plus ``ridge`` I),

    .. math:: f_t(x_*) = f_0(x_*) + K_{*}\,V\,\mathrm{diag}\!\left(
              \frac{1 - e^{-\eta\lambda_i t}}{\lambda_i}\right)V^\top (y - f_0(X)),

    which at :math:`t=\infty` (``t=None``) is kernel (ridge) regression
    :math:`f_0(x_*) + K_*(K + \text{ridge}\,I)^{-1}(y - f_0(X))` (pseudo-inverse if singular).
    ``discrete=True`` replaces :math:`e^{-\eta\lambda t}` by :math:`(1-\eta\lambda)^t`: exact for
    ``t`` steps of full-batch gradient descent on the linearised model. With PyTorch's mean MSE
    over N samples and O outputs use ``lr = gd_kernel_lr(sgd_lr, N, O)``.

    Args:
        k_train: (N, N) kernel on the training inputs, or a full (N, N, O, O) kernel.
        y_train: (N,) or (N, O) targets.
        k_test_train: (M, N) kernel between test and training inputs (or (M, N, O, O)).
        t: time, a sequence of times, or None for t = infinity.
        lr: learning rate :math:`\eta` of the function-space dynamics.
        ridge: added to the kernel's diagonal.
        f0_train, f0_test: outputs at initialisation (default zero).
        discrete: gradient-descent steps instead of gradient flow.

    Returns:
        (M, O) predictions, or (T, M, O) for a sequence of times.
    """
    full = k_train.ndim == 4
    k = _flatten_kernel(k_train, "k_train")
    ks = _flatten_kernel(k_test_train, "k_test_train")
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"k_train must be square, got {tuple(k_train.shape)}")
    n = k_train.shape[0]
    m = k_test_train.shape[0]
    if ks.shape[1] != k.shape[0]:
        raise ValueError(
            f"k_test_train has {k_test_train.shape[1]} training columns but k_train has {n}"
        )
    y = _as_targets(y_train, n, "y_train").to(k.dtype)
    n_out = y.shape[1]
    f0 = torch.zeros_like(y) if f0_train is None else _as_targets(f0_train, n, "f0_train")
    f0s = (torch.zeros(m, n_out, dtype=k.dtype, device=k.device) if f0_test is None
           else _as_targets(f0_test, m, "f0_test"))
    resid = (y - f0).to(k.dtype)
    if full:
        resid = resid.reshape(-1, 1)
    evals, evecs = torch.linalg.eigh(k + ridge * torch.eye(k.shape[0], dtype=k.dtype,
                                                           device=k.device))
    coeff = evecs.T @ resid
    several = t is not None and not isinstance(t, (int, float))
    times = [float(v) for v in t] if several else [t]
    preds = []
    for ti in times:
        g = _time_factor(evals, ti, lr, discrete)
        delta = ks @ (evecs @ (g[:, None] * coeff))
        preds.append(f0s + delta.reshape(m, n_out))
    return torch.stack(preds) if several else preds[0]


def gd_kernel_lr(lr: float, n_samples: int, n_outputs: int = 1) -> float:
    r"""Function-space learning rate of gradient descent on PyTorch's mean MSE.

    :math:`L = \frac{1}{N O}\sum (f - y)^2` gives :math:`f \leftarrow f - \eta\,\frac{2}{N O}
    K (f - y)`, so :func:`kernel_regression` needs ``lr = 2 * lr / (N * O)``.
    """
    return 2.0 * lr / (n_samples * n_outputs)


def stable_lr(k_train: torch.Tensor, n_outputs: int = 1, target: float = 1.0) -> float:
    r"""Learning rate of GD on mean MSE with :math:`\eta_f \lambda_{max}(K)` = ``target``
    (GD on the linearised model is stable for values below 2)."""
    lam = float(torch.linalg.eigvalsh(_flatten_kernel(k_train, "k_train")).max())
    return target * k_train.shape[0] * n_outputs / (2.0 * lam)



def residual_modes(kernel: torch.Tensor, residuals: torch.Tensor, lr: float, *,
                   steps: Sequence[int] | None = None, n_modes: int = 4) -> pd.DataFrame:
    r"""Training residuals along the top eigenvectors of a kernel, measured and predicted.

    Kernel gradient descent with a constant kernel :math:`\Theta_0 = \sum_i \lambda_i v_i
    v_i^\top` decouples along its eigenvectors:
    :math:`v_i^\top r_t = (1 - \eta'\lambda_i)^t\, v_i^\top r_0`, so directions with large
    eigenvalues are learned first (spectral bias; Jacot et al. 2018, arXiv 1806.07572; Rahaman
    et al. 2019, arXiv 1806.08734). A network that trains like its linearisation follows it.

    Args:
        kernel: (N, N) kernel on the training inputs (typically the initial NTK), or a full
            (N, N, 1, 1) one.
        residuals: (T, N) (or (T, N, 1)) residuals :math:`r_t = f_t(X) - y` at ``steps``.
        lr: the function-space step :math:`\eta'` (``gd_kernel_lr(lr, N)`` for GD on mean MSE).
        steps: the GD step of each row of ``residuals`` (default 0, 1, ..., T-1); the prediction
            counts steps from the first row.
        n_modes: how many of the largest eigenvalues to follow.

    Returns:
        DataFrame ``step, mode, eigenvalue, measured, predicted``: ``measured`` is
        :math:`v_i^\top r_t / v_i^\top r_{t_0}` (signed), ``predicted`` is
        :math:`(1 - \eta'\lambda_i)^{t - t_0}`; mode 1 has the largest eigenvalue.
    """
    k = _flatten_kernel(check_tensor(kernel, "kernel", floating=True), "kernel")
    n = k.shape[0]
    if k.shape != (n, n):
        raise ValueError(f"kernel must be square (N, N), got {tuple(kernel.shape)}")
    r = check_tensor(residuals, "residuals", floating=True)
    if r.ndim == 3 and r.shape[-1] == 1:
        r = r[..., 0]
    if r.ndim != 2 or r.shape[1] != n:
        raise ValueError(f"residuals must be (T, N) with N = {n} training points (one output), "
                         f"got shape {tuple(residuals.shape)}")
    check_positive(lr, "lr")
    n_modes = check_positive_int(n_modes, "n_modes")
    if n_modes > n:
        raise ValueError(f"n_modes must be at most the number of training points ({n}), "
                         f"got {n_modes}")
    steps = list(range(r.shape[0])) if steps is None else [int(s) for s in steps]
    if len(steps) != r.shape[0]:
        raise ValueError(f"steps has {len(steps)} entries but residuals has {r.shape[0]} rows")
    evals, evecs = torch.linalg.eigh(k)
    order = torch.argsort(evals, descending=True)[:n_modes]
    lam, vecs = evals[order], evecs[:, order]
    proj = r.to(device=k.device, dtype=k.dtype) @ vecs  # (T, n_modes)
    elapsed = torch.tensor(steps, dtype=k.dtype, device=k.device) - steps[0]
    predicted = (1 - lr * lam)[None, :] ** elapsed[:, None]
    measured = proj / proj[0]
    t_grid, mode_grid = torch.meshgrid(torch.arange(len(steps)), torch.arange(n_modes),
                                       indexing="ij")
    return pd.DataFrame({
        "step": [steps[i] for i in t_grid.flatten().tolist()],
        "mode": (mode_grid.flatten() + 1).tolist(),
        "eigenvalue": lam[mode_grid.flatten()].cpu().numpy(),
        "measured": measured.flatten().cpu().numpy(),
        "predicted": predicted.flatten().cpu().numpy(),
    })
