r"""Curvature of the training loss: Hessian-vector products, extreme eigenvalues, trace,
spectral density, per-class Hessians and sharpness.

The object of study is the Hessian of the *data-set mean* loss with respect to the parameters,

.. math::  H = ∇²_θ L(θ),\qquad L(θ) = \frac1N \sum_{i=1}^N ℓ(f(x_i; θ), y_i),

never formed: everything is built on Hessian-vector products Hv, accumulated over data batches as
per-batch *sums* Σ_b n_b H_b v (so a sharded run all-reduces the sums and the counts) and divided
by N at the end. Two products are implemented: forward-over-reverse, ``jvp(grad(L))`` with
:mod:`torch.func`, and reverse-over-reverse, ``autograd.grad`` twice (Pearlmutter's trick);
``benchmarks/bench_hessian.py`` times both and :data:`DEFAULT_HVP` picks the faster per device.

References: Ghorbani, Krishnan, Xiao 2019 (arXiv 1901.10159) and Yao et al. 2020 — PyHessian
(arXiv 1912.07145) for Lanczos, Hutchinson and stochastic Lanczos quadrature on networks;
Papyan 2020 (arXiv 2008.11865) for the bulk-plus-outliers spectrum; Foret et al. 2021
(arXiv 2010.01412) and Kwon et al. 2021 (arXiv 2102.11600) for (adaptive) sharpness;
Cohen et al. 2021 (arXiv 2103.00065) for the edge of stability; Rangwani et al. 2022
(arXiv 2212.13827) for per-class Hessians under class imbalance.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, grad, jvp
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import distributed as dist_utils
from ._checks import check_choice, check_eval_mode, check_module, check_positive, check_positive_int
from ._deprecated import moved
from .train import ASAM_ETA, get_loss, sam_scale
from .utils import as_tensors, iterate_batches, model_device

__all__ = ["HVP_METHODS", "DEFAULT_HVP", "HessianOperator", "hvp", "Eigenpairs", "top_eigenvalues",
           "TraceEstimate", "trace", "lanczos", "SpectralDensity", "spectral_density",
           "class_subset", "class_hessian", "minority_majority", "Sharpness", "sharpness",
           "LambdaMaxTracker"]

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
    tells you to call ``model.eval()``. ``n_hvp`` counts full-data products.
    """

    def __init__(self, model: nn.Module, loss_fn, data, *, batch_size: int | None = None,
                 params: Iterable[str] | None = None, method: str = "auto", check: bool = True,
                 seed: int = 0, distributed: bool | None = None):
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
        self.n_hvp = 0
        self._seed = seed
        if check:
            self.check_determinism()

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
        total, count = torch.zeros(self.numel, device=self.device, dtype=self.dtype), 0
        for x, y in self.batches():
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
        gen = torch.Generator().manual_seed(self._seed + 12345)
        v = self.unflatten(self.random_vector(gen))
        first = next(self.batches(), None)
        if first is None:  # this rank's shard is empty (more ranks than samples)
            return
        x, y = first
        h1 = self.flatten(self.batch_hvp(v, x, y))
        h2 = self.flatten(self.batch_hvp(v, x, y))
        scale = float(h1.norm()) + float(h2.norm())
        if not torch.isfinite(h1).all():
            raise FloatingPointError("The Hessian-vector product is not finite at these "
                                     "parameters (diverged model or loss?).")
        if float((h1 - h2).norm()) > 1e-5 * scale + 1e-12:
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


# ------------------------------------------------------------------------------- eigenvalues


@dataclass
class Eigenpairs:
    """Extreme Hessian eigenpairs. ``eigenvalues`` sorted from the requested end (largest first
    for ``which="largest"``, smallest first for ``"smallest"``); ``eigenvectors`` are dicts
    ``name -> tensor`` (unit norm over all of them); ``n_hvp`` products were used."""

    eigenvalues: np.ndarray
    eigenvectors: list[Params]
    n_hvp: int
    converged: bool
    method: str


def _lanczos_eigs(op: HessianOperator, k: int, which: str, tol: float, max_iter: int,
                  v0: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    """The ``k`` eigenpairs at one end of the spectrum: ARPACK for the largest, a
    full-reorthogonalised Lanczos for the smallest (see :func:`_smallest_eigs` for why)."""
    if which == "smallest":
        return _smallest_eigs(op, k, tol, max_iter, v0)
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    ncv = min(op.numel, max(2 * k + 2, 8))  # small Krylov space: converged in ~10 products
    maxiter = max(1, math.ceil(max_iter / max(ncv - k, 1)))
    try:
        vals, vecs = eigsh(op.as_linear_operator(), k=k, which="LA", tol=tol, maxiter=maxiter,
                           ncv=ncv, v0=v0.double().cpu().numpy())
    except ArpackNoConvergence as err:
        if len(err.eigenvalues) == 0:
            raise RuntimeError(f"Lanczos did not converge within max_iter={max_iter} products; "
                               "raise max_iter or tol.") from err
        warnings.warn(f"Lanczos converged on {len(err.eigenvalues)} of {k} eigenvalues within "
                      f"max_iter={max_iter}; returning those.", stacklevel=3)
        return err.eigenvalues, err.eigenvectors, False
    return vals, vecs, True


_SMALLEST_MIN_STEPS = 20  # before the first convergence test: let the Krylov space see the ends
_SMALLEST_CHECK_EVERY = 5


def _smallest_eigs(op: HessianOperator, k: int, tol: float, max_steps: int,
                   v0: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    r"""The ``k`` smallest eigenpairs by Lanczos with full reorthogonalisation and no restarts.

    Why not ARPACK as for the largest end: a trained network's Hessian has a dense cluster of
    thousands of eigenvalues at 0 and a few small negative ones. ARPACK's tests are relative
    (‖Hu − θu‖ ≤ tol·|θ|): run on H they never pass when λ_min ≈ 0; run on λ_max·I − H they pass at
    a residual of tol·λ_max, which an interior Ritz value inside the cluster meets long before the
    small restarted Krylov space has found the negative direction, so a positive value could be
    reported as converged where λ_min < 0. Here the Krylov space only grows, so the smallest Ritz
    value decreases
    monotonically towards λ_min, and the test is relative to the value itself,

    .. math:: β_m |s_{m,i}| ≤ \mathrm{tol}·\max(|θ_i|,\ \mathrm{tol}·\max_j|θ_j|),\quad i < k,

    (the floor tol²·range stands in when λ_min is 0 to the last digit), held at two consecutive
    checks five steps apart. Converged results are validated with explicit residuals
    ‖Hu − θu‖ (k more products). Lanczos gives no certificate that nothing lies further down, but
    this is the standard practice (Golub & Van Loan §10.1), and it matches dense ``eigvalsh`` on
    trained MLPs whose spectra have the cluster (``tests/test_hessian.py``). Memory: one
    parameter-sized vector per step (at most ``max_steps``).
    """
    vector_bytes = op.numel * torch.empty((), dtype=op.dtype).element_size()
    fit = dist_utils.auto_chunk_size(vector_bytes, device=op.device,
                                     minimum=_SMALLEST_MIN_STEPS + 2 * k)
    if fit < max_steps:
        warnings.warn(f"the Lanczos basis for the smallest eigenvalues is capped at {fit} vectors "
                      f"({fit * vector_bytes / 2**20:.0f} MiB) by the memory budget instead of "
                      f"{max_steps}; restrict params= to a block to go further.", stacklevel=3)
        max_steps = fit
    basis: list[torch.Tensor] = [v0.to(op.dtype) / v0.norm()]
    alphas, betas, previous, converged = [], [], None, False
    theta = s = None
    for m in range(1, max_steps + 1):
        w = op.matvec(basis[-1])
        alphas.append(float(torch.dot(w.double(), basis[-1].double())))
        stack = torch.stack(basis, dim=1)
        for _ in range(2):  # "twice is enough" keeps the basis orthogonal in floating point
            w = w - stack @ (stack.T @ w)
        beta = float(w.norm())
        exhausted = beta <= 1e-12 * max(abs(a) for a in alphas) + 1e-30
        if m >= max(_SMALLEST_MIN_STEPS, 2 * k + 2) and m % _SMALLEST_CHECK_EVERY == 0 or (
                exhausted or m == max_steps):
            t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
            theta, s = np.linalg.eigh(t)
            bound = tol * np.maximum(np.abs(theta[:k]), tol * np.abs(theta).max())
            residual = beta * np.abs(s[-1, :k])
            stable = previous is not None and np.all(np.abs(theta[:k] - previous) <= bound)
            previous = theta[:k].copy()
            if exhausted or (np.all(residual <= bound) and stable):
                converged = True
                break
        if m == max_steps:
            break
        betas.append(beta)
        basis.append(w / beta)
    stack = torch.stack(basis, dim=1)
    ritz = stack.double() @ torch.from_numpy(s[:, :k]).to(stack.device)
    vals = theta[:k]
    if converged:  # validation: explicit residuals, immune to any loss of orthogonality
        bound = tol * np.maximum(np.abs(vals), tol * np.abs(theta).max())
        for i in range(k):
            u = ritz[:, i].to(op.dtype)
            explicit = float((op.matvec(u).double() - vals[i] * u.double()).norm())
            converged &= explicit <= 2 * bound[i] + 1e-12
    if not converged:
        warnings.warn(f"Lanczos for the smallest eigenvalues did not converge within "
                      f"max_iter={max_steps} products; returning the current Ritz values "
                      "(upper bounds on the true ones). Raise max_iter or tol.", stacklevel=3)
    return vals, ritz.cpu().numpy(), converged


def _power_eigs(op: HessianOperator, k: int, which: str, tol: float, max_iter: int,
                gen: torch.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """Power iteration with deflation (on H − λ_max I for the smallest end)."""
    shift, converged_all = 0.0, True
    if which == "smallest":
        top, _, ok = _power_eigs(op, 1, "largest", tol, max_iter, gen)
        shift, converged_all = float(top[0]), ok
    found: list[tuple[float, torch.Tensor]] = []
    for _ in range(k):
        v = op.random_vector(gen)
        v /= v.norm()
        lam, converged = None, False
        for _ in range(max_iter):
            w = op.matvec(v) - shift * v
            for mu, u in found:
                w -= (mu - shift) * torch.dot(u, v) * u
            new = float(torch.dot(v, w))
            v = w / w.norm().clamp_min(1e-30)
            if lam is not None and abs(new - lam) <= tol * abs(new):
                lam, converged = new, True
                break
            lam = new
        found.append((lam + shift, v))
        converged_all &= converged
    vals = np.array([f[0] for f in found])
    vecs = torch.stack([f[1] for f in found], dim=1).double().cpu().numpy()
    return vals, vecs, converged_all


def top_eigenvalues(model: nn.Module, loss_fn, data, *, k: int = 1, which: str = "largest",
                    tol: float = 1e-3, max_iter: int = 100, batch_size: int | None = None,
                    method: str = "lanczos", hvp_method: str = "auto",
                    params: Iterable[str] | None = None, v0=None, seed: int = 0) -> Eigenpairs:
    r"""The ``k`` largest (or smallest) eigenvalues of the loss Hessian and their eigenvectors.

    ``method="lanczos"`` (default). For the largest end: implicitly restarted Lanczos (ARPACK
    through ``scipy.sparse.linalg.eigsh``, ``which="LA"``, a Krylov space of max(2k+2, 8)
    vectors) on a LinearOperator of Hessian-vector products. It stops when the residual
    ‖Hu − θu‖ ≤ tol·|θ|, which *guarantees* an eigenvalue within tol·|θ| (in practice the error
    is ~tol², see ``benchmarks/bench_hessian.py``: same number of products as power iteration
    for the top eigenvalue, 1000× more accurate), and it handles k > 1 without deflation.
    Memory: max(2k+2, 8) parameter-sized vectors. For the smallest end: Lanczos with full
    reorthogonalisation and a test relative to |θ| itself (floored at tol²·λ_max), validated by
    explicit residuals (:func:`_smallest_eigs`); it is correct where trained networks' Hessians
    have a dense cluster at 0 (typically 70–140 products; its budget is 3·``max_iter``·k), and
    keeps one vector per product (capped by the memory budget, with a warning).
    ``method="power"`` is power iteration with deflation (Yao et al. 2020, arXiv 1912.07145); it
    returns the largest-*magnitude* eigenvalue for ``"largest"``, and iterates on H − λ_max I for
    ``"smallest"``, stopping when the estimate changes by less than tol relatively, which
    guarantees nothing when the gap is small. ``max_iter`` is the budget of Hessian-vector
    products per eigenvalue, ``v0`` a warm start (flat or dict).
    """
    check_choice(which, "which", ("largest", "smallest"))
    check_choice(method, "method", ("lanczos", "power"))
    check_positive_int(k, "k")
    check_positive(tol, "tol")
    check_positive_int(max_iter, "max_iter")
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, method=hvp_method,
                         params=params, seed=seed)
    if k >= op.numel:
        raise ValueError(f"k={k} must be smaller than the number of parameters ({op.numel}).")
    gen = torch.Generator().manual_seed(seed)
    if method == "lanczos":
        start = op.random_vector(gen)
        if v0 is not None:
            start = op.flatten(v0) if isinstance(v0, Mapping) else v0.reshape(-1)
        # the smallest end converges more slowly (a cluster at 0 sits next to it): 3x the budget
        budget = max_iter * k * (3 if which == "smallest" else 1)
        vals, vecs, ok = _lanczos_eigs(op, k, which, tol, budget, start)
    else:
        vals, vecs, ok = _power_eigs(op, k, which, tol, max_iter, gen)
    order = np.argsort(-vals if which == "largest" else vals)
    vals, vecs = vals[order], vecs[:, order]
    vectors = [op.unflatten(torch.from_numpy(vecs[:, i]).to(op.dtype).to(op.device))
               for i in range(vecs.shape[1])]
    return Eigenpairs(eigenvalues=np.asarray(vals, dtype=np.float64), eigenvectors=vectors,
                 n_hvp=op.n_hvp, converged=ok, method=method)


# ------------------------------------------------------------------------------------- trace


@dataclass
class TraceEstimate:
    """A stochastic trace estimate with its standard error and the products it cost."""

    trace: float
    stderr: float
    n_hvp: int
    samples: np.ndarray
    method: str


def trace(model: nn.Module, loss_fn, data, *, n_samples: int = 100, method: str = "hutchinson",
          seed: int = 0, batch_size: int | None = None, hvp_method: str = "auto",
          params: Iterable[str] | None = None, progress: bool = True) -> TraceEstimate:
    r"""Stochastic estimate of tr(H) from ``n_samples`` Hessian-vector products.

    ``"hutchinson"``: tr(H) = E[zᵀHz] for Rademacher z (Hutchinson 1989; used for networks by
    Yao et al. 2020, arXiv 1912.07145); variance 2 Σ_{i≠j} H_ij².
    ``"hutch++"`` (Meyer, Musco, Musco, Woodruff 2021, arXiv 2010.09649): a third of the budget
    sketches the top of the spectrum, Q = orth(H S), whose part tr(QᵀHQ) is computed exactly; the
    rest estimates tr((I−QQᵀ)H(I−QQᵀ)) with Hutchinson. Exact when rank(H) ≤ n_samples/3; much
    lower variance than Hutchinson when a few outlier eigenvalues dominate, as for networks.
    """
    check_choice(method, "method", ("hutchinson", "hutch++"))
    if not isinstance(n_samples, int) or n_samples < (3 if method == "hutch++" else 1):
        raise ValueError(f"n_samples must be an integer >= {3 if method == 'hutch++' else 1} "
                         f"for {method}, got {n_samples!r}.")
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, method=hvp_method,
                         params=params, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(total=n_samples, desc=f"trace ({method})", disable=not progress, leave=False)
    exact_part = 0.0
    if method == "hutch++":
        s = n_samples // 3
        sketch = []
        for _ in range(s):
            sketch.append(op.matvec(op.random_vector(gen, "rademacher")).double())
            bar.update()
        q, _ = torch.linalg.qr(torch.stack(sketch, dim=1))
        for i in range(q.shape[1]):
            exact_part += float(q[:, i] @ op.matvec(q[:, i].to(op.dtype)).double())
            bar.update()
        n_rest = n_samples - 2 * s
    else:
        q, n_rest = None, n_samples
    samples = []
    for _ in range(n_rest):
        z = op.random_vector(gen, "rademacher").double()
        if q is not None:
            z = z - q @ (q.T @ z)
        samples.append(float(z @ op.matvec(z.to(op.dtype)).double()))
        bar.update()
    bar.close()
    samples_arr = np.asarray(samples)
    est = exact_part + float(samples_arr.mean())
    err = float(samples_arr.std(ddof=1) / math.sqrt(len(samples_arr))) if len(samples) > 1 \
        else math.nan
    return TraceEstimate(trace=est, stderr=err, n_hvp=op.n_hvp, samples=samples_arr,
                         method=method)


# ---------------------------------------------------------------------------- spectral density


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor,
            steps: int) -> tuple[np.ndarray, np.ndarray]:
    r"""``steps`` Lanczos iterations from v0 with full re-orthogonalisation.

    Returns the diagonal α (length m) and off-diagonal β (length m−1) of the tridiagonal
    T = Vᵀ H V, V the orthonormal Krylov basis. Stops early (m < steps) when the Krylov space
    becomes invariant. Orthogonalisation runs twice per step ("twice is enough"), which keeps
    the Ritz values free of the ghost copies plain Lanczos produces in floating point.
    """
    v = v0 / v0.norm()
    basis = [v]
    alphas, betas = [], []
    for j in range(steps):
        w = matvec(basis[j])
        alpha = float(torch.dot(w.double(), basis[j].double()))
        alphas.append(alpha)
        stack = torch.stack(basis, dim=1)
        for _ in range(2):
            w = w - stack @ (stack.T @ w)
        beta = float(w.norm())
        if j == steps - 1 or beta <= 1e-10 * max(abs(a) for a in alphas) + 1e-30:
            break
        betas.append(beta)
        basis.append(w / beta)
    return np.asarray(alphas), np.asarray(betas)


@dataclass
class SpectralDensity:
    r"""Gaussian-smoothed spectral density φ(t) on ``grid``.

    ``nodes[v]``, ``weights[v]``: the Ritz values θ_j and quadrature weights τ_j = (u_j)_1²
    (squared first components of the eigenvectors of T) of random vector v; Σ_j τ_j = 1.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: list[np.ndarray]
    weights: list[np.ndarray]
    sigma: float
    n_params: int
    n_hvp: int

    def integral(self) -> float:
        """∫ φ(t) dt on the grid (trapezoid rule); 1 up to discretisation."""
        return float(np.trapezoid(self.density, self.grid))

    def moment(self, k: int = 1) -> float:
        r"""Quadrature estimate of tr(H^k)/n = E_v[vᵀH^k v]: mean over vectors of Σ_j τ_j θ_j^k."""
        return float(np.mean([np.sum(w * t**k) for t, w in zip(self.nodes, self.weights)]))

    @property
    def trace_estimate(self) -> float:
        return self.n_params * self.moment(1)


def spectral_density(model: nn.Module, loss_fn, data, *, n_vectors: int = 4, steps: int = 60,
                     sigma: float | None = None, grid=None, n_grid: int = 1000, seed: int = 0,
                     batch_size: int | None = None, hvp_method: str = "auto",
                     params: Iterable[str] | None = None,
                     progress: bool = True) -> SpectralDensity:
    r"""Eigenvalue density of the Hessian by stochastic Lanczos quadrature (SLQ).

    Ghorbani, Krishnan, Xiao 2019 (arXiv 1901.10159); Yao et al. 2020 (arXiv 1912.07145). For a
    random unit vector v and m Lanczos steps, T = U Θ Uᵀ gives the Gauss quadrature

    .. math::  vᵀ g(H) v ≈ Σ_{j=1}^m τ_j\, g(θ_j),\qquad τ_j = U_{1j}^2,

    so with g a Gaussian of width σ, averaging over ``n_vectors`` vectors,
    φ(t) = (1/n_v) Σ_v Σ_j τ_j^{(v)} 𝒩(t; θ_j^{(v)}, σ²) approximates the smoothed density
    (1/n) Σ_i 𝒩(t; λ_i, σ²); it integrates to 1 because Σ_j τ_j = ‖v‖² = 1. (The weights are the
    *squared* first components. PyHessian's SLQ once squared the whole eigenvector matrix, its
    PR #18, corrected by its PR #23 in 2024.) σ defaults to 1 % of the Ritz values' range;
    ``grid`` defaults to ``n_grid`` points covering them ± 6σ.
    """
    check_positive_int(n_vectors, "n_vectors")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}.")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive (or None for 1% of the range), got {sigma}.")
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, method=hvp_method,
                         params=params, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in tqdm(range(n_vectors), desc="SLQ", disable=not progress, leave=False):
        v0 = op.random_vector(gen, "rademacher")
        a, b = lanczos(op.matvec, v0, min(steps, op.numel))
        theta, u = np.linalg.eigh(np.diag(a) + np.diag(b, 1) + np.diag(b, -1))
        nodes.append(theta)
        weights.append(u[0] ** 2)
    all_nodes = np.concatenate(nodes)
    lo, hi = float(all_nodes.min()), float(all_nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 1e-3 * max(abs(hi), 1.0)
    grid = (np.linspace(lo - 6 * sigma, hi + 6 * sigma, n_grid) if grid is None
            else np.asarray(grid, dtype=np.float64))
    density = np.zeros_like(grid)
    for theta, tau in zip(nodes, weights):
        z = (grid[:, None] - theta[None, :]) / sigma
        density += (np.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))) @ tau
    density /= n_vectors
    return SpectralDensity(grid=grid, density=density, nodes=nodes, weights=weights,
                           sigma=float(sigma), n_params=op.numel, n_hvp=op.n_hvp)


# --------------------------------------------------------------------------- per-class Hessian


def class_subset(data, cls: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples of class ``cls`` as an (x, y) pair."""
    x, y = as_tensors(data, device)
    if y.dtype.is_floating_point:
        raise TypeError("class Hessians need integer class labels.")
    sel = y == int(cls)
    if not bool(sel.any()):
        raise ValueError(f"class {cls} has no samples in data.")
    return x[sel], y[sel]


def class_hessian(model: nn.Module, loss_fn, data, *, classes: Iterable[int] | None = None,
                  tol: float = 1e-3, max_iter: int = 100, batch_size: int | None = None,
                  hvp_method: str = "auto", params: Iterable[str] | None = None,
                  seed: int = 0, progress: bool = True) -> pd.DataFrame:
    r"""Extreme eigenvalues of each class's loss Hessian, H_c = ∇² (1/N_c) Σ_{i: y_i = c} ℓ_i.

    Rangwani et al. 2022 (arXiv 2212.13827): with class imbalance, the loss of minority classes
    sits at a saddle — H_c has large negative eigenvalues (λ_min ≪ 0) — while majority classes
    are at minima; sharpness-aware minimisation escapes those saddles. Returns a DataFrame with
    columns ``class``, ``n_samples``, ``lambda_max``, ``lambda_min`` (Lanczos, both ends) and
    ``ratio`` = |λ_min| / λ_max (Li et al. 2018's non-convexity measure).
    """
    x, y = as_tensors(data, model_device(model))
    if y.dtype.is_floating_point:
        raise TypeError("class_hessian needs integer class labels in data.")
    classes = sorted(int(c) for c in torch.unique(y)) if classes is None else list(classes)
    rows = []
    for c in tqdm(classes, desc="class Hessians", disable=not progress, leave=False):
        sub = class_subset((x, y), c)
        op = HessianOperator(model, loss_fn, sub, batch_size=batch_size, method=hvp_method,
                             params=params, seed=seed)
        v0 = op.random_vector(torch.Generator().manual_seed(seed))
        top = float(_lanczos_eigs(op, 1, "largest", tol, max_iter, v0)[0][0])
        low = float(_lanczos_eigs(op, 1, "smallest", tol, 3 * max_iter, v0)[0][0])
        rows.append({"class": c, "n_samples": len(sub[0]), "lambda_max": float(top),
                     "lambda_min": float(low), "ratio": abs(low) / max(abs(top), 1e-30)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- sharpness



def minority_majority(table: pd.DataFrame, column: str = "lambda_min") -> tuple[float, float]:
    """(mean over minority classes, mean over majority classes) of a :func:`class_hessian` column.

    Majority classes are those with the largest ``n_samples``; every smaller class is a minority
    class (Rangwani et al. 2022, arXiv 2212.13827: minority classes sit at saddle points, i.e.
    their class loss has markedly negative ``lambda_min``)."""
    small = table["n_samples"] < table["n_samples"].max()
    if not small.any():
        raise ValueError("all classes have the same size: there is no minority class.")
    return float(table.loc[small, column].mean()), float(table.loc[~small, column].mean())

@dataclass
class Sharpness:
    """Worst-case loss increase in a ρ-ball (first order): ``sharpness`` = ``perturbed_loss`` −
    ``loss``; ``grad_norm`` = ‖T∇L‖; ``epsilon`` is the perturbation (dict)."""

    sharpness: float
    loss: float
    perturbed_loss: float
    grad_norm: float
    rho: float
    epsilon: Params = field(repr=False)


def sharpness(model: nn.Module, loss_fn, data, *, rho: float = 0.05, adaptive: bool = False,
              asam_eta: float = ASAM_ETA, batch_size: int | None = None,
              params: Iterable[str] | None = None) -> Sharpness:
    r"""SAM's sharpness: max_{‖T⁻¹ε‖ ≤ ρ} L(θ + ε) − L(θ), at the first-order maximiser.

    Foret et al. 2021 (arXiv 2010.01412): linearising L inside the ball gives
    ε* = ρ T² ∇L / ‖T ∇L‖ with T = I (SAM) or, for ASAM (Kwon et al. 2021, arXiv 2102.11600),
    T = diag(|θ|) + η I (η = ``asam_eta``, :func:`toolkit.train.sam_scale`), which makes the
    measure (nearly, up to η) invariant to the per-neuron rescalings that leave a ReLU network's
    function unchanged, and still perturbs weights that are exactly 0. Returns L(θ + ε*) − L(θ)
    with the parts; the same ε* as :class:`toolkit.train.SAM` uses. Near a stationary point the
    gradient direction is noise and the value is of order ρ²λ_max/2.
    """
    check_positive(rho, "rho")
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, params=params, check=True)
    g, loss = op.gradient()
    theta = op.flatten(op.params)
    t = sam_scale(theta, adaptive, asam_eta)
    gnorm = float((t * g).norm())
    eps = rho * t**2 * g / max(gnorm, 1e-12)
    shifted = op.unflatten(theta + eps)
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in op.batches():
            total += float(op._loss(shifted, x, y)) * len(x)
            count += len(x)
    if op.sharded:
        total, count = op._reduce(torch.tensor([total, float(count)], dtype=torch.float64)).tolist()
    perturbed = total / count
    return Sharpness(sharpness=perturbed - loss, loss=loss, perturbed_loss=perturbed,
                     grad_norm=gnorm, rho=rho, epsilon=op.unflatten(eps))


# ----------------------------------------------------------------------------------- callbacks


class LambdaMaxTracker:
    """A :func:`toolkit.train.fit` callback adding ``lambda_max`` (top Hessian eigenvalue on
    ``data``) to the history; warm-starts Lanczos from the previous eigenvector, which cuts the
    products per call when the eigenvector moves slowly (Cohen et al. 2021, arXiv 2103.00065,
    track λ_max along training to see the edge of stability)."""

    def __init__(self, loss_fn, data, *, tol: float = 1e-3, max_iter: int = 100,
                 batch_size: int | None = None, key: str = "lambda_max", seed: int = 0):
        self.loss_fn, self.data, self.key = loss_fn, data, key
        self.kw = dict(tol=tol, max_iter=max_iter, batch_size=batch_size, seed=seed)
        self._v = None
        self.n_hvp = 0

    def __call__(self, epoch: int, model: nn.Module, history_rows=None) -> dict:
        try:
            res = top_eigenvalues(model, self.loss_fn, self.data, v0=self._v, **self.kw)
        except FloatingPointError:  # a diverged run: record NaN, let training report it
            return {self.key: float("nan")}
        self._v = res.eigenvectors[0]
        self.n_hvp += res.n_hvp
        return {self.key: float(res.eigenvalues[0])}


# ``Eigen`` was renamed to say it is a result (eigenvalues with their eigenvectors); the old name
# works for one release.
__getattr__ = moved(__name__, {"Eigen": "toolkit.hessian:Eigenpairs"})
