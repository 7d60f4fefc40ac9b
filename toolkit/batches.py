"""The one batch contract: what data, batches, models and losses look like to the toolkit.

**Data** (what ``fit``, ``evaluate``, the landscape, Hessian and collapse functions take) is one of

- an ``(x, y)`` pair of tensors (``x`` samples first, ``y`` labels or regression targets);
- a dict of tensors that share their first (sample) dimension, e.g. ``{"input_ids": ...,
  "attention_mask": ..., "labels": ...}`` (Hugging Face style columns);
- a ``torch.utils.data.Dataset`` (a ``TensorDataset``, or one whose items are tuples or dicts);
- a ``torch.utils.data.DataLoader`` yielding tuples or dicts (its own batches are used as they
  come, so a loader with a padding ``collate_fn`` works);
- a list of ready batches (tuples or dicts), used as they are.

**Batches** come out of :func:`iterate` as tuples ``(x, y, ...)`` or dicts, moved to the device.

**The model** is called by :func:`model_output`: ``model(batch[0])`` for a tuple batch,
``model(**batch)`` for a dict batch (Hugging Face style, so the model's ``forward`` takes the
dict's keys as keyword arguments; a dict's ``"labels"`` is passed too, as Hugging Face models
expect).

**The loss** is called by :func:`batch_loss`:

- ``loss_fn(outputs, targets)`` (the PyTorch convention) for a tuple batch, ``targets = batch[1]``;
- ``loss_fn(outputs, batch)`` for a loss marked with :func:`takes_batch` (any batch), or for any
  loss given a dict batch: custom objectives (physics-informed residuals, contrastive pairs,
  language modelling with shifted labels) read what they need from the batch;
- a loss marked with :func:`takes_targets` always gets ``targets(batch)``, also from a dict (the
  named losses of :mod:`toolkit.train` are marked so ``loss="ce"`` works with ``"labels"``);
- no loss (``loss_fn=None``): the model's own loss, ``outputs.loss`` or ``outputs["loss"]``
  (a Hugging Face model called with ``labels``).

Every loss returns a scalar *mean* over the samples of the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["iterate", "to_device", "batch_len", "model_output", "targets", "logits",
           "takes_batch", "takes_targets", "batch_loss", "is_tensor_pair", "is_columns",
           "select", "CONTRACT"]

CONTRACT = ("the batch contract (toolkit.batches): a tuple batch (x, y) calls model(x) and "
            "loss_fn(outputs, y); a dict batch calls model(**batch) and loss_fn(outputs, batch); "
            "mark a loss that reads the whole batch with @toolkit.batches.takes_batch, one that "
            "takes (outputs, targets) with @toolkit.batches.takes_targets")


# ------------------------------------------------------------------------------------ data → batches


def is_tensor_pair(data) -> bool:
    """``data`` is an ``(x, y)`` pair (tuple or list) of two tensors."""
    return (isinstance(data, tuple | list) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data))


def is_columns(data) -> bool:
    """``data`` is a non-empty dict whose values are tensors of one shared first dimension."""
    if not isinstance(data, Mapping) or not data:
        return False
    values = list(data.values())
    if not all(isinstance(v, torch.Tensor) and v.ndim >= 1 for v in values):
        return False
    return len({v.shape[0] for v in values}) == 1


def _is_batch(item) -> bool:
    return isinstance(item, tuple | list | Mapping)


def to_device(batch, device: torch.device | str | None):
    """The batch with every tensor in it moved to ``device`` (tuples, lists, dicts recursively).

    Tuples stay tuples, lists lists, mappings become dicts; other values (strings, numbers) pass
    through. ``device=None`` returns the batch unchanged.
    """
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(to_device(v, device) for v in batch)
    if isinstance(batch, list):
        return [to_device(v, device) for v in batch]
    return batch


def _first_tensor(batch) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, Mapping) else (
        batch if isinstance(batch, tuple | list) else ())
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


def batch_len(batch) -> int:
    """The number of samples in a batch: the leading size of its first tensor."""
    t = _first_tensor(batch)
    if t is None:
        raise TypeError(f"the batch ({type(batch).__name__}) holds no tensor, so its size is "
                        f"unknown; {CONTRACT}.")
    if t.ndim == 0:
        raise ValueError("the first tensor of the batch is a scalar; put the samples along the "
                         "first dimension.")
    return int(t.shape[0])


def select(batch, idx):
    """The rows ``idx`` (an index tensor or slice) of every tensor of a tuple or dict batch."""
    if isinstance(batch, Mapping):
        return {k: (v[idx] if isinstance(v, torch.Tensor) and v.ndim else v)
                for k, v in batch.items()}
    return tuple(v[idx] if isinstance(v, torch.Tensor) and v.ndim else v for v in batch)


def _normalise(batch):
    """A batch as a tuple or a dict (a list from the default collate becomes a tuple)."""
    if isinstance(batch, Mapping):
        return dict(batch)
    if isinstance(batch, tuple | list):
        return tuple(batch)
    if isinstance(batch, torch.Tensor):
        return (batch,)
    raise TypeError(f"a batch must be a tuple (x, y, ...) or a dict of tensors, got "
                    f"{type(batch).__name__}; {CONTRACT}.")


def _slices(columns, n: int, batch_size: int | None):
    step = batch_size or max(n, 1)
    for i in range(0, n, step):
        yield select(columns, slice(i, i + step))


def iterate(data, batch_size: int | None = None,
            device: torch.device | str | None = None) -> Iterator[tuple | dict]:
    """Yield the batches of ``data`` in order (no shuffling), moved to ``device``.

    ``data``: an ``(x, y)`` pair, a dict of tensors (columns), a ``Dataset``, a ``DataLoader`` or a
    list of ready batches (see the module docstring). ``batch_size=None`` is one full batch for
    tensors and columns (1024 per batch for other datasets); a loader's or a list's own batches
    are used as they are and ``batch_size`` is ignored for them. Tuple batches come out as tuples,
    dict batches as dicts.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    if is_tensor_pair(data):
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"data is an (x, y) pair of different lengths ({len(x)} vs "
                             f"{len(y)}); pass one target per sample.")
        batches = _slices(tuple(data), len(x), batch_size)
    elif isinstance(data, Mapping):
        if not is_columns(data):
            raise ValueError("data is a dict, so its values must be tensors sharing their first "
                             "(sample) dimension, got "
                             f"{ {k: tuple(getattr(v, 'shape', ())) for k, v in data.items()} }; "
                             "pass a list of dict batches or a DataLoader for ragged data.")
        batches = _slices(dict(data), len(next(iter(data.values()))), batch_size)
    elif isinstance(data, TensorDataset):
        batches = _slices(tuple(data.tensors), len(data), batch_size)
    elif isinstance(data, DataLoader):
        batches = data
    elif isinstance(data, Dataset):
        batches = DataLoader(data, batch_size=batch_size or 1024, shuffle=False)
    elif isinstance(data, list | tuple) and data and all(_is_batch(b) for b in data):
        batches = data
    else:
        raise TypeError("data must be an (x, y) pair of tensors, a dict of tensors, a Dataset, "
                        "a DataLoader or a list of ready batches (tuples or dicts), got "
                        f"{type(data).__name__}.")
    for batch in batches:
        yield to_device(_normalise(batch), device)


# ------------------------------------------------------------------------------------ model and loss


def _unexpected_keyword(err: TypeError) -> bool:
    msg = str(err)
    return "unexpected keyword argument" in msg or "positional argument" in msg


def model_output(model: nn.Module | Callable, batch, params: dict | None = None):
    """The model's outputs on a batch: ``model(batch[0])`` (tuple/list) or ``model(**batch)``
    (dict); with ``params`` (a name → tensor dict), the same through
    ``torch.func.functional_call(model, params, ...)``."""
    if isinstance(batch, Mapping):
        args, kwargs = (), dict(batch)
    elif isinstance(batch, tuple | list):
        if not batch:
            raise ValueError("the batch is an empty tuple; a tuple batch is (x, y, ...).")
        args, kwargs = (batch[0],), {}
    elif isinstance(batch, torch.Tensor):
        args, kwargs = (batch,), {}
    else:
        raise TypeError(f"a batch must be a tuple (x, y, ...) or a dict, got "
                        f"{type(batch).__name__}; {CONTRACT}.")
    try:
        if params is not None:
            return torch.func.functional_call(model, params, args, kwargs)
        return model(*args, **kwargs)
    except TypeError as err:
        if kwargs and _unexpected_keyword(err):
            raise TypeError(f"the model was called as model(**batch) with the keys "
                            f"{sorted(kwargs)} and refused them ({err}); its forward must take "
                            "these keyword arguments (Hugging Face style), or pass tuple "
                            f"batches (x, y). {CONTRACT}.") from err
        raise


def targets(batch):
    """``batch[1]`` for a tuple batch (None for a 1-tuple), ``batch.get("labels")`` for a dict."""
    if isinstance(batch, Mapping):
        return batch.get("labels")
    if isinstance(batch, tuple | list):
        return batch[1] if len(batch) > 1 else None
    return None


def logits(outputs) -> torch.Tensor:
    """The prediction tensor in a model's outputs: the tensor itself, ``outputs.logits``,
    ``outputs["logits"]`` or the first element of a tuple."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    if getattr(outputs, "logits", None) is not None:
        return outputs.logits
    if isinstance(outputs, tuple | list) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    raise TypeError(f"the model's outputs ({type(outputs).__name__}) hold no prediction tensor "
                    "(a tensor, .logits, ['logits'] or a tuple starting with one).")


def _mark(fn: Callable, attr: str) -> Callable:
    """A wrapper of ``fn`` carrying the mark (``fn`` itself, maybe a library function such as
    ``F.cross_entropy``, is never modified)."""
    if not callable(fn):
        raise TypeError(f"a loss must be callable, got {type(fn).__name__}.")

    @functools.wraps(fn)
    def marked(*args, **kwargs):
        return fn(*args, **kwargs)

    for other in ("takes_batch", "takes_targets"):
        marked.__dict__.pop(other, None)
    setattr(marked, attr, True)
    return marked


def takes_batch(fn: Callable) -> Callable:
    """Mark a loss as ``loss_fn(outputs, batch) -> scalar mean``: it gets the whole batch (tuple or
    dict), not just the targets. Use as a decorator."""
    return _mark(fn, "takes_batch")


def takes_targets(fn: Callable) -> Callable:
    """Mark a loss as ``loss_fn(outputs, targets) -> scalar mean`` also for dict batches (it then
    gets ``batch["labels"]``)."""
    return _mark(fn, "takes_targets")


def _own_loss(outputs):
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else getattr(outputs, "loss", None)
    if loss is None:
        raise TypeError("loss_fn is None, so the model's own loss is used, but its outputs carry "
                        "no .loss or ['loss'] (a Hugging Face model returns one when the batch "
                        "has 'labels'); pass a loss, e.g. loss='ce' or a callable.")
    return loss


def batch_loss(loss_fn: Callable | None, outputs, batch) -> torch.Tensor:
    """The loss of one batch under the contract (see the module docstring)."""
    if loss_fn is None:
        return _own_loss(outputs)
    if getattr(loss_fn, "takes_targets", False):
        t = targets(batch)
        if t is None:
            raise TypeError(f"the loss takes (outputs, targets) but the batch has no targets "
                            f"(a dict needs 'labels', a tuple (x, y)); {CONTRACT}.")
        return loss_fn(logits(outputs), t)
    if getattr(loss_fn, "takes_batch", False) or isinstance(batch, Mapping):
        try:
            return loss_fn(outputs, batch)
        except (TypeError, AttributeError) as err:
            if getattr(loss_fn, "takes_batch", False) or not _expects_tensors(err):
                raise
            raise TypeError(f"a dict batch calls loss_fn(outputs, batch), but this loss "
                            f"({_name(loss_fn)}) failed on the dict ({err}). Read what you need "
                            "from the batch (batch['labels']), mark a loss of (outputs, targets) "
                            f"with @toolkit.batches.takes_targets, or pass loss_fn=None to use "
                            f"the model's own .loss. {CONTRACT}.") from err
    t = targets(batch)
    if t is None:
        raise TypeError(f"the batch {type(batch).__name__} of length {len(batch)} has no targets "
                        f"(batch[1]) for loss_fn(outputs, targets); mark a loss that needs none "
                        f"with @toolkit.batches.takes_batch. {CONTRACT}.")
    return loss_fn(outputs, t)


def _expects_tensors(err: Exception) -> bool:
    msg = str(err)
    return any(s in msg for s in ("dict", "Tensor", "tensor", "subscriptable", "attribute"))


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
