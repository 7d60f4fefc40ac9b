"""Data preparation and checks for :func:`toolkit.train.fit` and :func:`toolkit.train.evaluate`
(private): in-memory data versus streamed batches (:mod:`toolkit.batches`), and the checks made
before training: finite values, dtypes, class labels in range for a classification loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import batches as B
from . import utils as _utils
from .utils import as_tensors

__all__ = ["CLASSIFICATION_LOSSES", "check_batch_finite", "target_checker", "data_checker",
           "check_data", "prepare_data", "check_inputs", "check_dtype", "check_targets_once",
           "loader_generators"]

# losses whose targets are class indices (checked for dtype and range before training)
CLASSIFICATION_LOSSES = ("ce", "label_smoothing", "maxsup")


def check_finite_data(t: torch.Tensor, what: str) -> None:
    """A floating tensor of the data holds no NaN/inf (named ``what``: "train x", ...)."""
    if t.is_floating_point() and t.numel():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            rows = (~finite).reshape(len(t), -1).any(dim=1) if t.ndim else finite.reshape(1)
            bad = torch.nonzero(rows).flatten()[:5].tolist()
            raise ValueError(f"{what} has {int((~finite).sum())} non-finite values (NaN or inf), "
                             f"in {int(rows.sum())} samples (first: {bad}); training on them "
                             "would give a NaN loss. Drop those samples (keep "
                             "torch.isfinite(t).flatten(1).all(1)) or impute them first.")


def check_batch_finite(batch, where: str) -> None:
    items = batch.items() if isinstance(batch, dict) else (
        (("x", "y")[i] if i < 2 else f"[{i}]", v) for i, v in enumerate(batch))
    for key, v in items:
        if isinstance(v, torch.Tensor):
            check_finite_data(v, f"{where} {key}")


def check_class_targets(y, width: int, loss_name: str, where: str) -> None:
    """Targets for a classification loss: integer indices in [0, width) (−100, PyTorch's
    ``ignore_index``, allowed for the cross-entropies), or soft labels shaped like the outputs."""
    if y is None:
        raise ValueError(f"{where} has no targets (a tuple batch (x, y) or a dict with "
                         f"'labels'), but loss={loss_name!r} needs class labels.")
    if y.is_floating_point():
        if loss_name == "mse" or (loss_name != "maxsup" and y.ndim >= 2 and y.shape[1] == width):
            return  # regression targets (mse) or class probabilities (soft labels)
        raise TypeError(f"{where} targets are {y.dtype} but loss={loss_name!r} needs integer "
                        f"class indices in [0, {width}); use y.long() for class labels, or "
                        "loss='mse' for regression targets.")
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{where} targets are {y.dtype}; class labels must be integers, use "
                        "y.long().")
    if not y.numel():
        return
    allowed = y != -100 if loss_name != "mse" else torch.ones_like(y, dtype=torch.bool)
    kept = y[allowed]
    if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= width):
        raise ValueError(f"{where} labels out of range: loss={loss_name!r} needs class indices in "
                         f"[0, {width}) (the model's output width) but found min "
                         f"{int(kept.min())}, max {int(kept.max())}; remap the labels to "
                         f"0..K-1 or build the model with K = {int(kept.max()) + 1} outputs.")


def target_checker(loss) -> Callable | None:
    """For a named classification loss, ``check(outputs, batch, where)``; else None."""
    if not isinstance(loss, str) or loss not in (*CLASSIFICATION_LOSSES, "mse"):
        return None

    def check(outputs, batch, where):
        """``outputs=None`` (before the forward pass): the dtype only; else the range too."""
        y = B.targets(batch)
        if loss == "mse" and (y is None or y.is_floating_point()):
            return
        if outputs is None:
            if y is not None and y.is_floating_point() and loss != "mse" and y.ndim == 1:
                check_class_targets(y, 0, loss, where)
            return
        out = B.logits(outputs)
        width = out.shape[1] if out.ndim >= 2 else 1
        check_class_targets(y, width, loss, where)
    return check


def data_checker(loss) -> Callable:
    """``check(outputs, batch, where)``: finite data and label dtypes before the forward pass
    (``outputs=None``), class labels in range after it, for a named loss."""
    named = target_checker(loss)

    def check(out, batch, where):
        if out is None:  # before the forward pass
            check_batch_finite(batch, where)
        if named is not None:
            named(out, batch, where)
    return check


def check_data(name: str, data) -> tuple[torch.Tensor, torch.Tensor]:
    """``data`` as an in-memory ``(x, y)`` pair (refusing empty data)."""
    if data is None:
        raise ValueError(f"{name} data is missing.")
    x, y = as_tensors(data)
    if len(x) == 0:
        raise ValueError(f"{name} is empty (0 samples); pass at least one sample (check the "
                         "split or filter that built it).")
    return x, y


def _columns(batches, name: str) -> dict[str, torch.Tensor]:
    """Dict batches concatenated into one dict of tensors (columns)."""
    parts: dict[str, list] = {}
    for b in batches:
        for k, v in b.items():
            parts.setdefault(k, []).append(v)
    try:
        return {k: torch.cat(v) for k, v in parts.items()}
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"the items of {name} cannot be stacked into columns ({err}); pass a "
                         "DataLoader with a padding collate_fn instead (fit then uses its "
                         "batches as they come).") from err


def prepare_data(name: str, data):
    """``(in_memory, stream, n)``: in-memory data (a tuple ``(x, y)`` or a dict of columns) that
    fit shuffles and slices itself, or a stream (a DataLoader of dicts, a list of ready batches)
    whose batches are used as they come; ``n`` the number of samples (None if unknown)."""
    if data is None:
        raise ValueError(f"{name} data is missing.")
    if isinstance(data, dict):
        list(B.iterate(data))  # a dict that is not columns raises the contract's message
        cols = dict(data)
    elif isinstance(data, DataLoader):
        first = next(iter(data), None)
        if first is None:
            raise ValueError(f"{name} is an empty DataLoader (it yields no batch); pass at least "
                             "one sample.")
        if not isinstance(first, dict):
            x, y = check_data(name, data)
            return (x, y), None, len(x)
        n = len(data.dataset) if hasattr(data.dataset, "__len__") else None
        return None, data, n
    elif isinstance(data, Dataset) and not isinstance(data, TensorDataset):
        if len(data) == 0:
            raise ValueError(f"{name} is an empty Dataset (0 samples); pass at least one sample.")
        if not isinstance(data[0], dict):
            x, y = check_data(name, data)
            return (x, y), None, len(x)
        cols = _columns(B.iterate(data, 1024), name)
    elif isinstance(data, list | tuple) and not B.is_tensor_pair(data):
        if not data:
            raise ValueError(f"{name} is an empty list of batches; pass at least one batch.")
        n = sum(B.batch_len(b) for b in B.iterate(data))
        if n == 0:
            raise ValueError(f"{name} holds no samples (every batch is empty).")
        return None, list(data), n
    else:
        x, y = check_data(name, data)
        return (x, y), None, len(x)
    n = len(next(iter(cols.values())))
    if n == 0:
        raise ValueError(f"{name} is empty (0 samples); pass at least one sample.")
    return cols, None, n


def check_inputs(name: str, batch, model: nn.Module, amp: bool) -> None:
    """In-memory data: finite values, and inputs ``x`` of the model's floating dtype."""
    check_batch_finite(batch, name)
    if not amp:
        check_dtype(name, batch, model)


def check_dtype(name: str, batch, model: nn.Module) -> None:
    """Floating inputs ``x`` of a tuple batch share the dtype of the model's parameters."""
    if isinstance(batch, tuple) and batch[0].is_floating_point():
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        if dtype is not None and batch[0].dtype != dtype:
            raise TypeError(f"{name} x is {batch[0].dtype} but the model's parameters are "
                            f"{dtype}; convert the data with x.to({dtype}) or the model with "
                            f"model.to({batch[0].dtype}).")


def check_targets_once(name: str, batch, model: nn.Module, loss) -> None:
    """In-memory data and a named loss: labels checked against the model's output width (one
    forward pass on one sample, in eval mode)."""
    check = target_checker(loss)
    if check is None:
        return
    y = B.targets(batch)
    if loss == "mse" and (y is None or y.is_floating_point()):
        return
    with torch.no_grad(), _utils.eval_mode(model):
        out = B.model_output(model, B.select(batch, slice(0, 1)))
    check(out, batch, name)


def loader_generators(data) -> list[torch.Generator]:
    """The generators of a DataLoader and of its samplers (saved in checkpoints so that a
    resumed run draws the same batches)."""
    if not isinstance(data, DataLoader):
        return []
    gens: list[torch.Generator] = []
    for g in (data.generator, getattr(data.sampler, "generator", None),
              getattr(data.batch_sampler, "generator", None),
              getattr(getattr(data.batch_sampler, "sampler", None), "generator", None)):
        if isinstance(g, torch.Generator) and all(g is not h for h in gens):
            gens.append(g)
    return gens
