"""Datasets that work offline: synthetic sets, scikit-learn's digits, MNIST-1D, and local vision files.

Every loader returns ``(train, test)`` as :class:`torch.utils.data.TensorDataset` objects
(``x`` float32; ``y`` int64 class labels, or float32 ``(N, k)`` regression targets) and takes a
``seed``: the same seed gives the same tensors. Wrappers (:func:`imbalance`, :func:`label_noise`,
:func:`subsample`) take a TensorDataset and return a new one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ._checks import check_choice, check_fraction

__all__ = ["VISION_DATASETS", "DATASETS", "gaussian_mixture", "teacher_regression", "regression_1d",
           "load_digits", "load_mnist1d", "data_root", "load_vision", "n_classes", "class_counts",
           "imbalance", "label_noise", "subsample", "load"]

VISION_DATASETS = ("mnist", "fashionmnist", "cifar10", "cifar100")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int):
    """Shuffle and split into (train, test) TensorDatasets."""
    check_fraction(test_fraction, "test_fraction")
    perm = torch.randperm(len(x), generator=_generator(seed))
    n_test = int(round(test_fraction * len(x)))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[test_idx], y[test_idx])


def gaussian_mixture(n_samples: int = 600, n_classes: int = 4, dim: int = 2, *,
                     separation: float = 3.0, test_fraction: float = 0.25, seed: int = 0):
    """C-class Gaussian mixture in ``dim`` dimensions, equal class sizes.

    Class means are drawn from N(0, I) and rescaled to norm ``separation``; each sample is its class
    mean plus N(0, I) noise. Larger ``separation`` means easier classification.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}.")
    if n_samples < n_classes:
        raise ValueError(f"n_samples ({n_samples}) must be at least n_classes ({n_classes}).")
    g = _generator(seed)
    means = torch.randn(n_classes, dim, generator=g)
    means = separation * means / means.norm(dim=1, keepdim=True)
    y = torch.arange(n_samples) % n_classes
    x = means[y] + torch.randn(n_samples, dim, generator=g)
    return _split(x.float(), y.long(), test_fraction, seed + 1)


def teacher_regression(n_samples: int = 256, dim: int = 8, *, teacher_width: int = 64,
                       noise: float = 0.0, test_fraction: float = 0.25, seed: int = 0):
    """Regression targets from a random one-hidden-layer ReLU teacher: y = a·relu(W x / √d) / √m + ε."""
    g = _generator(seed)
    x = torch.randn(n_samples, dim, generator=g)
    w = torch.randn(teacher_width, dim, generator=g)
    a = torch.randn(teacher_width, 1, generator=g)
    y = torch.relu(x @ w.T / math.sqrt(dim)) @ a / math.sqrt(teacher_width)
    y = y + noise * torch.randn(y.shape, generator=g)
    return _split(x.float(), y.float(), test_fraction, seed + 1)


_FUNCTIONS_1D = {
    "sin": lambda x: torch.sin(x),
    "sin_mix": lambda x: torch.sin(x) + 0.5 * torch.sin(3 * x),
    "step": lambda x: torch.sign(x),
    "quadratic": lambda x: (x / math.pi) ** 2,
}


def regression_1d(n_train: int = 20, n_test: int = 200, *, fn: str = "sin", noise: float = 0.0,
                  seed: int = 0):
    """1-D regression for kernel demos: train x uniform in [-π, π], test x on a regular grid.

    ``fn`` is one of ``sin``, ``sin_mix``, ``step``, ``quadratic``. Returns x of shape (N, 1) and y of
    shape (N, 1); noise is added to the training targets only.
    """
    if fn not in _FUNCTIONS_1D:
        raise ValueError(f"fn={fn!r} is unknown; choose one of {sorted(_FUNCTIONS_1D)}.")
    g = _generator(seed)
    f = _FUNCTIONS_1D[fn]
    x_train = (torch.rand(n_train, 1, generator=g) * 2 - 1) * math.pi
    y_train = f(x_train) + noise * torch.randn(n_train, 1, generator=g)
    x_test = torch.linspace(-math.pi, math.pi, n_test).unsqueeze(1)
    return TensorDataset(x_train, y_train.float()), TensorDataset(x_test, f(x_test).float())


def _standardize(x_train: np.ndarray, x_test: np.ndarray):
    mean, std = x_train.mean(0), x_train.std(0)
    std[std < 1e-8] = 1.0  # constant pixels (digits' borders) stay at zero instead of dividing by 0
    return (x_train - mean) / std, (x_test - mean) / std


def load_digits(*, test_fraction: float = 0.25, seed: int = 0):
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), flattened to 64 features.

    Features are standardised with the training split's mean and standard deviation. No download.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(bunch.data, bunch.target, test_size=test_fraction,
                                              random_state=seed, stratify=bunch.target)
    x_tr, x_te = _standardize(x_tr, x_te)
    return (TensorDataset(torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr).long()),
            TensorDataset(torch.tensor(x_te, dtype=torch.float32), torch.tensor(y_te).long()))


def load_mnist1d(*, n_samples: int = 4000, seed: int = 0):
    """MNIST-1D (Greydanus 2020, arXiv 2011.14439): 40-dimensional signals, 10 classes.

    Generated procedurally by the ``mnist1d`` package (no download); ``n_samples`` is the total
    number of examples, split 80/20 into train and test as the package does.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(n_samples)
    args.seed = int(seed)
    ds = make_dataset(args)
    x_tr, x_te = _standardize(ds["x"].astype(np.float64), ds["x_test"].astype(np.float64))
    return (TensorDataset(torch.tensor(x_tr, dtype=torch.float32), torch.tensor(ds["y"]).long()),
            TensorDataset(torch.tensor(x_te, dtype=torch.float32), torch.tensor(ds["y_test"]).long()))


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Folder for downloaded datasets: ``root``, else ``$TOOLKIT_DATA``, else ``~/.cache/toolkit/data``."""
    if root is not None:
        return Path(root).expanduser()
    default = Path.home() / ".cache" / "toolkit" / "data"
    return Path(os.environ.get("TOOLKIT_DATA", default)).expanduser()


_VISION_FOLDERS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST",
                   "cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def load_vision(name: str, root: str | os.PathLike | None = None, *, download: bool = False,
                train: bool = True) -> TensorDataset:
    """MNIST, FashionMNIST, CIFAR-10 or CIFAR-100 from the standard files in a local folder.

    Reads ``root`` (default ``$TOOLKIT_DATA``, else ``~/.cache/toolkit/data``) with torchvision
    (the optional ``[vision]`` extra). Downloads only when ``download=True``. Images are scaled to
    [0, 1] and normalised per channel with the training set's statistics; returns one split.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in VISION_DATASETS:
        raise ValueError(f"Unknown vision dataset {name!r}; choose one of {VISION_DATASETS}.")
    folder = data_root(root)
    expected = folder / _VISION_FOLDERS[key]
    if not download and not expected.exists():
        raise FileNotFoundError(
            f"No {name} files found: looked for {expected}. Put the standard files there, set "
            f"TOOLKIT_DATA to the folder that holds them, or call load_vision({name!r}, "
            "download=True) to download them.")
    try:
        import torchvision
    except Exception as err:  # ImportError, or torchvision built against another torch
        raise ImportError("load_vision needs torchvision: `pip install -e '.[vision]'` with a torch "
                          f"build that matches it ({err}).") from err
    cls = {"mnist": torchvision.datasets.MNIST, "fashionmnist": torchvision.datasets.FashionMNIST,
           "cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[key]
    def images(split):  # (N, C, H, W) floats in [0, 1]
        x = torch.as_tensor(np.asarray(split.data), dtype=torch.float32) / 255.0
        return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)

    ds = cls(str(folder), train=train, download=download)
    x = images(ds)
    # normalise with the training split's statistics, also for the test split
    ref_x = x if train else images(cls(str(folder), train=True, download=download))
    mean = ref_x.mean(dim=(0, 2, 3), keepdim=True)
    std = ref_x.std(dim=(0, 2, 3), keepdim=True)
    y = torch.as_tensor(np.asarray(ds.targets)).long()
    return TensorDataset((x - mean) / std, y)


def n_classes(dataset: TensorDataset) -> int:
    """Number of classes of a classification TensorDataset (max label + 1)."""
    y = dataset.tensors[1]
    if y.dtype.is_floating_point:
        raise ValueError("n_classes needs integer class labels; this dataset has float targets.")
    return int(y.max()) + 1


def _labels(dataset) -> torch.Tensor:
    if not isinstance(dataset, TensorDataset):
        raise TypeError(f"dataset must be a TensorDataset, got {type(dataset).__name__}.")
    y = dataset.tensors[1]
    if y.dtype.is_floating_point:
        raise ValueError("this wrapper needs integer class labels; the dataset has float targets.")
    return y


def class_counts(ratio: float, n_max: int, n_classes: int, *, profile: str = "step",
                 minority_classes: int | None = None) -> list[int]:
    """Exact per-class sample counts for an imbalance profile (class 0 is the largest).

    ``step``: the last ``minority_classes`` classes (default half) keep ``round(ratio·n_max)``
    samples, the others ``n_max``. ``longtail``: class c keeps ``round(n_max · ratio^(c/(C-1)))``,
    an exponential decay from ``n_max`` to ``ratio·n_max`` (Cui et al. 2019).
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"imbalance ratio must be in (0, 1] (minority/majority size), got {ratio}.")
    check_choice(profile, "profile", ("step", "longtail"))
    if profile == "step":
        k = n_classes // 2 if minority_classes is None else int(minority_classes)
        if not 0 <= k < n_classes:
            raise ValueError(f"minority_classes must be in [0, {n_classes}), got {k}.")
        return [n_max] * (n_classes - k) + [max(1, round(ratio * n_max))] * k
    return [max(1, round(n_max * ratio ** (c / max(n_classes - 1, 1))))  # longtail
            for c in range(n_classes)]


def imbalance(dataset: TensorDataset, *, ratio: float, profile: str = "step",
              minority_classes: int | None = None, seed: int = 0) -> TensorDataset:
    """Subsample classes to an imbalance profile with exact counts (see :func:`class_counts`).

    ``n_max`` is the size of the smallest class in ``dataset``, so every requested count exists.
    """
    y = _labels(dataset)
    C = int(y.max()) + 1
    n_max = int(torch.bincount(y, minlength=C).min())
    counts = class_counts(ratio, n_max, C, profile=profile, minority_classes=minority_classes)
    g = _generator(seed)
    keep = []
    for c, n_c in enumerate(counts):
        idx = torch.nonzero(y == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n_c]])
    keep = torch.sort(torch.cat(keep)).values
    return TensorDataset(*(t[keep] for t in dataset.tensors))


def label_noise(dataset: TensorDataset, fraction: float, *, seed: int = 0) -> TensorDataset:
    """Symmetric label noise: exactly ``round(fraction·N)`` labels replaced by a different class."""
    check_fraction(fraction, "label-noise fraction")
    y = _labels(dataset).clone()
    C = int(y.max()) + 1
    g = _generator(seed)
    flip = torch.randperm(len(y), generator=g)[:round(fraction * len(y))]
    # adding a shift in 1..C-1 modulo C always lands on another class, uniformly
    y[flip] = (y[flip] + torch.randint(1, C, (len(flip),), generator=g)) % C
    return TensorDataset(dataset.tensors[0], y, *dataset.tensors[2:])


def subsample(dataset: TensorDataset, n: int, *, stratified: bool = True,
              seed: int = 0) -> TensorDataset:
    """Keep ``n`` samples; ``stratified`` keeps class proportions (classification only)."""
    N = len(dataset)
    if not 0 < n <= N:
        raise ValueError(f"n must be in [1, {N}] for this dataset, got {n}.")
    g = _generator(seed)
    y = dataset.tensors[1]
    if stratified and not y.dtype.is_floating_point:
        from sklearn.model_selection import train_test_split
        if n == N:
            keep = torch.arange(N)
        else:
            keep, _ = train_test_split(np.arange(N), train_size=n, random_state=seed,
                                       stratify=y.numpy())
            keep = torch.as_tensor(np.sort(keep))
    else:
        keep = torch.sort(torch.randperm(N, generator=g)[:n]).values
    return TensorDataset(*(t[keep] for t in dataset.tensors))


DATASETS = {
    "gaussian_mixture": gaussian_mixture,
    "teacher_regression": teacher_regression,
    "regression_1d": regression_1d,
    "digits": load_digits,
    "mnist1d": load_mnist1d,
}


def load(name: str, **kwargs):
    """Load a dataset by name (``digits``, ``mnist1d``, synthetic names, or a vision name)."""
    if name in DATASETS:
        return DATASETS[name](**kwargs)
    if name.lower().replace("-", "").replace("_", "") in VISION_DATASETS:
        return (load_vision(name, train=True, **kwargs), load_vision(name, train=False, **kwargs))
    raise ValueError(f"Unknown dataset {name!r}; choose one of "
                     f"{sorted(DATASETS) + list(VISION_DATASETS)}.")
