r"""The empirical NTK of any ``nn.Module``: method choice, block schedule and chunking.

:math:`\Theta(x_1, x_2) = J(x_1) J(x_2)^\top` (Jacot, Gabriel, Hongler 2018, arXiv 1806.07572) by
three independent methods: ``"jacobian"`` (contract per-sample Jacobians), ``"ntk_vp"``
(NTK-vector products: a VJP then a JVP per basis vector) and ``"structured"``
(:mod:`toolkit.ntk.structured`, Novak et al. 2022, arXiv 2206.08720). ``"auto"`` picks by a FLOP
estimate. The kernel is computed in blocks of rows and columns through one function
(:func:`_kernel_block`) that takes index ranges, so the schedule can be split across ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import jvp, vjp, vmap

from toolkit import distributed as dist_utils
from toolkit._checks import check_choice, check_eval_mode, check_positive_int, check_tensor
from toolkit.utils import progress as progress_bar

from ._context import _DEFAULT_CPU_BUDGET, _Context, _contract_jacobians, _jacobians, _trainable
from .structured import (
    _layer_costs,
    _output_factor,
    _plan_layers,
    _probe,
    _structured_block,
    _structured_features,
)

__all__ = ["METHODS", "MODES", "Coverage", "check_ntk_ready", "empirical_ntk",
           "structured_coverage"]

MODES = ("full", "diagonal", "trace")
METHODS = ("auto", "jacobian", "ntk_vp", "structured")


def check_ntk_ready(model: nn.Module) -> nn.Module:
    """Raise ``ValueError`` if ``model`` couples samples or is stochastic (returns it otherwise).

    The NTK is a function of pairs of inputs; BatchNorm in training mode mixes the samples of a
    batch and active dropout makes the network random, so neither has a well-defined kernel.
    A thin wrapper of :func:`toolkit._checks.check_eval_mode`, kept public for users' own kernels.
    """
    return check_eval_mode(model, "the NTK (a function of pairs of inputs) is undefined")


def _make_context(model: nn.Module, x1: torch.Tensor, select=None,
                  reasons: dict | None = None) -> _Context:
    check_ntk_ready(model)
    params = _trainable(model, select)
    n_out, act, records = _probe(model, params, x1)
    layers, fallback = _plan_layers(model, params, records, reasons)
    return _Context(model, params, n_out, act, layers, fallback)


def _ntk_vp_block(
    ctx: _Context, x1: torch.Tensor, x2: torch.Tensor, mode: str, vmap_chunk: int | None
) -> torch.Tensor:
    r"""Columns :math:`\Theta(x_1, x_2) e_{bq} = J_1 (J_2^\top e_{bq})` for every basis vector.

    Never stores a Jacobian: memory is one parameter-sized vector per basis vector in flight
    (``vmap_chunk`` of them).
    """
    n1, n2, n_out = x1.shape[0], x2.shape[0], ctx.n_out
    _, pull = vjp(lambda p: ctx.batch(p, x2), ctx.params)

    def column(cotangent):
        (tangent,) = pull(cotangent)
        return jvp(lambda p: ctx.batch(p, x1), (ctx.params,), (tangent,))[1]

    basis = torch.eye(n2 * n_out, dtype=x1.dtype if x1.is_floating_point() else ctx.ref.dtype,
                      device=ctx.ref.device).reshape(n2 * n_out, n2, n_out)
    cols = vmap(column, chunk_size=vmap_chunk)(basis)  # (n2*O, n1, O)
    full = cols.reshape(n2, n_out, n1, n_out).permute(2, 0, 3, 1)  # (n1, n2, O, O)
    if mode == "full":
        return full
    diag = torch.diagonal(full, dim1=2, dim2=3)
    return diag if mode == "diagonal" else diag.sum(-1)


def _n_params(ctx: _Context, names=None) -> int:
    names = ctx.params if names is None else names
    return sum(ctx.params[n].numel() for n in names)


def _flops(ctx: _Context, method: str, n1: int, n2: int, mode: str) -> float:
    """Rough FLOP count of a method (Novak et al. 2022, Table 1), used by ``method="auto"``."""
    n_p, n_out = _n_params(ctx), ctx.n_out
    o_m = _output_factor(mode, n_out)
    fwd = 2.0 * n_p  # one forward pass for one sample
    if method == "jacobian":
        return 3 * n_out * fwd * (n1 + n2) + 2.0 * n1 * n2 * o_m * n_p
    if method == "ntk_vp":
        return n2 * n_out * 3 * fwd * (n1 + n2)
    n_fb = _n_params(ctx, ctx.fallback)
    cost = 3 * n_out * fwd * (n1 + n2) + 2.0 * n1 * n2 * o_m * n_fb
    for s in ctx.layers:
        cost += 2.0 * min(_layer_costs(s, n1, n2, n_out, mode))
    return cost


def _pick_method(ctx: _Context, n1: int, n2: int, mode: str) -> str:
    candidates = ["jacobian", "ntk_vp"] + (["structured"] if ctx.layers else [])
    return min(candidates, key=lambda m: _flops(ctx, m, n1, n2, mode))


def _bytes_per_sample(ctx: _Context, method: str, mode: str,
                      n: int | None = None) -> tuple[float, float]:
    """(bytes per input in a block, bytes per (row, column) pair) for the memory budget.

    Structured: a layer whose cost model (:func:`_layer_costs` at ``n`` inputs a side) picks
    explicit weight Jacobians needs ``O d_in d_out`` per input and nothing per pair beyond the
    kernel; one that picks Gram products needs its position Grams, ``~ P^2 (1 + O)`` per pair.
    """
    item = ctx.ref.element_size()
    n_out = ctx.n_out
    o_m = _output_factor(mode, n_out)
    if method == "jacobian":
        return 2.0 * n_out * (_n_params(ctx) + ctx.act_numel) * item, 2.0 * o_m * item
    if method == "ntk_vp":  # one parameter-sized tangent and activations per basis vector
        return 4.0 * n_out * (_n_params(ctx) + ctx.act_numel) * item, 2.0 * o_m * item
    per = n_out * (_n_params(ctx, ctx.fallback) + 2 * ctx.act_numel)
    pair = 2.0 * o_m
    for s in ctx.layers:
        per += s.n_pos * (s.d_in + n_out * s.d_out)
        if s.weight is None:
            continue
        gram, explicit = _layer_costs(s, n, n, n_out, mode) if n else (0, 1)
        if gram <= explicit:
            pair = max(pair, 2.0 * s.n_pos**2 * (1 + o_m))
        else:
            per += n_out * s.d_in * s.d_out
    return 2.0 * per * item, pair * item


def _default_memory_budget(device: torch.device) -> int:
    """Bytes a kernel computation may use: half the free GPU memory, else 1 GiB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.5 * free)
    return _DEFAULT_CPU_BUDGET


def _auto_chunk(ctx: _Context, method: str, mode: str, n_max: int, budget: int) -> int:
    """Largest block size c with 2 c (per input) + c^2 (per pair) <= budget.

    The structured layers' choice between Gram products and explicit Jacobians depends on the
    block size (smaller blocks favour Grams, which cost memory per pair), so the size is solved
    again with the choices made at the block size found, until it no longer shrinks."""
    c, n = n_max, n_max
    for _ in range(3):
        per, pair = _bytes_per_sample(ctx, method, mode, n)
        fit = (-per + math.sqrt(per * per + pair * budget)) / pair
        c = int(max(1, min(c, math.floor(fit))))
        if c == n:
            break
        n = c
    return c


def _block_schedule(
    n1: int, n2: int, chunk_size: int, symmetric: bool = False
) -> list[tuple[range, range]]:
    """Row/column index ranges that tile the (n1, n2) kernel in ``chunk_size`` blocks.

    With ``symmetric=True`` (x2 is x1) only blocks on or above the diagonal are listed; the rest
    follow by transposition. A list, so that ranks can take ``schedule[rank::world_size]``.
    """
    rows = [range(i, min(i + chunk_size, n1)) for i in range(0, n1, chunk_size)]
    cols = [range(j, min(j + chunk_size, n2)) for j in range(0, n2, chunk_size)]
    return [(r, c) for r in rows for c in cols if not symmetric or c.start >= r.start]


def _features(ctx: _Context, method: str, key: str, x: torch.Tensor, idx: range):
    """Per-block features, cached (LRU of 2: the current row block and column block)."""
    k = (key, idx.start, idx.stop)
    if k in ctx.cache:
        ctx.cache.move_to_end(k)
        return ctx.cache[k]
    xb = x[idx.start : idx.stop]
    if method == "jacobian":
        feats = _jacobians(ctx, xb, list(ctx.params))
    else:
        feats = _structured_features(ctx, xb)
    ctx.cache[k] = feats
    while len(ctx.cache) > 2:
        ctx.cache.popitem(last=False)
    return feats


def _kernel_block(
    ctx: _Context,
    method: str,
    mode: str,
    x1: torch.Tensor,
    x2: torch.Tensor,
    rows: range,
    cols: range,
    keys: tuple[str, str] = ("x1", "x2"),
) -> torch.Tensor:
    """The kernel block K[rows, cols] (the unit of work; trace mode returns the mean)."""
    if method == "ntk_vp":
        xa, xb = x1[rows.start : rows.stop], x2[cols.start : cols.stop]
        per_vector = 4 * (_n_params(ctx) + len(xa) * ctx.act_numel) * ctx.ref.element_size()
        in_flight = max(1, int(ctx.budget // per_vector))
        block = _ntk_vp_block(ctx, xa, xb, mode, min(in_flight, len(xb) * ctx.n_out))
    else:
        f1 = _features(ctx, method, keys[0], x1, rows)
        f2 = _features(ctx, method, keys[1], x2, cols)
        if method == "jacobian":
            block = _contract_jacobians(f1, f2, mode)
        else:
            block = _structured_block(ctx, f1, f2, mode)
    return block / ctx.n_out if mode == "trace" else block


def _transpose_block(block: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "full":
        return block.permute(1, 0, 3, 2)
    if mode == "diagonal":
        return block.permute(1, 0, 2)
    return block.T


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    mode: str = "trace",
    method: str = "auto",
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    progress: bool = True,
    distributed: bool | None = None,
    params: str | Sequence[str] | None = None,
) -> torch.Tensor:
    r"""Empirical neural tangent kernel :math:`\Theta(x_1, x_2) = J(x_1) J(x_2)^\top`.

    Jacot et al. 2018 (arXiv 1806.07572); fast methods from Novak et al. 2022 (arXiv 2206.08720).
    Derivatives are taken w.r.t. every parameter with ``requires_grad=True``, at the model's
    current parameters, with the model as it is (call ``model.eval()`` first if it has
    BatchNorm or dropout). Outputs are flattened to O = prod(output.shape[1:]).

    Args:
        model: any ``nn.Module`` mapping a batch (N, ...) to outputs (N, ...), samples independent.
        x1, x2: inputs (N1, ...), (N2, ...) on the model's device; ``x2=None`` means ``x2 = x1``
            (only the upper block triangle is computed).
        mode: ``"full"`` -> (N1, N2, O, O); ``"diagonal"`` -> (N1, N2, O) (o = q);
            ``"trace"`` -> (N1, N2), the *mean* over outputs of the diagonal (equal to the
            per-output kernel in the infinite-width limit, like neural-tangents' ``trace_axes``).
        method: ``"jacobian"`` (contract per-sample Jacobians, cost ~ N O P + N^2 O P),
            ``"ntk_vp"`` (J1 (J2^T v) per basis vector v; no Jacobian in memory),
            ``"structured"`` (layer Jacobians as outer products :math:`\delta a^\top`:
            the layer kernel is :math:`(A_1A_2^\top)\odot(\Delta_1\Delta_2^\top)`, cost
            ~ N^2 (width + O width) per layer; other parameters by the Jacobian path, which is
            all of it when no layer factorises),
            ``"auto"`` (the cheapest by a FLOP estimate; structured whenever the model allows).
        chunk_size: inputs per block; ``None`` picks the largest block that fits ``memory_budget``.
        memory_budget: bytes for one block's intermediates (default: half the free GPU memory,
            else 1 GiB).
        progress: show a progress bar when there is more than one block.
        distributed: split the blocks across the ranks of an initialised process group (each
            rank computes ``schedule[rank::world]``, then one all-reduce sums the disjoint
            blocks, so every rank returns the full kernel, equal to the one-process result).
            ``None`` does so whenever ``torch.distributed`` runs with more than one rank.
        params: differentiate only w.r.t. these trainable parameters: a name or glob pattern as
            in ``model.named_parameters()`` (``fnmatch``; ``"head.*"``, ``"*.bias"``; a module
            name such as ``"head"`` selects its parameters) or a list of them. The kernel is then
            :math:`J_S J_S^\top` with :math:`J_S` the Jacobian's columns for those parameters
            (the NTK of the last layers, say), and the kernels of a partition of the parameters
            sum to the full NTK. ``None``: every trainable parameter.

    Attention and normalisation layers (``nn.MultiheadAttention``, ``nn.LayerNorm``, ...) have no
    structured rule: their parameters go to the generic Jacobian path (see
    :func:`structured_coverage` for which modules and why). While the kernel is computed the
    fused attention kernels are off (``torch.backends.mha`` fast path, flash/memory-efficient
    ``scaled_dot_product_attention``), as they have no forward-mode AD or ``vmap`` rules.

    Raises ``ValueError`` for inputs with NaN/inf (``x1``/``x2`` named), on another device or in
    another floating dtype than the model's parameters (the message gives the ``.to(...)``).

    Returns:
        The kernel in the parameters' dtype and device.
    """
    check_choice(mode, "mode", MODES)
    check_choice(method, "method", METHODS)
    check_ntk_ready(model)
    ref = next(iter(_trainable(model, params).values()))
    x1 = check_tensor(x1, "x1", like=ref, finite=True)
    symmetric = x2 is None or x2 is x1
    x2 = x1 if symmetric else check_tensor(x2, "x2", like=ref, finite=True)
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"x1 and x2 must have the same per-sample shape, got {tuple(x1.shape[1:])} and "
            f"{tuple(x2.shape[1:])}"
        )
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    ctx = _make_context(model, x1, params)
    n1, n2 = x1.shape[0], x2.shape[0]
    if method == "structured" and not ctx.layers:  # nothing factorises: the generic path alone
        method = "jacobian"
    if method == "auto":
        method = _pick_method(ctx, n1, n2, mode)
    ctx.budget = memory_budget or _default_memory_budget(ref.device)
    if chunk_size is None:
        chunk_size = _auto_chunk(ctx, method, mode, max(n1, n2), ctx.budget)
    keys = ("x1", "x1") if symmetric else ("x1", "x2")
    schedule = _block_schedule(n1, n2, chunk_size, symmetric)
    shape = {"full": (n1, n2, ctx.n_out, ctx.n_out), "diagonal": (n1, n2, ctx.n_out),
             "trace": (n1, n2)}[mode]
    sharded = dist_utils.is_distributed() if distributed is None else distributed
    if sharded:  # every rank fills its own blocks into zeros; the all-reduce assembles them
        schedule = schedule[dist_utils.rank() :: dist_utils.world_size()]
    kernel = (torch.zeros if sharded else torch.empty)(shape, dtype=ref.dtype, device=ref.device)
    bar = progress_bar(schedule, desc="NTK blocks",
                       enabled=progress and len(schedule) > 1 and dist_utils.is_main())
    with dist_utils.oom_hint("chunk_size", max(1, chunk_size // 2)):
        for rows, cols in bar:
            block = _kernel_block(ctx, method, mode, x1, x2, rows, cols, keys)
            kernel[rows.start : rows.stop, cols.start : cols.stop] = block
            if symmetric and cols.start != rows.start:
                kernel[cols.start : cols.stop, rows.start : rows.stop] = _transpose_block(block, mode)
    ctx.cache.clear()
    if sharded:
        dist_utils.all_reduce_sum(kernel)
    return kernel


class Coverage(float):
    """:func:`structured_coverage`'s answer: a float (the fraction of trainable parameters the
    structured method handles without Jacobians) that also carries ``uncovered`` (module name ->
    why it is not covered; its parameters go to the generic Jacobian path) and ``fallback``
    (those parameter names)."""

    uncovered: dict[str, str]
    fallback: list[str]

    def __new__(cls, fraction: float, uncovered: dict[str, str], fallback: list[str]):
        out = super().__new__(cls, fraction)
        out.uncovered, out.fallback = dict(uncovered), list(fallback)
        return out

    def __repr__(self) -> str:
        return (f"Coverage({float(self):.3f}, uncovered={list(self.uncovered)})" if self.uncovered
                else f"Coverage({float(self):.3f})")


def structured_coverage(model: nn.Module, x: torch.Tensor, *,
                        params: str | Sequence[str] | None = None) -> Coverage:
    """Fraction of trainable parameters (or of those selected by ``params``, as in
    :func:`empirical_ntk`) the structured method handles without Jacobians, as a
    :class:`Coverage`: a float whose ``uncovered`` maps every module left to the generic path
    to the reason (attention, LayerNorm, a layer called twice, hooks, ...)."""
    reasons: dict[str, str] = {}
    ctx = _make_context(model, x, params, reasons)
    return Coverage(1.0 - _n_params(ctx, ctx.fallback) / _n_params(ctx), reasons, ctx.fallback)
