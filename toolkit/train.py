"""Training: one ``fit`` function with losses, optimisers (SGD, Adam, SAM/ASAM), schedules,
callbacks, progress bars and atomic, resumable checkpoints.

The history is a pandas DataFrame with one row per epoch, **including epoch 0**, the evaluation at
initialisation, so that every curve starts where training starts.

Launched by ``torchrun`` (several processes), ``fit`` trains with DistributedDataParallel: every
rank draws the same global shuffle, takes its contiguous share of each global mini-batch, and the
averaged gradients equal the single-process gradient of the same global batch, so N ranks follow the
one-process trajectory up to floating-point summation order (see :func:`fit`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import batches as B
from . import distributed as dist_utils
from . import utils as _utils
from ._checks import check_choice
from ._train_data import (
    CLASSIFICATION_LOSSES,
    check_dtype,
    check_inputs,
    check_targets_once,
    data_checker,
    loader_generators,
    prepare_data,
)
from .utils import atomic_save, get_device, seed_everything

__all__ = ["CHECKPOINT_NAME", "mse_loss", "label_smoothing_loss", "maxsup_loss", "LOSSES",
           "CLASSIFICATION_LOSSES", "get_loss", "ASAM_ETA", "sam_scale", "SAM", "OPTIMIZERS",
           "make_optimizer", "lr_factor", "EVAL_METRICS", "evaluate", "CheckpointError",
           "NonFiniteLossError", "save_checkpoint", "load_checkpoint", "fit"]

CHECKPOINT_NAME = "checkpoint.pt"

# ----------------------------------------------------------------------------------------- losses


def _is_classification(targets: torch.Tensor) -> bool:
    return not targets.dtype.is_floating_point


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error, mean over samples and output dimensions (``F.mse_loss``).

    Integer class labels are turned into one-hot targets (Hui & Belkin 2020, arXiv 2006.07322).
    """
    if _is_classification(targets):
        targets = F.one_hot(targets, outputs.shape[-1]).to(outputs.dtype)
    if outputs.shape != targets.shape:
        raise ValueError(f"mse: outputs {tuple(outputs.shape)} and targets "
                         f"{tuple(targets.shape)} differ in shape.")
    return F.mse_loss(outputs, targets)


def label_smoothing_loss(outputs: torch.Tensor, targets: torch.Tensor,
                         smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy against (1−s)·one-hot + s/K (Szegedy et al. 2016, arXiv 1512.00567)."""
    return F.cross_entropy(outputs, targets, label_smoothing=smoothing)


def maxsup_loss(outputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    r"""MaxSup (Zhou et al. 2025, arXiv 2502.15798): CE + α·(z_max − mean_k z_k).

    Label smoothing equals CE plus α·(z_gt − mean_k z_k) up to a constant; MaxSup penalises the
    top-1 logit instead of the ground-truth one, so a wrong confident prediction is penalised too
    and correct samples are not pulled into ever tighter clusters.
    """
    ce = F.cross_entropy(outputs, targets)
    reg = outputs.max(dim=1).values - outputs.mean(dim=1)
    return ce + alpha * reg.mean()


# Named losses take (outputs, targets), also from a dict batch's "labels" (toolkit.batches).
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": B.takes_targets(lambda outputs, targets: F.cross_entropy(outputs, targets)),
    "mse": B.takes_targets(mse_loss),
    "label_smoothing": B.takes_targets(label_smoothing_loss),
    "maxsup": B.takes_targets(maxsup_loss),
}


def _with_kwargs(fn: Callable, kwargs: dict) -> Callable:
    """``fn`` with ``kwargs`` bound, keeping its batch-contract mark."""
    if not kwargs:
        return fn
    bound = functools.partial(fn, **kwargs)
    if getattr(fn, "takes_batch", False):
        return B.takes_batch(bound)
    if getattr(fn, "takes_targets", False):
        return B.takes_targets(bound)
    return bound


def get_loss(name: str | Callable | None,
             **kwargs) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """A loss callable from its name, or the callable itself (with ``kwargs`` bound).

    Names: ``ce``, ``mse``, ``label_smoothing`` (``smoothing=0.1``), ``maxsup`` (``alpha=0.1``);
    they take ``(outputs, targets)``. A callable is ``loss(outputs, targets)``, or
    ``loss(outputs, batch)`` when marked with :func:`toolkit.batches.takes_batch` or given dict
    batches (see :mod:`toolkit.batches`). ``None`` means the model's own loss (``outputs.loss``).
    """
    if name is None:
        if kwargs:
            raise ValueError("loss_kwargs were given without a loss; pass loss=... as well.")
        return None
    if callable(name):
        return _with_kwargs(name, kwargs)
    if not isinstance(name, str):
        raise TypeError("the loss (loss= / loss_fn=) must be a callable(outputs, targets) -> "
                        f"scalar mean loss or a name such as 'ce' or 'mse', got "
                        f"{type(name).__name__}.")
    if name not in LOSSES:
        raise ValueError(f"loss={name!r} is unknown; choose one of {sorted(LOSSES)} "
                         "or pass a callable(outputs, targets).")
    return _with_kwargs(LOSSES[name], kwargs)


# ------------------------------------------------------------------------------------ optimisers


ASAM_ETA = 0.01  # Kwon et al. 2021's default offset (their official code, eta=0.01)


def sam_scale(w: torch.Tensor, adaptive: bool, eta: float = ASAM_ETA) -> torch.Tensor:
    r"""SAM's normalisation operator T (as its diagonal): ones for SAM, |w| + η for ASAM.

    Kwon et al. 2021 (arXiv 2102.11600) perturb within ‖T⁻¹ε‖ ≤ ρ with T = diag(|w|) + η I; the
    offset η perturbs weights that are exactly zero (zero-initialised biases) and keeps ‖T⁻¹ε‖
    finite. ``eta=0`` gives the scale-only operator.
    """
    return w.abs() + eta if adaptive else torch.ones_like(w)


class SAM(torch.optim.Optimizer):
    r"""Sharpness-aware minimisation (Foret et al. 2021, arXiv 2010.01412) and its adaptive
    variant ASAM (Kwon et al. 2021, arXiv 2102.11600) on top of any base optimiser.

    One step: g = ∇L(w); ε = ρ·T²g/‖Tg‖ with T = I (SAM) or T = diag(|w| + η) (ASAM, see
    :func:`sam_scale`); then the base optimiser steps from w with the gradient ∇L(w + ε). ``step``
    needs a closure that zeroes the gradients, computes the loss and calls ``backward``.
    """

    def __init__(self, params: Iterable, base_optimizer_cls: type = torch.optim.SGD,
                 rho: float = 0.05, adaptive: bool = False, asam_eta: float = ASAM_ETA,
                 **base_kwargs):
        if rho < 0:
            raise ValueError(f"rho must be non-negative, got {rho}.")
        if asam_eta < 0:
            raise ValueError(f"asam_eta must be non-negative, got {asam_eta}.")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, asam_eta=asam_eta,
                                      **base_kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def perturbation(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """ε for every parameter with a gradient, from the gradients currently stored."""
        pairs = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    scale = sam_scale(p, group["adaptive"], group["asam_eta"])
                    pairs.append((p, group, scale))
        norm = torch.sqrt(sum(((s * p.grad) ** 2).sum() for p, _, s in pairs))
        return [(p, g["rho"] * s**2 * p.grad / (norm + 1e-12)) for p, g, s in pairs]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and calls "
                             "backward.")
        with torch.enable_grad():
            loss = closure()
        eps = self.perturbation()
        for p, e in eps:
            p.add_(e)
        with torch.enable_grad():
            closure()
        for p, e in eps:
            p.sub_(e)
        self.base_optimizer.step()
        return loss

    def state_dict(self):
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.base_optimizer.load_state_dict(state_dict)


OPTIMIZERS = ("sgd", "adam", "adamw", "sam")


def make_optimizer(name: str, params, *, lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0, rho: float = 0.05,
                   adaptive: bool = False, asam_eta: float = ASAM_ETA) -> torch.optim.Optimizer:
    """Optimiser by name: ``sgd``, ``adam``, ``adamw`` or ``sam`` (SAM/ASAM over SGD)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sam":
        return SAM(params, torch.optim.SGD, rho=rho, adaptive=adaptive, asam_eta=asam_eta, lr=lr,
                   momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r} is unknown; choose one of {OPTIMIZERS}.")


def lr_factor(schedule, epoch: int, epochs: int) -> float:
    """Learning-rate factor for (0-based) ``epoch``: None, ``cosine``, ``step`` or a callable."""
    if schedule is None:
        return 1.0
    if callable(schedule):
        return float(schedule(epoch))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule == "step":  # ×0.1 at 50 % and again at 75 % of training, as Papyan et al. 2020
        return 0.1 ** ((epoch >= epochs // 2) + (epoch >= (3 * epochs) // 4))
    raise ValueError(f"schedule={schedule!r} is unknown; choose None, 'cosine', 'step' "
                     "or a callable(epoch) -> factor.")


# ------------------------------------------------------------------------------------ evaluation


EVAL_METRICS = ("loss", "acc")


def _check_metrics(metrics) -> tuple[str, ...]:
    """``metrics`` is a non-empty selection of :data:`EVAL_METRICS`."""
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise ValueError(f"metrics must be a non-empty tuple drawn from {EVAL_METRICS}, e.g. "
                         f"metrics=('loss',), got {metrics!r}.")
    for name in metrics:
        check_choice(name, "each entry of metrics", EVAL_METRICS)
    if "loss" not in metrics:
        raise ValueError(f"metrics must include 'loss' (fit records it every epoch), got "
                         f"{metrics!r}; use metrics=('loss',) or ('loss', 'acc').")
    return tuple(metrics)


@torch.no_grad()
def _eval_sums(model: nn.Module, data, loss_fn, batch_size, device,
               accuracy: bool = True, check: Callable | None = None,
               where: str = "data") -> tuple[float, int, int, bool]:
    """(sum of per-batch mean loss × batch size, number correct, number seen, classification?);
    correct predictions are counted only with ``accuracy`` and integer labels, one per sample.
    ``check(outputs, batch, where)`` validates each batch first (finite data, class labels)."""
    was_training = model.training
    model.eval()
    total, n, correct, classification = 0.0, 0, 0, None
    for i, batch in enumerate(B.iterate(data, batch_size, device)):
        size = B.batch_len(batch)
        if size == 0:
            continue
        if check is None:
            out = B.model_output(model, batch)
        else:
            check(None, batch, f"{where} batch {i}")
            try:
                out = B.model_output(model, batch)
            except (IndexError, RuntimeError) as err:  # e.g. a model computing its own loss
                raise type(err)(f"{err} (while evaluating {where} batch {i}: if the model "
                                "computes its loss from the batch's 'labels', check that they "
                                "are class indices in [0, number of classes))") from err
            check(out, batch, f"{where} batch {i}")
        total += float(B.batch_loss(loss_fn, out, batch)) * size
        n += size
        yb = B.targets(batch)
        classification = bool(accuracy and isinstance(yb, torch.Tensor) and yb.ndim == 1
                              and _is_classification(yb))
        if classification:
            pred = B.logits(out)
            classification = pred.ndim == 2 and len(pred) == len(yb)
            if classification:
                correct += int((pred.argmax(dim=1) == yb).sum())
    model.train(was_training)
    return total, correct, n, bool(classification)


def _summary(total: float, correct: float, n: float, accuracy: bool) -> dict:
    result = {"loss": total / max(n, 1)}
    if accuracy:
        result["acc"] = correct / max(n, 1)
    return result


def evaluate(model: nn.Module, data, *, loss="ce", batch_size: int | None = None,
             device=None, loss_kwargs: dict | None = None,
             metrics: Sequence[str] = EVAL_METRICS) -> dict:
    """Mean loss (and accuracy for integer labels) of ``model`` on ``data``, in eval mode.

    ``data`` follows :mod:`toolkit.batches`: an ``(x, y)`` pair, a dict of tensors, a Dataset, a
    DataLoader or a list of ready batches (tuples or dicts); ``loss`` a name, a callable (see
    :func:`get_loss`) or None for the model's own ``outputs.loss``. ``metrics``: what to report,
    a selection of ``("loss", "acc")``. Pass ``("loss",)`` when the outputs are not class logits
    (embeddings trained with a contrastive loss): the argmax of an embedding is no prediction.
    Accuracy is only ever computed for integer labels, one per sample. With a named
    classification loss the data are checked first: finite inputs, integer labels in range.
    """
    loss_fn = get_loss(loss, **(loss_kwargs or {}))
    metrics = _check_metrics(metrics)
    device = device or _utils.model_device(model)
    if B.is_tensor_pair(data):
        check_dtype("data", tuple(data), model)
    return _evaluate(model, data, loss_fn, batch_size, device, metrics,
                     check=data_checker(loss), where="data")


def _evaluate(model, data, loss_fn, batch_size, device, metrics, check=None, where="data"):
    total, correct, n, classification = _eval_sums(model, data, loss_fn, batch_size, device,
                                                   "acc" in metrics, check=check, where=where)
    if n == 0:
        raise ValueError(f"{where} is empty (0 samples); pass at least one sample.")
    return _summary(total, correct, n, classification)


def _evaluate_sharded(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], loss_fn,
                      batch_size, device, metrics: Sequence[str] = EVAL_METRICS) -> dict:
    """:func:`evaluate` with each rank on its contiguous shard and the sums all-reduced."""
    x, y = data
    accuracy = "acc" in metrics and _is_classification(y)
    idx = dist_utils.shard_indices(len(x)).to(x.device)
    total, correct, n, _ = _eval_sums(model, (x[idx], y[idx]), loss_fn, batch_size, device,
                                      accuracy)
    sums = dist_utils.all_reduce_sum(torch.tensor([total, correct, n], dtype=torch.float64,
                                                  device=device))
    return _summary(*sums.tolist(), accuracy)


# ------------------------------------------------------------------------------------- checkpoints


def _config(**kwargs) -> dict:
    """The settings a checkpoint must share with the run that resumes it (epochs may grow)."""
    out = {}
    for k, v in kwargs.items():
        out[k] = v if isinstance(v, int | float | str | bool | type(None)) else getattr(
            v, "__qualname__", type(v).__name__)
    return out


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used (truncated, corrupted, not written by
    :func:`fit`). The file is never overwritten; the message names it and how to start over."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; :func:`fit` stopped before writing a checkpoint.

    Attributes: ``epoch`` (1-based, the epoch in which it happened), ``history`` (a DataFrame of
    the epochs completed before it) and ``checkpoint`` (the path of the last good checkpoint on
    disk, or None).
    """

    def __init__(self, message: str, *, epoch: int, history: pd.DataFrame,
                 checkpoint: Path | None):
        super().__init__(message)
        self.epoch, self.history, self.checkpoint = epoch, history, checkpoint


_CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "history", "rng_shuffle", "rng_torch",
                    "config")
_START_OVER = "delete it or pass a new checkpoint path to start over"


def save_checkpoint(path: Path, *, model, optimizer, epoch, history, generator, config,
                    sampler_rng: torch.Generator | None = None,
                    loader_rngs: Sequence[torch.Generator] = ()) -> None:
    """Atomically write everything needed to resume bit-identically (with a batch sampler's
    generator state, ``rng_sampler``, when :func:`fit` was given one, and a DataLoader's
    generators, ``rng_loader``)."""
    state = {"format": 1, "epoch": epoch, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "history": history,
             "rng_shuffle": generator.get_state(), "rng_torch": torch.get_rng_state(),
             "config": config}
    if sampler_rng is not None:
        state["rng_sampler"] = sampler_rng.get_state()
    if loader_rngs:
        state["rng_loader"] = [g.get_state() for g in loader_rngs]
    atomic_save(state, path)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`fit` (``weights_only=True``: no code is unpickled).

    A missing file raises ``FileNotFoundError``; a file that cannot be read or is not a
    checkpoint of :func:`fit` raises :class:`CheckpointError` naming the path (the file is left
    as it is).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, a folder, unsafe pickled code...
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"the checkpoint at {path} cannot be read ({type(err).__name__}: {first}); it is "
            f"truncated, corrupted or not a file written by toolkit.train.fit. It was left "
            f"untouched: {_START_OVER} (checkpoint_dir=..., or resume=False to overwrite it)."
        ) from err
    missing = ([k for k in _CHECKPOINT_KEYS if k not in ckpt] if isinstance(ckpt, dict)
               else list(_CHECKPOINT_KEYS))
    if missing:
        raise CheckpointError(
            f"the file at {path} is not a checkpoint written by toolkit.train.fit (missing "
            f"{missing}). It was left untouched: {_START_OVER} (checkpoint_dir=..., or "
            "resume=False to overwrite it).")
    return ckpt


def _restore(ckpt: dict, path: Path, model, optimizer, generator, config) -> None:
    diff = {k: (ckpt["config"].get(k), v) for k, v in config.items()
            if ckpt["config"].get(k) != v}
    if diff:
        raise ValueError(f"The checkpoint at {path} was written with other settings "
                         f"(checkpoint value, this run) {diff}. Use another checkpoint_dir, pass "
                         "resume=False to start over, or delete the file.")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise ValueError(f"The checkpoint at {path} is for a model of a different shape; refusing "
                         "to start over silently. Use another checkpoint_dir or delete the file. "
                         f"({str(err).splitlines()[0]})") from err
    optimizer.load_state_dict(ckpt["optimizer"])
    generator.set_state(ckpt["rng_shuffle"])
    torch.set_rng_state(ckpt["rng_torch"])


# -------------------------------------------------------------------------------------------- fit


def _wrap_for_training(model: nn.Module, device: torch.device, distributed: bool,
                       compile_model: bool) -> nn.Module:
    """The module the training steps call: DDP under torchrun, then torch.compile if asked."""
    net = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if has_bn and device.type != "cuda":
            warnings.warn("BatchNorm under DDP on the CPU normalises each rank's share of the "
                          "batch (SyncBatchNorm needs CUDA); results differ slightly from one "
                          "process.", stacklevel=3)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                      else None)
    if compile_model:
        net = torch.compile(net)
    return net


def _local_batch(order: torch.Tensor | None, start: int, step: int, n: int, distributed: bool,
                 device: torch.device) -> tuple[torch.Tensor | slice, float]:
    """This rank's indices in the global batch ``[start, start + step)`` and its loss weight.

    One process: the whole global batch, weight 1. Under DDP each rank takes its contiguous block of
    the global batch (the same permutation on every rank) and scales its mean loss by
    ``n_local · world / n_global``: DDP averages gradients over ranks, so the result is exactly the
    gradient of the global batch's mean loss, also when the last batch does not split evenly.
    """
    stop = min(start + step, n)
    if not distributed:
        return (order[start:stop] if order is not None else slice(None)), 1.0
    glob = order[start:stop] if order is not None else torch.arange(start, stop, device=device)
    local = dist_utils.shard_range(len(glob))
    weight = len(local) * dist_utils.world_size() / len(glob)
    return glob[local.start:local.stop], weight


def fit(model: nn.Module, train, *, test=None, loss: str | Callable = "ce",
        optimizer: str = "sgd", lr: float = 0.1, momentum: float = 0.0,
        weight_decay: float = 0.0, epochs: int = 10, batch_size: int | None = None,
        schedule=None, device: str | torch.device = "auto", seed: int = 0,
        callbacks: Sequence[Callable] = (), callback_every: int = 1,
        checkpoint_dir: str | Path | None = None, checkpoint_every: int = 10,
        resume: bool = True, progress: bool = True, amp: bool = False, rho: float = 0.05,
        adaptive: bool = False, asam_eta: float = ASAM_ETA, loss_kwargs: dict | None = None,
        compile: bool = False, metrics: Sequence[str] = EVAL_METRICS,
        batch_sampler=None, on_nonfinite: str = "raise") -> pd.DataFrame:
    """Train ``model`` on ``train`` and return the history (one row per epoch, epoch 0 included).

    **Data** (``train``, ``test``) follow :mod:`toolkit.batches`: an ``(x, y)`` pair, a
    ``TensorDataset``/``Dataset``/``DataLoader`` of ``(x, y)`` tuples (read into memory), a dict
    of tensors (columns, e.g. ``{"input_ids": ..., "labels": ...}``) or a ``Dataset`` of dicts
    (stacked into columns), all shuffled and batched by ``fit`` itself; or a ``DataLoader`` of
    dicts or a list of ready batches, used batch by batch as they come (their own shuffling and
    padding; ``batch_size`` must then be None). Tuple batches call ``model(x)``, dict batches
    ``model(**batch)``. Model and data are moved to ``device``.

    **Checks before training** (in-memory data): no NaN/inf in the data, inputs of the model's
    dtype, and for ``loss="ce"``/``"label_smoothing"``/``"maxsup"`` (and ``"mse"`` on integer
    labels) integer labels in ``[0, output width)``; a stream's batches are checked as they are
    first evaluated. A loss that becomes non-finite stops the run with
    :class:`NonFiniteLossError` (the epoch, a hint, the history so far), before anything is
    written: the last good checkpoint on disk is kept. With ``on_nonfinite="stop"`` (for sweeps
    where divergence is an outcome, e.g. over learning rates) the run stops the same way but
    returns the history with a last row whose ``train_loss`` is ``inf``. A checkpoint that
    cannot be read raises :class:`CheckpointError` and is never overwritten.

    ``batch_size=None`` is full-batch gradient descent (one step per epoch). Mini-batches are drawn
    by a ``torch.Generator`` seeded with ``seed``, so a run is reproducible and its checkpoints
    resume bit-identically on the CPU. Callbacks are ``callable(epoch, model, history_rows)``
    returning a dict of extra columns (or None); they run in eval mode at epoch 0, every
    ``callback_every`` epochs and at the end. With ``checkpoint_dir``, a checkpoint is written
    atomically every ``checkpoint_every`` epochs and at the end (with ``epochs=0``, once for the
    initialisation); with ``resume=True`` a run restarted with the same arguments continues from it
    (a finished run just returns its history).

    ``amp=True`` trains in bfloat16 autocast on CUDA (float16 with loss scaling where bf16 is
    missing); analyses never autocast (see :mod:`toolkit.distributed`). ``compile=True`` runs the
    training steps through ``torch.compile`` (evaluation and callbacks use the plain module).
    ``optimizer="sam"`` is SAM over SGD with radius ``rho``; ``adaptive=True`` makes it ASAM with
    the offset ``asam_eta`` (:func:`sam_scale`).

    ``loss`` is a name (see :func:`get_loss`) or any ``callable(outputs, targets) -> scalar`` mean
    loss, with ``loss_kwargs`` passed to it, e.g. a contrastive loss on embeddings
    (``toolkit.collapse.supcon_loss``); a loss marked with :func:`toolkit.batches.takes_batch`
    (or any callable given dict batches) is called as ``loss(outputs, batch)``, and ``loss=None``
    uses the model's own ``outputs.loss`` (Hugging Face models given ``labels``). ``metrics``
    picks the history columns evaluated each epoch, from ``("loss", "acc")``: the accuracy
    (``argmax`` of the outputs against integer labels) is only meaningful when the outputs are
    class logits, so pass ``metrics=("loss",)`` for an embedding network. Accuracy is never
    computed for floating (regression) targets.

    ``batch_sampler`` replaces the built-in shuffling: an iterable (e.g. a
    ``torch.utils.data.Sampler``) that yields, once per epoch, the lists of training indices of
    each step, such as :class:`toolkit.collapse.BatchBindingSampler`. It excludes ``batch_size``
    (evaluation is then full batch) and a multi-process run. If it has a ``generator``
    (``torch.Generator``), that generator's state is saved in the checkpoint and restored, so a
    resumed run draws the same batches as an uninterrupted one; ``batch_sampler.config`` (a dict,
    if present) must match on resume.

    **Several processes.** Under ``torchrun`` (or any initialised process group with more than one
    rank) the model is wrapped in ``DistributedDataParallel``: NCCL on ``cuda:LOCAL_RANK``, gloo on
    the CPU. ``batch_size`` stays the *global* batch: every rank draws the same shuffle from
    ``seed``, takes its contiguous share of each global batch, and weights its mean loss so that
    the averaged gradient equals the one-process gradient; N ranks therefore follow the one-process
    run within float tolerance (BatchNorm on the CPU excepted: its statistics are per rank).
    Evaluation is split across ranks and all-reduced; callbacks run on every rank (they may use
    collectives); only rank 0 shows the progress bar and writes checkpoints, the others wait at a
    barrier. The loss must be a mean over samples (all named losses are).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None (full batch), "
                         f"got {batch_size!r}.")
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}.")
    if callback_every < 1 or checkpoint_every < 1:
        raise ValueError("callback_every and checkpoint_every must be at least 1.")
    if batch_sampler is not None:
        if batch_size is not None:
            raise ValueError("pass either batch_size or batch_sampler, not both (the sampler "
                             "decides the batches).")
        if not hasattr(batch_sampler, "__iter__"):
            raise TypeError("batch_sampler must be an iterable of index lists (a "
                            f"torch.utils.data.Sampler), got {type(batch_sampler).__name__}.")
    sampler_rng = getattr(batch_sampler, "generator", None)
    sampler_rng = sampler_rng if isinstance(sampler_rng, torch.Generator) else None
    loss_fn = get_loss(loss, **(loss_kwargs or {}))
    metrics = _check_metrics(metrics)
    check_choice(on_nonfinite, "on_nonfinite", ("raise", "stop"))
    lr_factor(schedule, 0, max(epochs, 1))  # validates the schedule up front
    device = get_device(device)
    if dist_utils.launched_by_torchrun():
        device = dist_utils.init_from_env(device)
    distributed = dist_utils.is_distributed()
    main = dist_utils.is_main()
    if distributed and batch_sampler is not None:
        raise ValueError("batch_sampler is not supported in a multi-process run; use batch_size.")
    if amp and device.type != "cuda":
        warnings.warn("amp=True only applies on CUDA; training in float32 on "
                      f"{device.type}.", stacklevel=2)
        amp = False
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16

    train_mem, train_stream, n_train = prepare_data("train", train)
    test_mem, test_stream, _ = (None, None, None) if test is None else prepare_data("test", test)
    train_mem = B.to_device(train_mem, device)
    test_data = B.to_device(test_mem, device) if test_mem is not None else test_stream
    train_data = train_mem if train_mem is not None else train_stream
    if train_stream is not None:
        if batch_size is not None or batch_sampler is not None:
            raise ValueError("train is a DataLoader of dicts or a list of ready batches, which "
                             "decide the batches themselves; pass batch_size=None and no "
                             "batch_sampler (set the batch size on the DataLoader).")
    if distributed and not (isinstance(train_mem, tuple)
                            and (test_data is None or isinstance(test_data, tuple))):
        raise ValueError("a multi-process run needs in-memory (x, y) tensors for train and test; "
                         "dict batches and DataLoaders of dicts train in one process.")
    if distributed and batch_size is not None and batch_size < dist_utils.world_size():
        raise ValueError(f"batch_size={batch_size} is smaller than the number of processes "
                         f"({dist_utils.world_size()}); batch_size is the global batch, so use at "
                         "least one sample per process.")
    model.to(device)  # fit moves the model and the data to `device`
    for name, mem in (("train", train_mem), ("test", test_data if test_mem is not None else None)):
        if mem is not None:  # once, up front: finite values, dtypes, class labels in range
            check_inputs(name, mem, model, amp)
            check_targets_once(name, mem, model, loss)
    # a stream's batches are checked as they are first evaluated (epoch 0 or the resumed epoch)
    stream_check = [data_checker(loss)] if train_stream is not None or test_stream is not None \
        else [None]
    seed_everything(seed)
    if distributed and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr, momentum=momentum,
                         weight_decay=weight_decay, rho=rho, adaptive=adaptive,
                         asam_eta=asam_eta)
    scaler = torch.amp.GradScaler("cuda") if amp and amp_dtype == torch.float16 else None
    if scaler is not None and optimizer == "sam":
        raise ValueError("SAM with float16 AMP is not supported; use a bf16-capable GPU or "
                         "amp=False.")
    generator = torch.Generator().manual_seed(seed)
    loader_rngs = loader_generators(train_stream)
    config = _config(loss=loss, optimizer=optimizer, lr=lr, momentum=momentum,
                     weight_decay=weight_decay, batch_size=batch_size, seed=seed,
                     schedule=schedule, rho=rho, adaptive=adaptive,
                     **({"asam_eta": asam_eta} if adaptive else {}), n_train=n_train,
                     loss_kwargs=str(sorted((loss_kwargs or {}).items())),
                     **({} if batch_sampler is None else {"batch_sampler": str(sorted(
                         getattr(batch_sampler, "config", {"type": type(batch_sampler).__name__})
                         .items()))}))
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None

    history: list[dict] = []
    start = 0
    saved_epoch = None  # the epoch of the checkpoint on disk, if any
    if ckpt_path is not None and resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        _restore(ckpt, ckpt_path, model, opt, generator, config)
        if sampler_rng is not None and "rng_sampler" in ckpt:
            sampler_rng.set_state(ckpt["rng_sampler"])
        for g, state in zip(loader_rngs, ckpt.get("rng_loader", [])):
            g.set_state(state)
        history, start = list(ckpt["history"]), int(ckpt["epoch"])
        saved_epoch = start
        if start >= epochs:
            return pd.DataFrame([r for r in history if r["epoch"] <= epochs])
    net = _wrap_for_training(model, device, distributed, compile)

    def record(epoch: int) -> None:
        row = {"epoch": epoch, "lr": lr * lr_factor(schedule, max(epoch - 1, 0), epochs)}
        for prefix, data in (("train", train_data), ("test", test_data)):
            if data is not None:
                values = (_evaluate_sharded(model, data, loss_fn, batch_size, device, metrics)
                          if distributed else
                          _evaluate(model, data, loss_fn, batch_size, device, metrics,
                                    check=stream_check[0] if not isinstance(data, tuple | dict)
                                    else None, where=prefix))
                for k, v in values.items():
                    row[f"{prefix}_{k}"] = v
        stream_check[0] = None
        if epoch > 0 and not math.isfinite(row["train_loss"]):  # before callbacks see it
            raise diverged(epoch - 1, row["train_loss"])
        if epoch % callback_every == 0 or epoch == epochs:
            model.eval()
            for cb in callbacks:
                extra = cb(epoch, model, history)
                if extra:
                    row.update({k: (float(v.detach())
                                    if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
                                for k, v in extra.items()})
            model.train()
        history.append(row)

    def diverged(epoch: int, value) -> NonFiniteLossError:
        cur = lr * lr_factor(schedule, epoch, epochs)
        kept = (f"The last good checkpoint (epoch {saved_epoch}) is kept, untouched, at "
                f"{ckpt_path}; resuming it repeats these settings, so pass a new checkpoint_dir "
                "(or resume=False) to start over with the fix." if saved_epoch is not None else
                "No checkpoint had been written yet." if ckpt_path is not None else "")
        return NonFiniteLossError(
            f"the training loss became non-finite ({value}) in epoch {epoch + 1} of {epochs} "
            f"(lr={cur:g}); training stopped. Lower the learning rate (e.g. lr={lr / 10:g}), "
            "check the data for NaN/inf or extreme values, or normalise the inputs. " + kept,
            epoch=epoch + 1, history=pd.DataFrame(history), checkpoint=(
                ckpt_path if saved_epoch is not None else None))

    if not history:
        record(0)
        if ckpt_path is not None and epochs == 0:  # the initialisation, for analyses at epoch 0
            if main:
                save_checkpoint(ckpt_path, model=model, optimizer=opt, epoch=0, history=history,
                                generator=generator, config=config, sampler_rng=sampler_rng,
                                loader_rngs=loader_rngs)
            dist_utils.barrier()
    model.train()
    bar = _utils.progress(range(start, epochs), enabled=progress and main, desc="training")
    try:
        for epoch in bar:
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(schedule, epoch, epochs)
            if train_stream is not None:
                steps = ((b, 1.0) for b in B.iterate(train_stream, None, device))
            else:
                n = n_train
                if batch_sampler is not None:
                    steps = [(torch.as_tensor(list(b), dtype=torch.long, device=device), 1.0)
                             for b in batch_sampler]
                else:
                    order = torch.randperm(n, generator=generator).to(device) if batch_size else None
                    step = batch_size or n
                    steps = (_local_batch(order, i, step, n, distributed, device)
                             for i in range(0, n, step))
                steps = ((B.select(train_mem, idx), weight) for idx, weight in steps)
            step_losses = []  # detached scalars, checked once per epoch
            for batch, weight in steps:

                def closure(batch=batch, weight=weight):
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                        out = B.model_output(net, batch)
                        # an empty share (last batch smaller than the world) still joins the all-reduce
                        batch_loss = (B.batch_loss(loss_fn, out, batch) if B.batch_len(batch)
                                      else B.logits(out).sum() * 0.0)
                        if distributed:
                            batch_loss = batch_loss * weight
                    (scaler.scale(batch_loss) if scaler else batch_loss).backward()
                    return batch_loss

                if scaler is not None:  # the scaler skips steps with inf gradients by itself
                    closure()
                    scaler.step(opt)
                    scaler.update()
                elif isinstance(opt, SAM):
                    step_losses.append(opt.step(closure).detach())
                else:
                    step_losses.append(closure().detach())
                    opt.step()
            # one synchronisation per epoch: a non-finite step loss or parameter stops the run
            # before anything (callbacks, a checkpoint) sees the broken state
            checks = [torch.stack(step_losses).isfinite().all()] if step_losses else []
            checks += [torch.isfinite(p).all() for p in model.parameters()]
            if checks and not bool(torch.stack(checks).all()):
                raise diverged(epoch, "nan or inf in a step's loss or in the parameters")
            record(epoch + 1)
            last = history[-1]
            bar.set_postfix({k: f"{last[k]:.3g}" for k in ("train_loss", "train_acc", "test_acc")
                             if k in last}, refresh=False)
            if ckpt_path is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
                if main:
                    save_checkpoint(ckpt_path, model=model, optimizer=opt, epoch=epoch + 1,
                                    history=history, generator=generator, config=config,
                                    sampler_rng=sampler_rng, loader_rngs=loader_rngs)
                saved_epoch = epoch + 1
                dist_utils.barrier()
    except NonFiniteLossError as err:
        if on_nonfinite == "raise":
            raise
        # on_nonfinite="stop": a sweep over learning rates records divergence as a result
        history.append({"epoch": err.epoch, "lr": lr * lr_factor(schedule, err.epoch - 1, epochs),
                        "train_loss": float("inf")})
    model.eval()
    return pd.DataFrame(history)
