"""The grid evaluator behind :func:`toolkit.landscape.surface_2d` and
:func:`toolkit.landscape.interpolate` (private: the public API is in :mod:`toolkit.landscape`).

:func:`evaluate_grid` evaluates L(θ* + Σ_j c_j d_j) at many points c. Points are evaluated in chunks
by :meth:`GridEvaluator.evaluate`, which takes a list of point indices — the unit of work a sharded
run distributes over ranks. Within a chunk the points are either vectorised with
:func:`torch.func.vmap` over :func:`torch.func.functional_call` (small problems, where the
per-point Python overhead dominates), evaluated as batched matmuls when the model is a chain of
``nn.Linear`` layers and elementwise activations (``"fused"``: one ``baddbmm`` per layer for all
the chunk's points, no vmap or re-binding of parameters), or looped (large problems, already at
matmul throughput):
the loop writes each point into the module's own parameters, saved before and restored after
(even on an error), which costs no allocation and no re-binding per point. In both modes the
first parametrised layer is not recomputed per point when it is linear in its parameters
(``nn.Linear``, ``nn.Conv*``): its output on the plane is ``z(a, b) = z(θ*) + a z(δ) + b z(η)``,
three products per data batch instead of one per point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from contextlib import nullcontext as _nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from . import batches as B
from . import distributed as dist_utils
from ._checks import check_choice, check_positive_int
from .utils import eval_mode, model_device
from .utils import progress as _progress_bar

__all__ = ["METRICS", "MODES", "GridEvaluator", "evaluate_grid", "first_linear_layer",
           "linear_chain"]

Params = dict[str, torch.Tensor]
METRICS = ("loss", "accuracy")
MODES = ("auto", "vmap", "loop", "fused")
_MEMORY_BUDGET = 256 * 2**20  # bytes per chunk of vectorised grid points, at most
_CACHE_BUDGET = 8 * 2**20  # bytes per chunk that keep a chunk's working set in cache
# fused mode has a few calls per layer per chunk, so small chunks cost little: keep a chunk's
# weights and activations within the per-core L2 cache (2 MiB: 30 points for the 1-64-64-1 MLP
# on 50 samples, 14 ms, against 15 ms at 16 points and 20 ms at 64, one thread)
_FUSED_CACHE_BUDGET = 2 * 2**20
_FUSED_MIN_CHUNK = 8  # larger problems (digits MLP 64-256-256-10, N=1347): 8 points per bmm
#                       beat 1 by 1.26x although the chunk no longer fits in L2
# parameter-free modules applied elementwise: on a (points, samples, features) tensor they act
# as on each point's (samples, features) one. Dropout is the identity in eval mode.
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU,
                nn.Softplus, nn.Hardtanh, nn.Identity, nn.Dropout)
# batch size × #parameters above which looping over points beats vmap (measured on CPU, one
# thread: vmap wins 3.7× at 2e5, ties near 1e6, loses 2× at 1e7 — the batched matmuls of
# different weights run below matmul speed and the chunk's activations leave the cache)
_LOOP_THRESHOLD = 1.5e6


class _StopForward(Exception):
    pass


def _input_of(model: nn.Module, module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input that ``module`` receives when ``model(x)`` runs; the forward stops right there."""
    captured = {}

    def hook(mod, args):
        captured["x"] = args[0]
        raise _StopForward

    h = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    except _StopForward:
        pass
    finally:
        h.remove()
    return captured


def first_linear_layer(model: nn.Module, x: torch.Tensor) -> str | None:
    """Name of the first parametrised module if its output is linear in its own parameters and
    its input depends on the data only; else None.

    Checked on a two-sample slice: the module is the first leaf with parameters to run, it runs
    once, no parameter lives outside a leaf module that runs (so nothing parametrised happens
    before it), and m(x; θ + d₁ + 2d₂) = m(x; θ) + m(x; d₁) + 2 m(x; d₂) numerically.
    """
    calls: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append(names[mod])) for m in leaves]
    try:
        with torch.no_grad():
            model(x[:2])
    finally:
        for h in hooks:
            h.remove()
    owners = {n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}
    parametrised_calls = [c for c in calls if c in owners]
    if not parametrised_calls or not owners <= set(calls):
        return None
    first = parametrised_calls[0]
    if calls.count(first) != 1:
        return None
    module = dict(model.named_modules())[first]
    if not isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return None
    # linearity check on the actual input of that module
    captured = _input_of(model, module, x[:2])
    own = dict(module.named_parameters())
    gen = torch.Generator().manual_seed(0)
    d1 = {n: torch.randn(p.shape, generator=gen).to(p) for n, p in own.items()}
    d2 = {n: torch.randn(p.shape, generator=gen).to(p) for n, p in own.items()}
    with torch.no_grad():
        z = lambda ps: functional_call(module, ps, (captured["x"],))
        lhs = z({n: own[n] + d1[n] + 2 * d2[n] for n in own})
        rhs = z(own) + z(d1) + 2 * z(d2)
    scale = float(lhs.abs().max()) + 1e-12
    return first if float((lhs - rhs).abs().max()) <= 1e-4 * scale else None


def linear_chain(model: nn.Module, first: str | None) -> list[tuple[str, nn.Module]] | None:
    """The modules after ``first`` (the first layer, see :func:`first_linear_layer`) when the
    model's forward is a plain chain — each module applied to the previous one's output — whose
    links after ``first`` are ``nn.Linear`` layers (weight and optional bias, no hooks) and
    :data:`_ELEMENTWISE` activations, and whose parameters all belong to those layers; else None.

    The structure is read from a ``torch.fx`` trace, so a skip connection, a reshape or any other
    operation between the modules (or a model fx cannot trace) makes it None."""
    if first is None:
        return None
    try:
        # no autowrapping of math functions: a model that needs it is no chain of modules
        graph = torch.fx.Tracer(autowrap_modules=(), autowrap_functions=()).trace(model)
    except Exception:  # noqa: BLE001 (control flow, unsupported ops: not a chain we can read)
        return None
    nodes = list(graph.nodes)
    if (len(nodes) < 3 or nodes[0].op != "placeholder" or nodes[-1].op != "output"
            or any(n.op == "placeholder" for n in nodes[1:])):
        return None
    mods = dict(model.named_modules())
    previous, chain = nodes[0], []
    for node in nodes[1:-1]:
        if node.op != "call_module" or node.args != (previous,) or node.kwargs:
            return None
        chain.append((node.target, mods[node.target]))
        previous = node
    if nodes[-1].args != (previous,):
        return None
    names = [n for n, _ in chain]
    if first not in names:
        return None
    after = chain[names.index(first) + 1:]
    for _, module in [chain[names.index(first)], *after]:  # the first layer too: its plain
        if isinstance(module, nn.Linear):                    # weight is read by hessian._chain
            if (module._forward_hooks or module._forward_pre_hooks
                    or set(dict(module.named_parameters())) - {"weight", "bias"}):
                return None
        elif not isinstance(module, _ELEMENTWISE):
            return None
    linear_params = {f"{n}.{k}" for n, m in [chain[names.index(first)], *after]
                     if isinstance(m, nn.Linear) for k, _ in m.named_parameters()}
    if {n for n, _ in model.named_parameters()} != linear_params:
        return None
    return after


class _PatchedForward:
    """Temporarily replace one module's forward by a function returning a precomputed output."""

    def __init__(self, module: nn.Module):
        self.module, self.value = module, None

    def __enter__(self):
        self.module.forward = lambda *args, **kwargs: self.value
        return self

    def __exit__(self, *exc):
        del self.module.forward  # back to the class's forward
        return False


@dataclass
class GridEvaluator:
    """Evaluates L(origin + Σ_j c_j d_j) at grid points given by index into ``coords``.

    ``evaluate(indices)`` is the only entry point: it loops over data batches and, for each, over
    chunks of the requested points, accumulating per-point *sums* (loss × batch size, #correct),
    so that partial results from different ranks can simply be added.

    Per chunk of P points the parameters are built at once, Θ = 1·θ*ᵀ + C D (P×k times k×n,
    one ``addmm``), and so is the first layer's output on the plane when it is linear in its
    parameters, Z = 1·z(θ*)ᵀ + C [z(d_1); …; z(d_k)] — the per-point cost of that layer drops from a
    matmul to an axpy. Points are then evaluated by ``vmap`` over the rows of Θ or by a loop
    that writes θ_p into the module's parameters (see ``_loaded``). ``loss_fn`` is whatever the
    caller resolved (``landscape`` passes its faster cross-entropy for few classes).
    """

    model: nn.Module
    loss_fn: Callable
    data: object
    batch_size: int | None
    origin: Params
    directions: list[Params]
    coords: torch.Tensor  # (n_points, k)
    metrics: tuple[str, ...]
    chunk_size: int | None = None
    mode: str = "auto"
    exploit_linearity: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        batches = B.iterate(self.data, self.batch_size, self.device)
        b0 = next(batches, None)
        if b0 is None:
            raise ValueError("data is empty (no batch); pass at least one sample.")
        # one batch (full-batch evaluation): keep it, so its first-layer outputs are built once
        self._one_batch = b0 if next(batches, None) is None else None
        self._z_cache: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None
        # the first-layer shortcut needs model(x): tuple batches only
        self.first = (first_linear_layer(self.model, b0[0])
                      if self.exploit_linearity and isinstance(b0, tuple) else None)
        n0 = B.batch_len(b0)
        mods = dict(self.model.named_modules())
        self.first_module = mods[self.first] if self.first is not None else None
        self.prefix = f"{self.first}." if self.first else ""  # "" when the model is one layer
        self.first_names = ({self.prefix + n for n, _ in self.first_module.named_parameters()}
                            if self.first is not None else set())
        # flat layout of the parameters that are built per point (all but the first layer's)
        self.names = [n for n in self.origin if n not in self.first_names]
        self.shapes = [self.origin[n].shape for n in self.names]
        self.origin_flat = [self.origin[n].reshape(-1) for n in self.names]
        self.dir_flat = [torch.stack([d[n].reshape(-1) for d in self.directions])
                         for n in self.names]
        self._layout = None  # fused mode's flat layout, built with the first-layer outputs
        n_params = sum(t.numel() for t in self.origin.values())
        act = self._activation_elements(B.select(b0, slice(0, 2))) / min(n0, 2) * n0
        chain = (linear_chain(self.model, self.first)
                 if self.mode in ("auto", "fused") and isinstance(b0, tuple) else None)
        if self.mode == "fused" and chain is None:
            raise ValueError("mode='fused' needs a model that is a chain of nn.Linear layers and "
                             "elementwise activations with a linear first layer (like "
                             "toolkit.models.MLP), called as model(x); use mode='vmap' or "
                             "'loop' (or 'auto') for this model.")
        if self.mode == "auto":  # fused beat vmap 2.4x and loop 1.4x where it applies
            self.mode = ("fused" if chain is not None
                         else "loop" if n0 * n_params > _LOOP_THRESHOLD else "vmap")
        self.chain = chain if self.mode == "fused" else None
        # fused mode takes its loss with one vmap per group of chunks (a vmap call costs more
        # than a chunk's matmuls on small problems); a group's outputs stay within the budget
        self.group_size = None
        if self.mode == "loop":
            # loop mode writes points into the model's parameters, and the origin may be a view
            # of those very parameters: keep a copy of it
            self.origin_flat = [o.clone() for o in self.origin_flat]
        if self.chunk_size is None:
            if self.mode == "loop":
                self.chunk_size = 64  # only sets the progress bar's granularity
            else:  # a chunk's parameters and activations should fit in cache, but (vmap) not
                # less than 16 points (per-call overhead); never more than memory allows
                elem = self.origin_flat[0].element_size() if self.origin_flat else 4
                fused = self.mode == "fused"
                by_cache = (_FUSED_CACHE_BUDGET if fused else _CACHE_BUDGET) // (
                    elem * (n_params + act))
                by_memory = _MEMORY_BUDGET // (elem * (n_params + 3 * act))
                floor = _FUSED_MIN_CHUNK if fused else 16
                self.chunk_size = int(max(1, min(len(self.coords), by_memory,
                                                 max(floor, by_cache))))
        if self.mode == "fused":
            with torch.no_grad():
                out = B.model_output(self.model, B.select(b0, slice(0, 2)))
            per_point = max(1, out.numel() // min(n0, 2) * n0)
            elem = out.element_size()
            self.group_size = int(max(self.chunk_size, min(
                len(self.coords), _MEMORY_BUDGET // (4 * elem * per_point))))

    @property
    def step(self) -> int:
        """Points per call of ``_chunk`` (a group of chunks in fused mode)."""
        return self.group_size or self.chunk_size

    def _activation_elements(self, batch) -> int:
        total = [0]
        leaves = [m for m in self.model.modules() if next(m.children(), None) is None]
        hooks = [m.register_forward_hook(
            lambda mod, i, o: total.__setitem__(0, total[0] + (o.numel() if isinstance(
                o, torch.Tensor) else 0))) for m in leaves]
        try:
            with torch.no_grad():
                B.model_output(self.model, batch)
        finally:
            for h in hooks:
                h.remove()
        return max(total[0], 1)

    def _first_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """First-layer output at the origin and along each direction, flattened: (n,), (k, n)."""
        if self._z_cache is not None and self._z_cache[0] is x:
            return self._z_cache[1]
        inp = _input_of(self.model, self.first_module, x)["x"]
        prefix = self.prefix
        own = [n[len(prefix):] for n in self.first_names]
        outs = [functional_call(self.first_module, {n: p[prefix + n] for n in own}, (inp,))
                for p in (self.origin, *self.directions)]
        self.first_shape = outs[0].shape
        z = outs[0].reshape(-1), torch.stack([o.reshape(-1) for o in outs[1:]])
        self._z_cache = (x, z)
        return z

    @contextmanager
    def _loaded(self):
        """Loop mode: the module's parameters become the per-point slots written by ``_chunk``;
        their values are saved on entry and restored on exit, even after an error."""
        params = dict(self.model.named_parameters())
        targets = [params[n].detach() for n in self.names]
        saved = [t.clone() for t in targets]
        self._slots = [t.view(1, -1) if t.is_contiguous()
                       else t.new_empty(1, t.numel()) for t in targets]
        self._targets = [None if t.is_contiguous() else t for t in targets]
        try:
            yield
        finally:
            for t, v in zip(targets, saved):
                t.copy_(v)

    def _batched_params(self, c: torch.Tensor) -> Params:
        """Θ_p = θ* + Σ_j c_pj d_j for the P points of a chunk: dict of (P, *shape) tensors."""
        return {n: torch.addmm(o, c, d).view(len(c), *shape) for n, o, d, shape in
                zip(self.names, self.origin_flat, self.dir_flat, self.shapes)}

    def _metrics(self, params: Params, z, batch, patch):
        """Loss and #correct at one point (``params`` unbatched; vmapped over points)."""
        if patch is not None:
            patch.value = z.view(self.first_shape)
        # params=None: the point is already loaded into the module's own parameters (loop mode)
        return self._scores(B.model_output(self.model, batch, params), batch)

    def _fused_layout(self, z):
        """Fused mode: (the (k+1, ·) matrix whose rows are θ* and the directions d_j, each
        preceded by the first layer's output z(θ*), z(d_j); the steps of the chain). One matmul
        per chunk then yields every point's parameters and first-layer output; the steps read
        slices of that row. Weights are stored transposed, (in, out): ``bmm`` with a
        non-transposed right factor ran 1.4× faster here."""
        if self._layout is not None and self._layout[0] is z:
            return self._layout[1]
        shapes = {f"{name}.weight": (m.out_features, m.in_features)
                  for name, m in self.chain if isinstance(m, nn.Linear)}
        offsets, at, origin, dirs = {}, z[0].numel(), [z[0]], [z[1]]
        for n, o, d in zip(self.names, self.origin_flat, self.dir_flat):
            if n in shapes:  # W stored as Wᵀ, row-major
                o = o.view(shapes[n]).T.reshape(-1)
                d = d.view(len(d), *shapes[n]).transpose(1, 2).reshape(len(d), -1)
            origin.append(o)
            dirs.append(d)
            offsets[n] = (at, at + o.numel())
            at += o.numel()
        steps = []
        for name, module in self.chain:
            if isinstance(module, nn.Linear):
                bias = offsets[f"{name}.bias"] if module.bias is not None else None
                steps.append((offsets[f"{name}.weight"], bias, module.out_features,
                              module.in_features))
            else:  # ReLU in place (the chunk's buffers are ours), any other as a call
                steps.append(torch.relu_ if type(module) is nn.ReLU else module)
        # rows [θ*; d_1; …; d_k] against coordinates (1, c_1, …, c_k): a plain mm, whose
        # output is not first filled with a broadcast θ* as addmm's is
        basis = torch.cat([torch.cat(origin)[None], torch.cat(dirs, 1)])
        self._layout = (z, (basis, steps))
        return basis, steps

    def _fused_outputs(self, c: torch.Tensor, z) -> torch.Tensor:
        """Model outputs at a group of points, (G, *output shape), ``chunk_size`` points at a
        time: one matmul gives the chunk's parameters Θ_p and first-layer outputs, then per
        ``nn.Linear`` one ``baddbmm`` with the chunk's weight matrices and per activation one
        elementwise call on all its points. Activations stay (points, rows, features), rows being
        the samples times any leading axes (elementwise modules do not care). Chunks reuse the
        same buffers and views (``out=``, ReLU in place): fresh buffers of this size cost page
        faults that made the allocations as expensive as the matmuls on the 1-64-64-1 problem,
        and the per-chunk Python work is the other cost left there."""
        basis, steps = self._fused_layout(z)
        size, first, lead = self.chunk_size, z[0].numel(), self.first_shape[:-1]
        rows = first // self.first_shape[-1]
        new = dict(dtype=basis.dtype, device=basis.device)
        rows_in = torch.empty(size, basis.shape[1], **new)
        outs = [torch.empty(size, rows, st[2], **new) if isinstance(st, tuple) else None
                for st in steps]

        def views(p):  # (Θ rows, first-layer output, per step: activation or (W, b, out))
            theta = rows_in[:p]
            plan = []
            for st, buf in zip(steps, outs):
                if buf is None:
                    plan.append(st)
                    continue
                (w0, w1), bias, d_out, d_in = st
                b = theta[:, bias[0]:bias[1]].unsqueeze(1) if bias is not None else None
                plan.append((theta[:, w0:w1].view(p, d_in, d_out), b, buf[:p]))
            return theta, theta[:, :first].view(p, rows, -1), plan

        coords = torch.cat([torch.ones(len(c), 1, **new), c], 1)
        full, result = views(size), None
        for start in range(0, len(c), size):
            ci = coords[start:start + size]
            theta, h, plan = full if len(ci) == size else views(len(ci))
            torch.mm(ci, basis, out=theta)
            for st in plan:
                if not isinstance(st, tuple):
                    h = st(h)
                elif st[1] is not None:
                    h = torch.baddbmm(st[1], h, st[0], out=st[2])
                else:
                    h = torch.bmm(h, st[0], out=st[2])
            if result is None:
                result = h.new_empty(len(c), *h.shape[1:])
            result[start:start + len(ci)] = h
        return result.view(len(c), *lead, result.shape[-1])

    def _scores(self, out, batch):
        """Loss and #correct of one point's outputs."""
        loss = B.batch_loss(self.loss_fn, out, batch)
        y = B.targets(batch)
        pred = B.logits(out) if "accuracy" in self.metrics else None
        if (pred is not None and isinstance(y, torch.Tensor) and not y.dtype.is_floating_point
                and pred.dim() == 2 and y.dim() == 1):
            correct = (pred.argmax(dim=-1) == y).sum().to(loss.dtype)
        else:
            correct = torch.zeros((), dtype=loss.dtype, device=loss.device)
        return loss, correct

    def _chunk(self, c, batch, z, patch):
        if self.mode == "fused":  # c is a group: outputs chunk by chunk, scores in one vmap
            return vmap(lambda o: self._scores(o, batch))(self._fused_outputs(c, z))
        if self.mode == "vmap":
            params = self._batched_params(c)
            zc = torch.addmm(z[0], c, z[1]) if z is not None else None
            fn = lambda p, zi: self._metrics(p, zi, batch, patch)
            return vmap(fn, in_dims=(0, 0 if zc is not None else None))(params, zc)
        # loop: write each point straight into the module's own parameters (``_loaded`` saved
        # them and restores them) and run the plain forward pass: per point one rank-k update
        # per tensor, no allocation, no re-binding of parameters as functional_call does
        zbuf = torch.empty_like(z[0]).view(1, -1) if z is not None else None
        losses, correct = [], []
        for i in range(len(c)):
            ci = c[i:i + 1]
            for o, d, slot, param in zip(self.origin_flat, self.dir_flat, self._slots,
                                         self._targets):
                torch.addmm(o.view(1, -1), ci, d, out=slot)
                if param is not None:  # a non-contiguous parameter (channels_last): copy in
                    param.copy_(slot.view(param.shape))
            if zbuf is not None:
                torch.addmm(z[0].view(1, -1), ci, z[1], out=zbuf)
            loss, corr = self._metrics(None, zbuf, batch, patch)
            losses.append(loss)
            correct.append(corr)
        return torch.stack(losses), torch.stack(correct)

    @torch.no_grad()
    def evaluate(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """Dataset-mean metrics at the grid points ``coords[indices]`` (NaN where non-finite)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        loss_sum = torch.zeros(len(idx), dtype=torch.float64)
        correct = torch.zeros(len(idx), dtype=torch.float64)
        n_total, classification = 0, False
        patch = _PatchedForward(self.first_module) if self.first is not None else None
        batches = ([self._one_batch] if self._one_batch is not None
                   else B.iterate(self.data, self.batch_size, self.device))
        with self._loaded() if self.mode == "loop" else _nullcontext():
            for batch in batches:
                y, size = B.targets(batch), B.batch_len(batch)
                classification = ("accuracy" in self.metrics and isinstance(y, torch.Tensor)
                                  and not y.dtype.is_floating_point)
                z = self._first_outputs(batch[0]) if patch is not None else None
                with patch if patch is not None else _nullcontext():
                    for start in range(0, len(idx), self.step):
                        sel = idx[start:start + self.step]
                        ls, cs = self._chunk(self.coords[sel], batch, z, patch)
                        loss_sum[start:start + len(sel)] += ls.double().cpu() * size
                        correct[start:start + len(sel)] += cs.double().cpu()
                n_total += size
        loss = (loss_sum / max(n_total, 1)).numpy()
        bad = ~np.isfinite(loss)
        loss[bad] = np.nan
        out = {"loss": loss}
        if classification:
            acc = (correct / max(n_total, 1)).numpy()
            acc[bad] = np.nan
            out["accuracy"] = acc
        return out



def evaluate_grid(model: nn.Module, loss_fn: Callable, data, origin: Params,
                  directions: list[Params], coords: torch.Tensor, *, batch_size: int | None,
                  metrics: tuple[str, ...], chunk_size: int | None, mode: str,
                  progress: bool, desc: str,
                  distributed: bool | None = None) -> dict[str, np.ndarray]:
    """Dataset-mean ``metrics`` at every row of ``coords`` (the driver of ``landscape.surface_2d``
    and ``landscape.interpolate``): the model in eval mode, a progress bar, chunks of points.

    ``loss_fn`` is already resolved: a callable under the batch contract of
    :mod:`toolkit.batches` (``(outputs, targets)``, or ``(outputs, batch)`` for a marked loss or
    dict batches) or None for the model's own ``outputs.loss``. Under torchrun (or ``distributed=True``)
    each rank evaluates its contiguous share of the grid points and the shares are gathered in
    order, so every rank returns the whole grid."""
    for m in metrics:
        check_choice(m, "each entry of metrics", METRICS)
    check_choice(mode, "mode", MODES)
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size (or None for automatic)")
    device = model_device(model)
    with eval_mode(model):
        ev = GridEvaluator(model, loss_fn, data, batch_size, origin, directions,
                           coords.to(device=device, dtype=next(iter(origin.values())).dtype),
                           tuple(metrics), chunk_size=chunk_size, mode=mode, device=device)
        sharded = dist_utils.is_distributed() if distributed is None else distributed
        mine = dist_utils.shard_range(len(coords)) if sharded else range(len(coords))
        results: dict[str, list[np.ndarray]] = {}
        with _progress_bar(total=len(mine), desc=desc,
                           enabled=progress and dist_utils.is_main()) as bar, \
                dist_utils.oom_hint("chunk_size", max(1, ev.chunk_size // 2)):
            for start in range(mine.start, mine.stop, ev.step):
                stop = min(mine.stop, start + ev.step)
                part = ev.evaluate(range(start, stop))
                for k, v in part.items():
                    results.setdefault(k, []).append(v)
                bar.update(stop - start)
    out = {k: np.concatenate(v) for k, v in results.items() if k in metrics}
    if sharded:  # gather every rank's share in order (a rank with no points sends an empty one)
        keys = dist_utils.broadcast_object(sorted(out))  # rank 0 always holds points
        out = {k: dist_utils.all_gather_cat(torch.from_numpy(
            out.get(k, np.zeros(0))).double()).numpy() for k in keys}
    return out
