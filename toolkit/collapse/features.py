"""Neural collapse of a model: the features at a layer's input (:func:`extract_features`,
:func:`layer_inputs`), NC metrics streamed in two passes without storing them
(:func:`collapse_metrics`, sharded under torchrun) and the training callback
:class:`CollapseCallback` for :func:`toolkit.train.fit`.

Penultimate features ``h`` are the input of the last ``nn.Linear`` (Papyan, Han & Donoho 2020,
arXiv:2008.08186). Models run in eval mode inside (their mode is restored after).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .. import batches as B
from .. import distributed as dist_utils
from ..models import applied_weights
from ..utils import InputCapture, as_tensors, atomic_save, eval_mode, model_device, progress
from ._base import CollapseMetrics, check_global_mean
from .accumulator import CollapseAccumulator

__all__ = ["extract_features", "layer_inputs", "collapse_metrics", "CollapseCallback"]


def _device(model: nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else model_device(model)


def _batches(data, batch_size, device, *, show: bool = False, desc: str = ""):
    """``(batch, labels)`` pairs under the batch contract (:mod:`toolkit.batches`): tuple
    batches ``(x, y)`` or dict batches with ``"labels"``."""
    for batch in progress(B.iterate(data, batch_size=batch_size, device=device), enabled=show,
                          desc=desc):
        y = B.targets(batch)
        if y is None:
            raise ValueError("the data have no labels: neural-collapse features need a class "
                             "label per sample, as tuple batches (x, y) or dict batches with a "
                             "'labels' key.")
        yield batch, y


def _in_memory(data):
    """All of ``data`` in memory: an ``(x, y)`` pair, or a dict of columns for dict batches."""
    if B.is_tensor_pair(data):
        return tuple(data)
    if B.is_columns(data):
        return dict(data)
    parts = list(B.iterate(data, device="cpu"))
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return as_tensors(data, device="cpu")


def _resolve_layer(model: nn.Module, layer) -> nn.Module:
    if layer is None:
        head = getattr(model, "head", None)
        if isinstance(head, nn.Linear):
            return head
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("model has no nn.Linear; pass layer=<module or name> explicitly")
        return linears[-1]
    if isinstance(layer, str):
        named = dict(model.named_modules())
        if layer not in named:
            raise ValueError(f"layer {layer!r} not found; valid names: {list(named)[:20]}...")
        return named[layer]
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("layer is not a submodule of model")
        return layer
    raise TypeError(f"layer must be None, a module name or an nn.Module, got {type(layer).__name__}")


@torch.no_grad()
def extract_features(model: nn.Module, data, *, layer=None, device=None,
                     batch_size: int | None = None, progress: bool = False
                     ) -> tuple[Tensor, Tensor]:
    """Features at the input of ``layer`` (default: the last ``nn.Linear``, i.e. the penultimate
    features ``h`` of Papyan et al. 2020, arXiv:2008.08186) for every sample of ``data``.

    ``data``: an (x, y) tuple, a dict of tensors, a Dataset, a DataLoader or a list of ready
    batches (:mod:`toolkit.batches`; dict batches call ``model(**batch)`` and carry the classes in
    ``"labels"``); processed batch by batch (``batch_size`` None = the loader's batches / one
    batch) with a forward pre-hook, model in eval mode (restored after).
    ``layer``: None, a name from ``model.named_modules()`` or a submodule. Returns
    (features (N, d) flattened, labels (N,)) on the model's device.
    """
    device = _device(model, device)
    target = _resolve_layer(model, layer)
    feats, labels = [], []
    with InputCapture({"h": target}) as cap, eval_mode(model):
        for batch, y in _batches(data, batch_size, device, show=progress, desc="features"):
            B.model_output(model, batch)
            feats.append(cap.pop("h"))
            labels.append(y)
    if not feats:
        raise ValueError("data is empty (no batch); pass at least one sample.")
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def layer_inputs(model: nn.Module, data, *, layers=None, include_output: bool = True,
                 device=None, batch_size: int | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """Inputs of several layers in one streaming pass (default: every ``nn.Linear``, in order),
    plus the model output under the key ``"output"``; for per-layer collapse (Dang et al. 2023,
    arXiv:2301.00437). Returns ({name: (N, d_l)}, labels)."""
    device = _device(model, device)
    if layers is None:
        modules = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    else:
        modules = {(n if isinstance(n, str) else f"layer{i}"): _resolve_layer(model, n)
                   for i, n in enumerate(layers)}
    if not modules:
        raise ValueError("no layers to capture; pass layers=[...]")
    out: dict[str, list] = {k: [] for k in modules}
    if include_output:
        out["output"] = []
    labels = []
    with InputCapture(modules) as cap, eval_mode(model):
        for batch, y in _batches(data, batch_size, device):
            o = B.logits(B.model_output(model, batch))
            for k in modules:
                out[k].append(cap.pop(k))
            if include_output:
                out["output"].append(o.detach().flatten(1))
            labels.append(y)
    if not labels:
        raise ValueError("data is empty (no batch); pass at least one sample.")
    return {k: torch.cat(v) for k, v in out.items()}, torch.cat(labels)


@torch.no_grad()
def collapse_metrics(model: nn.Module, data, *, layer=None, n_classes: int | None = None,
                     global_mean: str = "class_means", batch_size: int | None = None,
                     device=None, progress: bool = False,
                     distributed: bool | None = None) -> CollapseMetrics:
    """NC1-NC4 of a model on ``data`` in two streaming passes (never stores the features).

    Features are the inputs of ``layer`` (default the last ``nn.Linear``, whose weight/bias give
    NC2-weights and NC3); NC4 uses the model's own predictions ``argmax model(x)`` when the output
    has C columns. Model in eval mode during the passes (restored after). Equal to
    ``nc_metrics(*extract_features(model, data), weight=..., bias=...)``
    (Papyan, Han & Donoho 2020, arXiv:2008.08186).

    Under torchrun (``distributed=None`` detects it) each rank streams its contiguous shard of
    the samples and the accumulator's sums are all-reduced after each pass, so every rank returns
    the metrics of the whole data set (needs at least one sample per rank).
    """
    return _streaming_accumulator(model, data, layer=layer, n_classes=n_classes,
                                  global_mean=global_mean, batch_size=batch_size, device=device,
                                  progress=progress, distributed=distributed).compute()


def _streaming_accumulator(model, data, *, layer, n_classes, global_mean, batch_size, device,
                           progress, distributed=None) -> CollapseAccumulator:
    sharded = dist_utils.is_distributed() if distributed is None else distributed
    if sharded:
        mem = _in_memory(data)
        part = dist_utils.shard_range(B.batch_len(mem))
        data = B.select(mem, slice(part.start, part.stop))
        progress = progress and dist_utils.is_main()
    device = _device(model, device)
    target = _resolve_layer(model, layer)
    linear = isinstance(target, nn.Linear)
    if n_classes is None:
        if not linear:
            raise ValueError("n_classes is required when layer is not an nn.Linear")
        n_classes = target.out_features
    weight = bias = None
    if linear and target.out_features == n_classes:
        weight, bias = applied_weights(target)
    acc = CollapseAccumulator(n_classes, weight=weight, bias=bias, global_mean=global_mean,
                              device=device)
    with InputCapture({"h": target}) as cap, eval_mode(model):
        for batch, y in _batches(data, batch_size, device, show=progress, desc="NC pass 1"):
            B.model_output(model, batch)
            acc.update_means(cap.pop("h"), y)
        if sharded:
            acc.reduce_(dist_utils.all_reduce_sum)
            acc.end_first_pass()
        for batch, y in _batches(data, batch_size, device, show=progress, desc="NC pass 2"):
            out = B.logits(B.model_output(model, batch))
            pred = out.argmax(1) if out.ndim == 2 and out.shape[1] == n_classes else None
            acc.update_residuals(cap.pop("h"), y, pred)
        if sharded:
            acc.reduce_(dist_utils.all_reduce_sum)
    return acc


class CollapseCallback:
    """Training callback for ``toolkit.train.fit``: records NC metrics every ``every`` epochs.

    ``callback(epoch, model, history_rows) -> dict | None`` (the core contract); the dict holds
    ``prefix + name`` for every metric of :class:`CollapseMetrics` (epochs it skips are NaN in
    the history; with ``fit(callback_every=k)`` it is only called every k epochs anyway).
    Metrics are computed by :func:`collapse_metrics` in two streaming passes over ``data``
    (usually the training set, as in Papyan et al. 2020, arXiv:2008.08186).

    With ``snapshot=n`` it also keeps, per recorded epoch, the features of ``n`` fixed samples
    (stratified, chosen with ``seed``), the class means and the head weight in ``self.snapshots``
    (a list of dicts) for the epoch-slider widget. With ``snapshot_path`` the snapshots are saved
    there after every recording and loaded back at construction, so a run resumed from a
    checkpoint (``fit(checkpoint_dir=...)``) keeps its earlier epochs.
    """

    def __init__(self, data, *, every: int = 1, layer=None, batch_size: int | None = None,
                 global_mean: str = "class_means", prefix: str = "", snapshot: int = 0,
                 seed: int = 0, n_classes: int | None = None, snapshot_path=None):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if not isinstance(snapshot, int) or snapshot < 0:
            raise ValueError(f"snapshot must be a non-negative int, got {snapshot!r}")
        self.data, self.every, self.layer = data, every, layer
        self.batch_size, self.global_mean, self.prefix = batch_size, check_global_mean(
            global_mean), prefix
        self.snapshot, self.seed, self.n_classes = snapshot, seed, n_classes
        self.snapshot_path = None if snapshot_path is None else Path(snapshot_path)
        self.snapshots: list[dict] = []
        if self.snapshot_path is not None and self.snapshot_path.exists():
            try:
                self.snapshots = torch.load(self.snapshot_path, map_location="cpu",
                                            weights_only=True)
            except Exception as err:  # truncated or corrupted file
                raise ValueError(
                    f"the snapshot file at {self.snapshot_path} cannot be read "
                    f"({type(err).__name__}); it was left untouched: delete it or pass a new "
                    "snapshot_path to start over.") from err
        self._snap_data = None

    def _snapshot_data(self):
        if self._snap_data is None:
            mem = _in_memory(self.data)
            y = B.targets(mem)
            gen = torch.Generator().manual_seed(self.seed)
            classes = torch.unique(y)
            per = max(1, self.snapshot // len(classes))
            idx = []
            for c in classes:
                members = torch.nonzero(y == c).flatten()
                idx.append(members[torch.randperm(len(members), generator=gen)[:per]])
            idx = torch.cat(idx)
            self._snap_data = B.select(mem, idx)
        return self._snap_data

    def __call__(self, epoch: int, model: nn.Module, history_rows=None) -> dict | None:
        if epoch % self.every:
            return None
        target = _resolve_layer(model, self.layer)
        with torch.no_grad():
            acc = _streaming_accumulator(model, self.data, layer=target, n_classes=self.n_classes,
                                         global_mean=self.global_mean, batch_size=self.batch_size,
                                         device=None, progress=False)
        metrics = acc.compute()
        row = {self.prefix + k: v for k, v in metrics.as_dict().items()
               if k in CollapseMetrics.metric_names()}
        if self.snapshot:
            feats, labels = extract_features(model, self._snapshot_data(), layer=target)
            snap = {"epoch": epoch, "features": feats.float().cpu(), "labels": labels.cpu(),
                    "means": acc.means.float().cpu(),
                    "global_mean": acc.global_mean_vector.float().cpu()}
            if acc.weight is not None:
                snap["weight"] = acc.weight.float().cpu()
            # a resumed run records epochs again: keep one snapshot per epoch, in order
            self.snapshots = [s for s in self.snapshots if s["epoch"] < epoch] + [snap]
            if self.snapshot_path is not None:
                atomic_save(self.snapshots, self.snapshot_path)
        return row
