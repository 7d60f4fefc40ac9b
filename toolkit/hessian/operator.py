"""The Hessian as a linear operator: batched Hessian-vector products (forward-over-reverse or
reverse-over-reverse), the first-order graph reused across products, and ``hvp``."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.func import grad, jvp
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.data import DataLoader, TensorDataset

from .. import batches as B
from .. import distributed as dist_utils
from .._checks import check_choice, check_eval_mode, check_module
from ..train import get_loss
from ..utils import as_tensors, model_device
from . import _chain, _graph
from ._autodiff import NotTwiceDifferentiableError, check_graph, second_order

__all__ = ["HVP_METHODS", "DEFAULT_HVP", "HessianOperator", "hvp", "select_params",
           "loss_function", "NotTwiceDifferentiableError"]

Params = dict[str, torch.Tensor]
HVP_METHODS = ("fwd-rev", "rev-rev")
# The faster product per device type. CPU: measured by benchmarks/bench_hessian.py —
# reverse-over-reverse wins (torch.func's per-call overhead dominates small and medium models).
# CUDA/MPS: not measured here (no GPU); forward-over-reverse as torch.func's docs recommend.
DEFAULT_HVP = {"cpu": "rev-rev", "cuda": "fwd-rev", "mps": "fwd-rev"}


# -------------------------------------------------------------------------- choosing parameters


def select_params(model: nn.Module, params: str | Iterable[str] | None = None) -> list[str]:
    """The parameter names that ``params`` selects, in the model's order.

    ``params`` is None (every parameter that requires grad), or a name or a list of names and
    patterns, each one of: a parameter name (``"head.weight"``), a module name standing for all
    its parameters (``"blocks.1"``), or a glob pattern matched with :func:`fnmatch.fnmatchcase`
    against parameter names (``"blocks.1.*"``, ``"*.bias"``). Named or matched parameters count
    even if they do not require grad (the others stay fixed either way). A pattern that selects
    nothing is an error, which lists some valid names."""
    check_module(model)
    named = dict(model.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
        if not names:
            raise ValueError("There are no parameters to differentiate (none requires grad); "
                             "pass params= to choose some.")
        return names
    patterns = [params] if isinstance(params, str) else list(params)
    if not patterns or not all(isinstance(q, str) for q in patterns):
        raise TypeError("params must be a parameter name, a module name, a glob pattern or a list "
                        f"of them (strings), got {params!r}.")
    chosen: set[str] = set()
    for q in patterns:
        hit = {n for n in named if n == q or n.startswith(q + ".") or fnmatch.fnmatchcase(n, q)}
        if not hit:
            raise ValueError(f"params entry {q!r} selects nothing: its names are not parameters "
                             f"of the model; valid names "
                             f"include {list(named)[:6]} (glob patterns such as 'blocks.1.*' and "
                             "module names such as 'blocks.1' work too).")
        chosen |= hit
    return [n for n in named if n in chosen]


def loss_function(loss_fn):
    """The loss under the batch contract (:mod:`toolkit.batches`): a name (``"ce"``, ``"mse"``...)
    becomes that loss of (outputs, targets) — also for dict batches, where the targets are
    ``batch["labels"]``; a callable is used as it is (``loss_fn(outputs, y)`` for tuple batches,
    ``loss_fn(outputs, batch)`` for dict batches or losses marked with
    :func:`toolkit.batches.takes_batch`); None uses the model's own ``outputs.loss``."""
    if loss_fn is None:
        return None
    if isinstance(loss_fn, str):
        return B.takes_targets(get_loss(loss_fn))
    return get_loss(loss_fn)


# --------------------------------------------------------------------------------- the operator


_NOT_FINITE = ("The Hessian-vector product (or the gradient) is not finite at these parameters "
               "(diverged model or loss?).")


class HessianOperator:
    r"""The Hessian of the mean loss over ``data`` as a linear operator on flat vectors.

    ``params`` restricts it to some parameters: names from ``model.named_parameters()``, module
    names or glob patterns such as ``"blocks.1.*"`` (:func:`select_params`; default all that
    require grad); the others and the buffers stay fixed. ``data`` is anything
    :func:`toolkit.batches.iterate` reads — an (x, y) pair, a dict of tensor columns, a dataset,
    a DataLoader (tuple or dict batches) or a list of ready batches — read in ``batch_size``
    batches; the model and the loss are called by the batch contract (:func:`loss_function`:
    ``model(x)``, ``loss_fn(outputs, y)`` for tuples; ``model(**batch)``,
    ``loss_fn(outputs, batch)`` for dicts and losses marked ``takes_batch``; ``loss_fn=None``:
    the model's own loss). Every batch's loss is its *mean*, and the operator is the
    size-weighted mean over batches, Σ_b n_b H_b / N: for a loss that couples the samples of a
    batch (a contrastive loss), that is the mean of the per-batch Hessians, which depends on the
    batching (use one batch, ``batch_size=None``, for the full-data loss). ``method`` is ``"fwd-rev"``
    (``torch.func.jvp`` of ``torch.func.grad``), ``"rev-rev"`` (``autograd.grad`` twice) or
    ``"auto"`` (the faster on this device type, :data:`DEFAULT_HVP`; and for a chain of
    ``nn.Linear`` layers and elementwise activations such as ``toolkit.models.MLP``, on
    in-memory tuple batches, the R-operator on a cached forward and backward pass,
    ``toolkit.hessian._chain``: the same numbers, 1.1–1.2× faster per product than the kept
    graph, and :meth:`quadratic_form` vᵀHv by second-order forward mode at half a product's
    time).

    With ``check=True`` (default) the constructor refuses batch-norm/dropout layers in training
    mode and verifies that two identical Hessian-vector products agree (with a kept graph or
    cache: that a second forward pass reproduces its outputs; every product is also checked to
    be finite); if not, it raises and tells you to call ``model.eval()``. ``n_hvp`` counts
    full-data products (and quadratic forms). ``rev-rev`` (and ``auto``) on in-memory data
    keeps the gradient graph (or the chain's cache) within ``graph_budget`` bytes (1 GiB; 0:
    stream; see ``toolkit.hessian._graph``). Every forward pass runs on the math kernel of
    scaled-dot-product attention with the fused transformer fast path off, so products go through
    ``nn.MultiheadAttention`` / ``nn.TransformerEncoder``; an operation with no second derivative
    raises :class:`NotTwiceDifferentiableError` (``toolkit.hessian._autodiff``).
    """

    def __init__(self, model: nn.Module, loss_fn, data, *, batch_size: int | None = None,
                 params: str | Iterable[str] | None = None, method: str = "auto", check: bool = True,
                 seed: int = 0, distributed: bool | None = None, graph_budget: int | None = None):
        self.model, self.loss_fn = check_module(model), loss_function(loss_fn)
        self.device = model_device(model)
        named = dict(model.named_parameters())
        self.names = names = select_params(model, params)
        self.params = {n: named[n].detach() for n in names}
        self.fixed = {n: p.detach() for n, p in named.items() if n not in self.params}
        self.shapes = {n: p.shape for n, p in self.params.items()}
        self.numel = sum(p.numel() for p in self.params.values())
        self.dtype = next(iter(self.params.values())).dtype
        # "auto" may also take the structured R-operator of Linear/activation chains
        # (toolkit.hessian._chain) when the data are in memory and fit the graph budget
        self.structured = method == "auto"
        if method == "auto":
            method = DEFAULT_HVP.get(self.device.type, "fwd-rev")
        check_choice(method, "method", ("auto", *HVP_METHODS))
        self.method = method
        self.batch_size = batch_size
        # Under torchrun every rank holds a contiguous shard of the samples (or every
        # world-th batch of a DataLoader); the per-shard sums are all-reduced in `_reduce`.
        self.sharded = dist_utils.is_distributed() if distributed is None else distributed
        if self.sharded and (B.is_tensor_pair(data) or isinstance(data, TensorDataset)):
            x_all, y_all = as_tensors(data)
            part = dist_utils.shard_range(len(x_all))
            data = (x_all[part.start:part.stop], y_all[part.start:part.stop])
        elif self.sharded and B.is_columns(data):
            part = dist_utils.shard_range(B.batch_len(data))
            data = B.select(data, slice(part.start, part.stop))
        self._data = data
        self._stride = self.sharded and not (B.is_tensor_pair(data) or B.is_columns(data))
        if isinstance(data, DataLoader):
            self._batches = None  # streamed at every product
        else:
            self._batches = [b for b in self._stream() if B.batch_len(b)]
        self.n_samples = int(self._reduce(torch.tensor(
            [float(sum(B.batch_len(b) for b in self.batches()))], dtype=torch.float64))[0])
        if self.n_samples == 0:
            raise ValueError("data is empty.")
        self.n_hvp, self._seed, self._budget = 0, seed, graph_budget
        self._graph_checked = False
        with second_order(self.method):
            self._graph = None if check else self._keep_graph()
            if check:
                self.check_determinism()
    uses_graph = property(lambda self: self._graph is not None, doc="Products reuse a graph.")

    def _keep_graph(self):
        """What products reuse on in-memory data within the graph budget: the R-operator's cache
        (``_chain.ChainGraph``) for a Linear/activation chain when the method was left to
        ``"auto"``, the first-order autograd graph (``_graph.FirstOrderGraph``) for reverse-over-
        reverse; None (streaming) otherwise."""
        if not _graph.fits(self, self._batches, self._budget):
            return None
        steps = _chain.chain_steps(self, self._batches[0]) if self.structured else None
        if steps is not None:
            return _chain.ChainGraph(self, self._batches, steps)
        return _graph.FirstOrderGraph(self, self._batches) if self.method == "rev-rev" else None

    # -- data and flat vectors --------------------------------------------------------------
    def batches(self):
        """This rank's batches (all batches in a single process)."""
        if self._batches is not None:
            return iter(self._batches)
        return self._stream()

    def _stream(self):
        """Batches of ``data`` (tuples or dicts, on the device); under torchrun every world-th
        batch of data that was not split by samples (a DataLoader, a Dataset, a list)."""
        stream = B.iterate(self._data, self.batch_size, self.device)
        if not self._stride:
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
    def outputs(self, p: Params, batch):
        """The model's outputs on one batch at parameters ``p`` (the others fixed)."""
        return B.model_output(self.model, batch, {**self.fixed, **p})

    def _loss(self, p: Params, batch, y=None) -> torch.Tensor:
        batch = batch if y is None else (batch, y)
        return self.loss_of(self.outputs(p, batch), batch)

    def loss_of(self, outputs, batch) -> torch.Tensor:
        """The batch's mean loss from the model's outputs (:func:`toolkit.batches.batch_loss`)."""
        loss = B.batch_loss(self.loss_fn, outputs, batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("the loss must return a scalar tensor (the batch's mean loss), got "
                             f"{type(loss).__name__}{tuple(getattr(loss, 'shape', ()))}.")
        return loss.reshape(())

    def batch_hvp(self, v: Params, batch, y: torch.Tensor | None = None) -> Params:
        """H_b v for one batch (H_b: Hessian of that batch's mean loss); ``batch`` is a tuple
        (x, y, ...) or a dict (``batch_hvp(v, x, y)`` works too)."""
        with second_order(self.method):
            return self._batch_hvp(v, batch if y is None else (batch, y))

    def _batch_hvp(self, v: Params, batch) -> Params:
        if self.method == "fwd-rev":
            g = grad(self._loss)
            # float targets get an explicit zero tangent: torch's forward-mode rule for
            # F.mse_loss's backward fails on the implicit (immutable ZeroTensor) one. Tuple
            # batches: the float tensors after x; dict batches: every float tensor.
            leaves, spec = tree_flatten(batch)
            skip = 1 if isinstance(batch, tuple) else 0
            idx = [i for i, t in enumerate(leaves) if i >= skip and isinstance(t, torch.Tensor)
                   and t.is_floating_point()]
            if not idx:
                return jvp(lambda p: g(p, batch), (self.params,), (v,))[1]

            def with_floats(p, floats):
                full = list(leaves)
                for i, t in zip(idx, floats):
                    full[i] = t
                return g(p, tree_unflatten(full, spec))

            floats = tuple(leaves[i] for i in idx)
            zeros = tuple(torch.zeros_like(t) for t in floats)
            return jvp(with_floats, (self.params, floats), (v, zeros))[1]
        q = {n: p.detach().requires_grad_(True) for n, p in self.params.items()}
        with torch.enable_grad():
            loss = self._loss(q, batch)
            if not self._graph_checked:
                check_graph(loss)
                self._graph_checked = True
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
        with second_order(self.method):
            count = self._graph.hvp_sum(vd, total) if self._graph is not None else 0
            for batch in self.batches() if self._graph is None else ():
                n_b = B.batch_len(batch)
                total += self.flatten(self._batch_hvp(vd, batch)) * n_b
                count += n_b
        return self._reduce(total), self.n_samples if self.sharded else count

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Hv for a flat vector v (the data-set mean Hessian); raises FloatingPointError if it is
        not finite."""
        total, count = self.hvp_sum(v)
        self.n_hvp += 1
        # one float64 sum (20 µs on 85k entries; torch.isfinite(total).all() took 160 µs): it is
        # NaN or inf exactly when an entry is, as float32 entries cannot overflow it
        if not math.isfinite(float(torch.sum(total, dtype=torch.float64))):
            raise FloatingPointError(_NOT_FINITE)
        return total.div_(count)  # in place: total is this call's own tensor

    __matmul__ = matvec

    def quadratic_form(self, v: torch.Tensor) -> float:
        """vᵀHv for a flat vector v (one product in ``n_hvp``): on a Linear/activation chain by
        second-order forward mode, in about half the time of Hv (two thirds of its matrix
        products, no backward pass; ``_chain``); else vᵀ(Hv). Raises FloatingPointError if it
        is not finite."""
        vd = self.unflatten(v.to(device=self.device, dtype=self.dtype))
        if isinstance(self._graph, _chain.ChainGraph):
            with second_order(self.method):
                total, count = self._graph.quadratic_sum(vd)
            total = self._reduce(total.reshape(1))[0]
            count = self.n_samples if self.sharded else count
            self.n_hvp += 1
            value = float(total) / count
            if not math.isfinite(value):
                raise FloatingPointError(_NOT_FINITE)
            return value
        return float(torch.dot(v.to(device=self.device, dtype=torch.float64),
                               self.matvec(v).double()))

    def gradient(self) -> tuple[torch.Tensor, float]:
        """(∇L, L): flat gradient and value of the data-set mean loss."""
        total = torch.zeros(self.numel, device=self.device, dtype=self.dtype)
        loss_sum, count = 0.0, 0
        gl = torch.func.grad_and_value(self._loss)
        with second_order(self.method):
            for batch in self.batches():
                g, loss = gl(self.params, batch)
                n_b = B.batch_len(batch)
                total += self.flatten(g) * n_b
                loss_sum += float(loss) * n_b
                count += n_b
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
        with second_order(self.method):
            for batch in self.batches():
                col = lambda e, b=batch: self.flatten(self._batch_hvp(self.unflatten(e), b))
                cols = torch.func.vmap(col, chunk_size=chunk_size)(eye)
                n_b = B.batch_len(batch)
                out += cols.T * n_b
                count += n_b
        if self.sharded:
            self._reduce(out)
            count = self.n_samples
        self.n_hvp += self.numel
        return out / count

    def check_determinism(self) -> None:
        """Refuse train-mode BN/dropout; check that two identical products agree."""
        with second_order(self.method):
            self._check_determinism()

    def _check_determinism(self) -> None:
        check_eval_mode(self.model, "the loss, and so its Hessian, is not one function of the "
                        "parameters")
        attn = [n or "model" for n, m in self.model.named_modules()
                if isinstance(m, nn.MultiheadAttention) and m.training and m.dropout > 0]
        if attn:  # its attention dropout is a float, not an nn.Dropout that check_eval_mode sees
            raise ValueError(f"model has nn.MultiheadAttention in training mode with attention "
                             f"dropout > 0 ({', '.join(attn[:3])}): random masks change the loss "
                             "from one call to the next, so its Hessian is not defined. Call "
                             "model.eval() first (or set their .dropout = 0.0).")
        self._graph = self._graph or self._keep_graph()
        def draw_v():
            return self.unflatten(self.random_vector(torch.Generator().manual_seed(self._seed + 12345)))

        first = next(self.batches(), None)
        if first is None:  # this rank's shard is empty (more ranks than samples)
            return
        if self._graph is not None:  # its outputs vs a second forward: no product spent
            h1, (a, b) = self._graph.check(self, draw_v)
        else:
            v = draw_v()
            a, b = (h1 := self.flatten(self.batch_hvp(v, first))), self.flatten(self.batch_hvp(v, first))
        if not torch.isfinite(h1).all():
            raise FloatingPointError(_NOT_FINITE)
        if not _graph.outputs_agree(a, b):
            raise RuntimeError("Two identical Hessian-vector products differ: the model is not "
                               "deterministic (dropout, batch statistics or other randomness in "
                               "training mode). Call model.eval() before computing curvature.")


def hvp(model: nn.Module, loss_fn, data, v, *, batch_size: int | None = None,
        method: str = "auto", params: str | Iterable[str] | None = None):
    r"""Hessian-vector product Hv of the data-set mean loss, H = ∇²_θ (1/N) Σ_i ℓ_i.

    Forward-over-reverse by default: Hv = ∂/∂t ∇L(θ + t v)|_{t=0} = ``jvp(grad(L), θ, v)``,
    accumulated over batches as Σ_b n_b H_b v / N. ``v`` is a dict ``name -> tensor`` (missing names
    are zero) or a flat vector; the result has the same form. Pearlmutter's trick at the cost of
    about two gradients (Yao et al. 2020, arXiv 1912.07145). ``data``, ``loss_fn`` and ``params``
    (names, module names or glob patterns) are as for :class:`HessianOperator`.
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


