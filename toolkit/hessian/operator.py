"""The Hessian as a linear operator: batched Hessian-vector products (forward-over-reverse or
reverse-over-reverse), the first-order graph reused across products, and ``hvp``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp
from torch.utils.data import DataLoader

from .. import distributed as dist_utils
from .._checks import check_choice, check_eval_mode, check_module
from ..train import get_loss
from ..utils import as_tensors, iterate_batches, model_device
from . import _graph

__all__ = ["HVP_METHODS", "DEFAULT_HVP", "HessianOperator", "hvp"]

Params = dict[str, torch.Tensor]
HVP_METHODS = ("fwd-rev", "rev-rev")
# The faster product per device type. CPU: measured by benchmarks/bench_hessian.py —
# reverse-over-reverse wins (torch.func's per-call overhead dominates small and medium models).
# CUDA/MPS: not measured here (no GPU); forward-over-reverse as torch.func's docs recommend.
DEFAULT_HVP = {"cpu": "rev-rev", "cuda": "fwd-rev", "mps": "fwd-rev"}


# --------------------------------------------------------------------------------- the operator


class HessianOperator:
    r"""The Hessian of the mean loss over ``data`` as a linear operator on flat vectors.

    ``params`` restricts it to some parameters (names from ``model.named_parameters()``; default
    all that require grad); the others and the buffers stay fixed. ``data`` is an (x, y) pair, a
    dataset or a DataLoader, read in ``batch_size`` batches. ``method`` is ``"fwd-rev"``
    (``torch.func.jvp`` of ``torch.func.grad``), ``"rev-rev"`` (``autograd.grad`` twice) or
    ``"auto"`` (the faster on this device type, :data:`DEFAULT_HVP`).

    With ``check=True`` (default) the constructor refuses batch-norm/dropout layers in training
    mode and verifies that two identical Hessian-vector products agree; if not, it raises and
    tells you to call ``model.eval()``. ``n_hvp`` counts full-data products. ``rev-rev`` on
    in-memory data keeps the gradient graph within ``graph_budget`` bytes (1 GiB; 0: stream;
    see ``toolkit.hessian._graph``).
    """

    def __init__(self, model: nn.Module, loss_fn, data, *, batch_size: int | None = None,
                 params: Iterable[str] | None = None, method: str = "auto", check: bool = True,
                 seed: int = 0, distributed: bool | None = None, graph_budget: int | None = None):
        self.model, self.loss_fn = check_module(model), get_loss(loss_fn)
        self.device = model_device(model)
        named = dict(model.named_parameters())
        if params is None:
            names = [n for n, p in named.items() if p.requires_grad]
        else:
            names = list(params)
            unknown = [n for n in names if n not in named]
            if unknown:
                raise ValueError(f"params has names {unknown[:5]} that are not parameters of the "
                                 f"model; valid names include {list(named)[:6]}.")
        if not names:
            raise ValueError("There are no parameters to differentiate (none requires grad).")
        self.names = names
        self.params = {n: named[n].detach() for n in names}
        self.fixed = {n: p.detach() for n, p in named.items() if n not in self.params}
        self.shapes = {n: p.shape for n, p in self.params.items()}
        self.numel = sum(p.numel() for p in self.params.values())
        self.dtype = next(iter(self.params.values())).dtype
        if method == "auto":
            method = DEFAULT_HVP.get(self.device.type, "fwd-rev")
        check_choice(method, "method", ("auto", *HVP_METHODS))
        self.method = method
        self.batch_size = batch_size
        # Under torchrun every rank holds a contiguous shard of the samples (or every
        # world-th batch of a DataLoader); the per-shard sums are all-reduced in `_reduce`.
        self.sharded = dist_utils.is_distributed() if distributed is None else distributed
        if self.sharded and not isinstance(data, DataLoader):
            x_all, y_all = as_tensors(data)
            part = dist_utils.shard_range(len(x_all))
            data = (x_all[part.start:part.stop], y_all[part.start:part.stop])
        self._data = data
        if isinstance(data, DataLoader):
            self._batches = None  # streamed at every product
        else:
            self._batches = [b for b in iterate_batches(data, batch_size, self.device) if len(b[0])]
        self.n_samples = int(self._reduce(torch.tensor(
            [float(sum(len(x) for x, _ in self.batches()))], dtype=torch.float64))[0])
        if self.n_samples == 0:
            raise ValueError("data is empty.")
        self.n_hvp, self._seed, self._budget = 0, seed, graph_budget
        self._graph = None if check else _graph.kept_graph(self, self._batches, graph_budget)
        if check:
            self.check_determinism()
    uses_graph = property(lambda self: self._graph is not None, doc="Products reuse a graph.")

    # -- data and flat vectors --------------------------------------------------------------
    def batches(self):
        """This rank's batches (all batches in a single process)."""
        if self._batches is not None:
            return iter(self._batches)
        stream = iterate_batches(self._data, self.batch_size, self.device)
        if not self.sharded:
            return stream
        r, w = dist_utils.rank(), dist_utils.world_size()
        return (b for i, b in enumerate(stream) if i % w == r)

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a tensor of per-shard sums over ranks (identity in a single process)."""
        return dist_utils.all_reduce_sum(t) if self.sharded else t

    def flatten(self, d: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Dict ``name -> tensor`` (this operator's parameters) to one flat vector."""
        return torch.cat([d[n].reshape(-1) for n in self.names])

    def unflatten(self, v: torch.Tensor) -> Params:
        """Flat vector to dict ``name -> tensor`` shaped like the parameters."""
        if v.dim() != 1 or v.numel() != self.numel:
            raise ValueError(f"expected a flat vector of {self.numel} entries (one per "
                             f"parameter), got shape {tuple(v.shape)}.")
        out, i = {}, 0
        for n in self.names:
            k = self.params[n].numel()
            out[n] = v[i:i + k].view(self.shapes[n])
            i += k
        return out

    def random_vector(self, generator: torch.Generator, kind: str = "gaussian") -> torch.Tensor:
        """A flat random vector (Gaussian or Rademacher) drawn on the CPU, then moved."""
        if kind == "rademacher":
            v = torch.randint(0, 2, (self.numel,), generator=generator).to(self.dtype) * 2 - 1
        else:
            v = torch.randn(self.numel, generator=generator, dtype=self.dtype)
        return v.to(self.device)

    # -- products -------------------------------------------------------------------------
    def _loss(self, p: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(functional_call(self.model, {**self.fixed, **p}, (x,)), y)

    def batch_hvp(self, v: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
        """H_b v for one batch (H_b: Hessian of that batch's mean loss)."""
        if self.method == "fwd-rev":
            g = grad(self._loss)
            if y.dtype.is_floating_point:
                # float targets get an explicit zero tangent: torch's forward-mode rule for
                # F.mse_loss's backward fails on the implicit (immutable ZeroTensor) one
                return jvp(lambda p, t: g(p, x, t), (self.params, y), (v, torch.zeros_like(y)))[1]
            return jvp(lambda p: g(p, x, y), (self.params,), (v,))[1]
        q = {n: p.detach().requires_grad_(True) for n, p in self.params.items()}
        with torch.enable_grad():
            loss = self._loss(q, x, y)
            gs = torch.autograd.grad(loss, list(q.values()), create_graph=True)
            dot = sum((g * v[n]).sum() for g, n in zip(gs, self.names))
            hv = torch.autograd.grad(dot, list(q.values()), allow_unused=True)
        return {n: (h.detach() if h is not None else torch.zeros_like(q[n]))
                for n, h in zip(self.names, hv)}

    def hvp_sum(self, v: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(Σ_b n_b H_b v, Σ_b n_b): the un-normalised product and the sample count.

        Summing these over data shards (an all-reduce) and dividing gives Hv on the union."""
        vd = self.unflatten(v.to(device=self.device, dtype=self.dtype))
        total = torch.zeros(self.numel, device=self.device, dtype=self.dtype)
        count = self._graph.hvp_sum(vd, total) if self._graph is not None else 0
        for x, y in self.batches() if self._graph is None else ():
            total += self.flatten(self.batch_hvp(vd, x, y)) * len(x)
            count += len(x)
        return self._reduce(total), self.n_samples if self.sharded else count

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Hv for a flat vector v (the data-set mean Hessian)."""
        total, count = self.hvp_sum(v)
        self.n_hvp += 1
        return total / count

    __matmul__ = matvec

    def gradient(self) -> tuple[torch.Tensor, float]:
        """(∇L, L): flat gradient and value of the data-set mean loss."""
        total = torch.zeros(self.numel, device=self.device, dtype=self.dtype)
        loss_sum, count = 0.0, 0
        gl = torch.func.grad_and_value(self._loss)
        for x, y in self.batches():
            g, loss = gl(self.params, x, y)
            total += self.flatten(g) * len(x)
            loss_sum += float(loss) * len(x)
            count += len(x)
        if self.sharded:
            self._reduce(total)
            loss_sum, count = self._reduce(torch.tensor([loss_sum, float(count)],
                                                        dtype=torch.float64)).tolist()
        return total / count, loss_sum / count

    def as_linear_operator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (float64) wrapping :meth:`matvec`."""
        from scipy.sparse.linalg import LinearOperator

        def mv(v):
            t = torch.from_numpy(np.asarray(v, dtype=np.float64).reshape(-1))
            return self.matvec(t.to(self.dtype)).double().cpu().numpy()

        return LinearOperator((self.numel, self.numel), matvec=mv, dtype=np.float64)

    def dense(self, chunk_size: int = 256) -> torch.Tensor:
        """The full Hessian matrix (``numel`` products, vectorised in chunks with ``vmap`` for
        ``fwd-rev``; for small models, tests and exact references)."""
        eye = torch.eye(self.numel, device=self.device, dtype=self.dtype)
        if self.method != "fwd-rev":
            return torch.stack([self.matvec(e) for e in eye], dim=1)
        out = torch.zeros(self.numel, self.numel, device=self.device, dtype=self.dtype)
        count = 0
        for x, y in self.batches():
            col = lambda e, x=x, y=y: self.flatten(self.batch_hvp(self.unflatten(e), x, y))
            cols = torch.func.vmap(col, chunk_size=chunk_size)(eye)
            out += cols.T * len(x)
            count += len(x)
        if self.sharded:
            self._reduce(out)
            count = self.n_samples
        self.n_hvp += self.numel
        return out / count

    def check_determinism(self) -> None:
        """Refuse train-mode BN/dropout; check that two identical products agree."""
        check_eval_mode(self.model, "the loss, and so its Hessian, is not one function of the "
                        "parameters")
        self._graph = self._graph or _graph.kept_graph(self, self._batches, self._budget)
        gen = torch.Generator().manual_seed(self._seed + 12345)
        v = self.unflatten(self.random_vector(gen))
        first = next(self.batches(), None)
        if first is None:  # this rank's shard is empty (more ranks than samples)
            return
        x, y = first
        if self._graph is not None:  # its outputs vs a second forward: no extra backward
            h1, (a, b) = self._graph.check(self, v)
        else:
            a, b = (h1 := self.flatten(self.batch_hvp(v, x, y))), self.flatten(self.batch_hvp(v, x, y))
        scale = float(a.norm()) + float(b.norm())
        if not torch.isfinite(h1).all():
            raise FloatingPointError("The Hessian-vector product is not finite at these "
                                     "parameters (diverged model or loss?).")
        if float((a - b).norm()) > 1e-5 * scale + 1e-12:
            raise RuntimeError("Two identical Hessian-vector products differ: the model is not "
                               "deterministic (dropout, batch statistics or other randomness in "
                               "training mode). Call model.eval() before computing curvature.")


def hvp(model: nn.Module, loss_fn, data, v, *, batch_size: int | None = None,
        method: str = "auto", params: Iterable[str] | None = None):
    r"""Hessian-vector product Hv of the data-set mean loss, H = ∇²_θ (1/N) Σ_i ℓ_i.

    Forward-over-reverse by default: Hv = ∂/∂t ∇L(θ + t v)|_{t=0} = ``jvp(grad(L), θ, v)``,
    accumulated over batches as Σ_b n_b H_b v / N. ``v`` is a dict ``name -> tensor`` (missing names
    are zero) or a flat vector; the result has the same form. Pearlmutter's trick at the cost of
    about two gradients (Yao et al. 2020, arXiv 1912.07145).
    """
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, method=method,
                         params=params, check=True)
    if isinstance(v, Mapping):
        unknown = sorted(set(v) - set(op.names))
        if unknown:
            raise ValueError(f"v has entries {unknown[:5]} that are not (differentiated) "
                             "parameters of the model.")
        for n, t in v.items():
            if tuple(t.shape) != tuple(op.shapes[n]):
                raise ValueError(f"v[{n!r}] has shape {tuple(t.shape)}, the parameter has "
                                 f"{tuple(op.shapes[n])}.")
        flat = op.flatten({n: v.get(n, torch.zeros_like(p)).to(p) for n, p in op.params.items()})
        return op.unflatten(op.matvec(flat))
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"v must be a dict name -> tensor or a flat tensor, got {type(v).__name__}.")
    return op.matvec(v)


