"""One vocabulary of argument checks, used at every public boundary of the package.

Each check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, bad value)
with a message in one style, after scikit-learn's: it names the argument, says what it got and
what to do, e.g. ``x is on cuda:0 but the model's parameters are on cpu; move it with
x.to('cpu').``. Checks return the (possibly converted) value so a caller can write
``labels = check_labels(labels, n, n_classes)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

__all__ = ["check_choice", "check_positive_int", "check_positive", "check_fraction",
           "as_tensor", "check_tensor", "check_finite", "check_labels", "check_module",
           "check_eval_mode", "STOCHASTIC_LAYERS"]

# Layers whose output is random or depends on the other samples of the batch while training.
STOCHASTIC_LAYERS = (_BatchNorm, _DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)


def check_choice(value, name: str, options: Sequence) -> object:
    """``value`` must be one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}.")
    return value


def check_positive_int(value, name: str, *, allow_zero: bool = False) -> int:
    """``value`` must be an integer ≥ 1 (≥ 0 with ``allow_zero``); bools are refused."""
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        kind = "a non-negative integer" if allow_zero else "a positive integer"
        raise ValueError(f"{name} must be {kind}, got {value!r}.")
    return int(value)


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """``value`` must be a finite real number > 0 (≥ 0 with ``allow_zero``)."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and np.isfinite(value) and (value >= 0 if allow_zero else value > 0))
    if not ok:
        kind = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {kind}, got {value!r}.")
    return float(value)


def check_fraction(value, name: str, *, closed: bool = False) -> float:
    """``value`` must lie in [0, 1) (in [0, 1] with ``closed``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value and (
        value <= 1 if closed else value < 1)
    if not ok:
        raise ValueError(f"{name} must be a number in [0, 1{']' if closed else ')'}, got {value!r}.")
    return float(value)


def as_tensor(x, name: str) -> torch.Tensor:
    """A tensor from a tensor or a NumPy array (no copy for the latter); anything else is refused."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name} must be a torch.Tensor or a NumPy array, got {type(x).__name__}; "
                    f"convert it with torch.as_tensor({name}).")


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """A floating tensor must hold no NaN or infinity."""
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} has {bad} non-finite values (NaN or inf); clean or drop them "
                         "before calling.")
    return x


def check_tensor(x, name: str, *, ndim: int | None = None, min_ndim: int = 1,
                 floating: bool = False, like: torch.Tensor | None = None,
                 nonempty: bool = True, finite: bool = False) -> torch.Tensor:
    """Validate an input tensor.

    ``ndim``/``min_ndim``: exact or minimum number of dimensions; ``floating``: must be a float
    dtype; ``like``: must share this tensor's device (and, for floating inputs, its dtype), as a
    model's parameters; ``nonempty``: the leading (sample) dimension is not 0; ``finite``: no
    NaN/inf values.
    """
    x = as_tensor(x, name)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}.")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s) (samples first), got "
                         f"shape {tuple(x.shape)}.")
    if nonempty and x.ndim and x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples along its first dimension).")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}; use {name}.float().")
    if like is not None:
        if x.device != like.device:
            raise ValueError(f"{name} is on {x.device} but the model's parameters are on "
                             f"{like.device}; move it with {name}.to({str(like.device)!r}).")
        if x.is_floating_point() and x.dtype != like.dtype:
            raise ValueError(f"{name} has dtype {x.dtype} but the model's parameters are "
                             f"{like.dtype}; convert it with {name}.to({like.dtype}).")
    if finite:
        check_finite(x, name)
    return x


def check_labels(labels, n: int, n_classes: int, name: str = "labels") -> torch.Tensor:
    """Integer class indices, one per sample, each in ``[0, n_classes)``; returned as ``long``."""
    labels = as_tensor(labels, name)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D of length N, got shape {tuple(labels.shape)}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got {labels.dtype}; use "
                        f"{name}.long().")
    if labels.shape[0] != n:
        raise ValueError(f"features and {name} have mismatched lengths ({n} vs "
                         f"{labels.shape[0]}); pass one label per sample.")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"{name} out of range: expected values in [0, {n_classes}) but found min "
                         f"{int(labels.min())}, max {int(labels.max())}; pass n_classes=... or "
                         "remap the labels.")
    return labels.long()


def check_module(model, name: str = "model") -> nn.Module:
    """``model`` must be a ``torch.nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}.")
    return model


def check_eval_mode(model: nn.Module, why: str) -> nn.Module:
    """Refuse a model with BatchNorm or active dropout in training mode.

    Such layers make the output depend on the other samples of the batch or on a random mask, so
    quantities defined per input (a kernel, a Hessian) are undefined. ``why`` completes the
    sentence "…, so <why>".
    """
    check_module(model)
    bad = sorted({f"{name or type(model).__name__} ({type(m).__name__})"
                  for name, m in model.named_modules()
                  if m.training and isinstance(m, STOCHASTIC_LAYERS)
                  and not (isinstance(m, _DropoutNd) and m.p == 0)})
    if bad:
        raise ValueError(f"model has layers in training mode: {', '.join(bad)}; batch statistics "
                         f"or random masks change the output from one call to the next, so {why}. "
                         "Call model.eval() first (BatchNorm then uses its running statistics).")
    return model
