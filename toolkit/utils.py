"""Small shared helpers: devices, seeds, the cache folder, data plumbing and notebook self-checks."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

_DEVICE_PREFS = ("auto", "cpu", "cuda", "mps")


def get_device(pref: str | torch.device = "auto") -> torch.device:
    """Return the device to compute on.

    ``"auto"`` picks CUDA if available, then Apple's MPS, then the CPU. Any other string
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is checked for availability, so a notebook run
    with ``DEVICE="cuda"`` on a CPU machine fails at once with a message instead of deep inside.
    """
    if isinstance(pref, torch.device):
        return pref
    if not isinstance(pref, str) or pref.split(":")[0] not in _DEVICE_PREFS:
        raise ValueError(f"device={pref!r} is not one of {_DEVICE_PREFS} (optionally 'cuda:N').")
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={pref!r} was asked for but CUDA is not available here; "
                         "use device='auto' or 'cpu', or install a CUDA build of torch.")
    if pref == "mps" and not (getattr(torch.backends, "mps", None) is not None
                              and torch.backends.mps.is_available()):
        raise ValueError("device='mps' was asked for but MPS is not available; use 'auto' or 'cpu'.")
    return torch.device(pref)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so that a run repeats exactly on the CPU."""
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))


def cache_dir(*parts: str) -> Path:
    """The folder for checkpoints and results: ``$TOOLKIT_CACHE`` or ``~/.cache/toolkit``.

    Extra ``parts`` name a subfolder. The folder is created. Nothing is ever cached in the repo.
    """
    root = Path(os.environ.get("TOOLKIT_CACHE", Path.home() / ".cache" / "toolkit")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def self_check(condition: bool, message: str) -> None:
    """Assert a notebook's claim at toy scale and say so.

    Prints ``SELF-CHECK PASSED: <message>`` (the line ``make demo`` counts) or raises
    ``AssertionError("SELF-CHECK FAILED: <message>")``.
    """
    if not bool(condition):
        raise AssertionError(f"SELF-CHECK FAILED: {message}")
    print(f"SELF-CHECK PASSED: {message}")


def as_tensors(data, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x, y)`` from an ``(x, y)`` pair, a ``TensorDataset``, a ``Dataset`` or a ``DataLoader``.

    Datasets and loaders are concatenated into memory; use :func:`iterate_batches` to stream.
    """
    if isinstance(data, tuple | list) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        x, y = data
    elif isinstance(data, TensorDataset):
        x, y = data.tensors[0], data.tensors[1]
    elif isinstance(data, DataLoader | Dataset):
        xs, ys = zip(*iterate_batches(data))
        x, y = torch.cat(xs), torch.cat(ys)
    else:
        raise TypeError("data must be an (x, y) pair of tensors, a TensorDataset, a Dataset or a "
                        f"DataLoader, got {type(data).__name__}.")
    if len(x) != len(y):
        raise ValueError(f"x and y have different lengths ({len(x)} vs {len(y)}).")
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


def iterate_batches(data, batch_size: int | None = None,
                    device: torch.device | str | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield ``(x, y)`` batches in order (no shuffling).

    ``data``: an ``(x, y)`` pair, a Dataset or a DataLoader. ``batch_size=None`` yields one full batch
    for tensors/datasets, or the loader's own batches.
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    if isinstance(data, DataLoader):
        batches = data
    else:
        if isinstance(data, tuple | list) and len(data) == 2:
            x, y = data
        elif isinstance(data, TensorDataset):
            x, y = data.tensors[0], data.tensors[1]
        elif isinstance(data, Dataset):
            batches = DataLoader(data, batch_size=batch_size or 1024, shuffle=False)
            x = None
        else:
            raise TypeError("data must be an (x, y) pair, a Dataset or a DataLoader, "
                            f"got {type(data).__name__}.")
        if x is not None:
            n = len(x)
            step = batch_size or max(n, 1)
            batches = ((x[i:i + step], y[i:i + step]) for i in range(0, n, step))
    for batch in batches:
        xb, yb = batch[0], batch[1]
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        yield xb, yb


_FALSE = ("", "0", "false", "no", "off")


def progress_enabled(enabled: bool = True) -> bool:
    """Whether a progress bar shows: ``enabled`` and the environment variable ``TQDM_DISABLE``
    unset (or ``0``/``false``); ``TQDM_DISABLE=1`` silences every bar of the toolkit."""
    return bool(enabled) and os.environ.get("TQDM_DISABLE", "").strip().lower() in _FALSE


def progress(iterable=None, *, enabled: bool = True, **kwargs):
    """A ``tqdm.auto`` progress bar over ``iterable`` (or ``total=...`` without one), the one
    through which every bar of the toolkit goes: hidden when ``enabled`` is False (a function's
    ``progress=False``) or ``TQDM_DISABLE=1`` is set. Extra ``kwargs`` go to tqdm
    (``desc``, ``total``, ``leave``...)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=not progress_enabled(enabled), **kwargs)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it into place.

    A run killed while saving leaves the previous checkpoint intact, never a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``with eval_mode(model):`` — the model in evaluation mode inside, its own mode restored after.

    Restores the mode of every submodule as it was (a model may mix train- and eval-mode parts),
    also when the body raises.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


class InputCapture:
    """Forward pre-hooks that keep the (detached, flattened to ``(N, -1)``) input of some modules.

    ``with InputCapture({"h": model.head}) as cap: model(x); h = cap.pop("h")``. The hooks are
    removed on exit, also when the forward pass raises.
    """

    def __init__(self, modules: dict[str, torch.nn.Module], *, flatten: bool = True):
        self.store: dict[str, torch.Tensor] = {}
        self.flatten = flatten
        self._handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str):
        def hook(module, inputs):
            x = inputs[0].detach()
            self.store[name] = x.flatten(1) if self.flatten else x
        return hook

    def pop(self, name: str) -> torch.Tensor:
        """The captured input of ``name`` (removed from the store)."""
        if name not in self.store:
            raise ValueError(f"layer {name!r} was not called during the forward pass; pick a "
                             "module that the model's forward uses.")
        return self.store.pop(name)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> InputCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (the exponent of a power law y ∝ x^s)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"x and y must be 1-D of the same length ≥ 2, got {x.shape} and {y.shape}.")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("x and y must be positive for a log-log slope.")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


__all__ = ["get_device", "seed_everything", "cache_dir", "self_check", "as_tensors",
           "iterate_batches", "progress", "progress_enabled", "model_device", "atomic_save",
           "eval_mode", "InputCapture", "loglog_slope"]
