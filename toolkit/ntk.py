r"""Neural tangent kernels for any PyTorch ``nn.Module``.

The empirical NTK of a network :math:`f(\theta, x) \in \mathbb{R}^O` is

.. math::  \Theta_\theta(x, x')_{o q} = \sum_p \partial_{\theta_p} f_o(\theta, x)\,
           \partial_{\theta_p} f_q(\theta, x') = [J(x) J(x')^\top]_{o q},

the Gram matrix of per-sample Jacobians (Jacot, Gabriel, Hongler 2018, arXiv 1806.07572).
Gradient descent on a wide network moves its outputs by kernel gradient descent with
:math:`\Theta`, and in the infinite-width limit (NTK parameterisation) :math:`\Theta` is
deterministic and constant, so the network evolves as its linearisation (Lee et al. 2019,
arXiv 1902.06720).

What is here
------------
* :func:`empirical_ntk` -- three independent ways to compute the kernel:
  ``"jacobian"`` (contract per-sample Jacobians), ``"ntk_vp"`` (NTK-vector products: a VJP then a
  JVP per basis vector) and ``"structured"`` (Novak, Sohl-Dickstein, Schoenholz 2022,
  arXiv 2206.08720: for ``nn.Linear``/``nn.Conv2d`` the Jacobian of a layer is an outer product
  :math:`\delta a^\top`, so the layer's kernel is :math:`(A_1A_2^\top)\odot(\Delta_1\Delta_2^\top)`
  and no Jacobian is ever built). ``"auto"`` picks by a FLOP estimate. The kernel is computed in
  blocks of rows and columns through one function (:func:`_kernel_block`) that takes index
  ranges, so the schedule can be split across ranks.
* :func:`analytic_ntk` -- the infinite-width NTK/NNGP of an MLP (neural-tangents stax conventions).
* :func:`kernel_regression` -- the gradient-flow (or gradient-descent) prediction of the
  linearised network at time ``t``.
* :func:`linearize` -- the first-order Taylor model, trainable like any module.
* :class:`KernelDrift` -- a training callback recording the relative kernel change.
* :class:`GatedReLUMLP` and :func:`to_relu` -- fixed-activation surrogate networks (Noy, Xu,
  Aflalo, Zelnik-Manor, Jin 2021, arXiv 2101.04243) and their exact ReLU re-expression.
* Experiments behind ``notebooks/01_ntk_equivalence`` (:func:`width_convergence`,
  :func:`lazy_training`, :func:`ntk_equivalence`, :func:`spectral_decay`,
  :func:`gated_training`), returning DataFrames and tensors for ``toolkit.plotting.ntk``.

Analysis code only: nothing here plots or prints.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap
from tqdm.auto import tqdm

from . import distributed as dist_utils

__all__ = [
    "METHODS",
    "MODES",
    "EquivalenceRun",
    "GatedReLUMLP",
    "GatedRun",
    "KernelDrift",
    "LinearizedModel",
    "OutputRecorder",
    "OutputScale",
    "analytic_ntk",
    "block_schedule",
    "check_ntk_ready",
    "default_memory_budget",
    "empirical_ntk",
    "equivalence_table",
    "gated_training",
    "gd_kernel_lr",
    "kernel_drift",
    "kernel_regression",
    "lazy_training",
    "linearize",
    "loglog_slope",
    "ntk_equivalence",
    "relative_change",
    "spectral_decay",
    "stable_lr",
    "structured_coverage",
    "to_relu",
    "width_convergence",
]

MODES = ("full", "diagonal", "trace")
METHODS = ("auto", "jacobian", "ntk_vp", "structured")
_DEFAULT_CPU_BUDGET = 1 << 30  # 1 GiB: keeps Binder (2 GB) safe


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------


def check_ntk_ready(model: nn.Module) -> None:
    """Raise ``ValueError`` if ``model`` couples samples or is stochastic.

    The NTK is a function of pairs of inputs; BatchNorm in training mode mixes the samples of a
    batch and active dropout makes the network random, so neither has a well-defined kernel.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    for name, module in model.named_modules():
        label = name or type(model).__name__
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"model has BatchNorm layer '{label}' in training mode, which couples the samples "
                "of a batch, so the NTK is undefined. Call model.eval() first (running statistics "
                "are then used)."
            )
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.training and module.p > 0:
            raise ValueError(
                f"model has dropout layer '{label}' active (p={module.p}), which makes the "
                "network random. Call model.eval() first."
            )


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True); the NTK is 0.")
    return params


def _check_input(x: torch.Tensor, name: str, ref: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of inputs (N, ...), got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty leading batch dimension, got {tuple(x.shape)}")
    if x.device != ref.device:
        raise ValueError(
            f"{name} is on {x.device} but the model's parameters are on {ref.device}; "
            f"move it with {name}.to({str(ref.device)!r})."
        )
    if x.is_floating_point() and x.dtype != ref.dtype:
        raise ValueError(
            f"{name} has dtype {x.dtype} but the model's parameters are {ref.dtype}; "
            f"convert it with {name}.to({ref.dtype})."
        )


def _check_choice(value: str, name: str, options: Sequence[str]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Context: the model as a pure function of its trainable parameters
# ---------------------------------------------------------------------------------------------


@dataclass
class _LayerSpec:
    """A layer whose weight Jacobian factorises (nn.Linear, NTKLinear, nn.Conv2d)."""

    name: str
    module: nn.Module
    kind: str  # "linear" | "conv2d"
    weight: str | None  # key in params, or None if the weight is frozen
    bias: str | None
    weight_scale: float
    bias_scale: float
    out_shape: tuple[int, ...]  # per-sample output shape
    n_pos: int  # positions sharing the weight (1 for a plain Linear on (N, d) inputs)
    d_in: int
    d_out: int


@dataclass
class _Context:
    model: nn.Module
    params: dict[str, torch.Tensor]
    n_out: int
    act_numel: int  # activations per sample (sum of module output sizes)
    layers: list[_LayerSpec] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)  # params handled by the generic path
    budget: int = _DEFAULT_CPU_BUDGET  # bytes a block may use
    cache: OrderedDict = field(default_factory=OrderedDict)

    @property
    def ref(self) -> torch.Tensor:
        return next(iter(self.params.values()))

    def batch(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """f(params, x) as (n, O); params missing from the dict are taken from the module."""
        out = functional_call(self.model, params, (x,))
        return out.reshape(x.shape[0], -1)

    def single(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """f(params, x) for one sample x (no batch dimension) as (O,)."""
        return self.batch(params, x.unsqueeze(0))[0]


def _linear_scales(module: nn.Module) -> tuple[float, float] | None:
    """Scales (s_w, s_b) with forward F.linear(x, s_w W, s_b b), or None if unknown."""
    if type(module).forward is nn.Linear.forward:
        return 1.0, 1.0
    if hasattr(module, "weight_scale") and hasattr(module, "bias_scale"):  # NTKLinear
        return float(module.weight_scale), float(module.bias_scale)
    return None


def _structured_kind(module: nn.Module) -> tuple[str, tuple[float, float]] | None:
    if isinstance(module, nn.Linear):
        scales = _linear_scales(module)
        return None if scales is None else ("linear", scales)
    if type(module) is nn.Conv2d:
        ok = module.groups == 1 and module.padding_mode == "zeros"
        ok = ok and not isinstance(module.padding, str)
        return ("conv2d", (1.0, 1.0)) if ok else None
    return None


def _probe(model: nn.Module, params: dict, x: torch.Tensor) -> tuple[int, int, dict]:
    """One forward pass on one sample: output size, activation size, per-module call records."""
    records: dict[str, list] = {}
    act = [x[:1].numel()]

    def make_hook(name):
        def hook(mod, inp, out):
            if not inp or not isinstance(inp[0], torch.Tensor) or not isinstance(out, torch.Tensor):
                records.setdefault(name, []).append(None)  # not a candidate for structure
                return
            records.setdefault(name, []).append((tuple(inp[0].shape), tuple(out.shape)))
            act[0] += out.numel()

        return hook

    handles = [
        m.register_forward_hook(make_hook(n))
        for n, m in model.named_modules()
        if not list(m.children())
    ]
    try:
        with torch.no_grad():
            out = functional_call(model, params, (x[:1],))
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model must return a tensor of outputs (N, ...), got {type(out).__name__}")
    if out.ndim == 0 or out.shape[0] != 1:
        raise ValueError(
            "model output must have the batch dimension first (one row per input); "
            f"got shape {tuple(out.shape)} for a batch of 1"
        )
    return out[0].numel(), act[0], records


def _shared_param_ids(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        for p in module.parameters(recurse=False):
            seen[id(p)] = seen.get(id(p), 0) + 1
    return {k for k, v in seen.items() if v > 1}


def _plan_layers(model: nn.Module, params: dict, records: dict) -> tuple[list, list]:
    """Split the trainable parameters into structured layers and a generic remainder."""
    shared = _shared_param_ids(model)
    id_to_name = {id(p): n for n, p in model.named_parameters()}
    layers, covered = [], set()
    for name, module in model.named_modules():
        found = _structured_kind(module)
        calls = records.get(name, [])
        own = dict(module.named_parameters(recurse=False))
        if found is None or len(calls) != 1 or calls[0] is None:
            continue
        if not set(own) <= {"weight", "bias"}:
            continue
        if module._forward_hooks or module._forward_pre_hooks:
            continue
        if any(id(p) in shared for p in own.values()):
            continue
        keys = {k: id_to_name[id(p)] for k, p in own.items()}
        keys = {k: v for k, v in keys.items() if v in params}
        if not keys:
            continue
        kind, (s_w, s_b) = found
        in_shape, out_shape = calls[0]
        if in_shape[0] != 1 or out_shape[0] != 1:  # the layer mixes batch and other axes
            continue
        if kind == "linear":
            d_in, d_out = module.in_features, module.out_features
            n_pos = math.prod(out_shape[1:-1])
        else:
            d_in = module.in_channels * math.prod(module.kernel_size)
            d_out = module.out_channels
            n_pos = math.prod(out_shape[2:])
        spec = _LayerSpec(
            name, module, kind, keys.get("weight"), keys.get("bias"), s_w, s_b,
            tuple(out_shape[1:]), n_pos, d_in, d_out,
        )
        layers.append(spec)
        covered.update(keys.values())
    fallback = [n for n in params if n not in covered]
    return layers, fallback


def _make_context(model: nn.Module, x1: torch.Tensor) -> _Context:
    check_ntk_ready(model)
    params = _trainable(model)
    n_out, act, records = _probe(model, params, x1)
    layers, fallback = _plan_layers(model, params, records)
    return _Context(model, params, n_out, act, layers, fallback)


# ---------------------------------------------------------------------------------------------
# Contractions shared by the methods
# ---------------------------------------------------------------------------------------------


def _contract(j1: torch.Tensor, j2: torch.Tensor, mode: str) -> torch.Tensor:
    r"""Kernel of two Jacobians ``j1`` (n1, O, D) and ``j2`` (n2, O, D).

    full: :math:`K_{ab,oq} = \sum_d j1_{aod} j2_{bqd}`; diagonal: :math:`K_{ab,o}` (o = q);
    trace: :math:`\sum_o K_{ab,oo}` (the caller divides by O).
    """
    n1, n_out, d = j1.shape
    n2 = j2.shape[0]
    if mode == "trace":
        return j1.reshape(n1, n_out * d) @ j2.reshape(n2, n_out * d).T
    if mode == "diagonal":
        return torch.bmm(j1.transpose(0, 1), j2.permute(1, 2, 0)).permute(1, 2, 0)
    full = j1.reshape(n1 * n_out, d) @ j2.reshape(n2 * n_out, d).T
    return full.reshape(n1, n_out, n2, n_out).permute(0, 2, 1, 3)


def _gram_outputs(d1: torch.Tensor, d2: torch.Tensor, mode: str) -> torch.Tensor:
    r"""Output-gradient Gram :math:`\Delta_1\Delta_2^\top` for (n, O, P, E) tensors.

    Returns (n1, n2, [O, [O,]] P1, P2) with the output axes as the mode asks (summed for trace).
    """
    if mode == "trace":
        return torch.einsum("aope,bose->abps", d1, d2)
    if mode == "diagonal":
        return torch.einsum("aope,bose->abops", d1, d2)
    return torch.einsum("aope,bqse->aboqps", d1, d2)


# ---------------------------------------------------------------------------------------------
# Method "jacobian": per-sample Jacobians, then contraction
# ---------------------------------------------------------------------------------------------


def _jacobians(ctx: _Context, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per-sample Jacobians {name: (n, O, numel)} w.r.t. the parameters ``names``."""
    if not names:
        return {}
    fixed = {n: p for n, p in ctx.params.items() if n not in names}
    sub = {n: ctx.params[n] for n in names}

    def single(p, xi):
        return ctx.single({**fixed, **p}, xi)

    jac = vmap(jacrev(single), in_dims=(None, 0))(sub, x)
    return {n: j.reshape(x.shape[0], ctx.n_out, -1) for n, j in jac.items()}


def _contract_jacobians(j1: dict, j2: dict, mode: str) -> torch.Tensor | None:
    total = None
    for name, a in j1.items():
        term = _contract(a, j2[name], mode)
        total = term if total is None else total + term
    return total


# ---------------------------------------------------------------------------------------------
# Method "ntk_vp": NTK-vector products (a VJP on x2, then a JVP on x1, per basis vector)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Method "structured" (Novak et al. 2022, arXiv 2206.08720)
# ---------------------------------------------------------------------------------------------


@dataclass
class _Structured:
    """Layer inputs A (n, P, d_in), output gradients D (n, O, P, d_out), generic Jacobians."""

    inputs: dict[str, torch.Tensor]
    deltas: dict[str, torch.Tensor]
    jac: dict[str, torch.Tensor]


def _layer_inputs(spec: _LayerSpec, a: torch.Tensor) -> torch.Tensor:
    n = a.shape[0]
    if spec.kind == "linear":
        return a.reshape(n, spec.n_pos, spec.d_in)
    m = spec.module
    patches = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
    return patches.transpose(1, 2)  # (n, P, C_in*kh*kw), same order as weight.flatten(1)


def _layer_deltas(spec: _LayerSpec, d: torch.Tensor) -> torch.Tensor:
    n_out, n = d.shape[:2]
    if spec.kind == "linear":
        return d.reshape(n_out, n, spec.n_pos, spec.d_out).transpose(0, 1)
    return d.reshape(n_out, n, spec.d_out, spec.n_pos).permute(1, 0, 3, 2)


def _structured_features(ctx: _Context, x: torch.Tensor) -> _Structured:
    r"""Capture each layer's input :math:`a` and output gradient :math:`\delta_o = \partial f_o /
    \partial y` with one forward pass and O batched backward passes.

    A zero perturbation :math:`\epsilon` is added to each layer output; :math:`\partial f_o /
    \partial \epsilon` is :math:`\delta_o`. Because samples are independent (checked: no BatchNorm
    in training mode), the VJP of :math:`\sum_n f_o(x_n)` gives every sample's :math:`\delta_o`.
    """
    n = x.shape[0]
    eps = {s.name: torch.zeros((n, *s.out_shape), dtype=ctx.ref.dtype, device=ctx.ref.device)
           for s in ctx.layers}

    def forward(e):
        captured = {}

        def make_hook(name):
            def hook(mod, inp, out):
                captured[name] = inp[0]
                return out + e[name]

            return hook

        handles = [s.module.register_forward_hook(make_hook(s.name)) for s in ctx.layers]
        try:
            out = ctx.batch(ctx.params, x)
        finally:
            for h in handles:
                h.remove()
        return out, captured

    _, pull, captured = vjp(forward, eps, has_aux=True)
    basis = torch.eye(ctx.n_out, dtype=ctx.ref.dtype, device=ctx.ref.device)
    basis = basis[:, None, :].expand(ctx.n_out, n, ctx.n_out)
    (deltas,) = vmap(pull)(basis)  # {name: (O, n, *out_shape)}
    inputs = {s.name: _layer_inputs(s, captured[s.name].detach()) for s in ctx.layers}
    deltas = {s.name: _layer_deltas(s, deltas[s.name]) for s in ctx.layers}
    return _Structured(inputs, deltas, _jacobians(ctx, x, ctx.fallback))


def _output_factor(mode: str, n_out: int) -> int:
    """Output pairs kept per input pair: O for trace/diagonal (o = q), O^2 for full."""
    return n_out * n_out if mode == "full" else n_out


def _layer_costs(spec: _LayerSpec, n1: int, n2: int, n_out: int, mode: str) -> tuple[int, int]:
    """FLOPs of one layer's weight kernel: (pairwise Gram of A and Delta, explicit Jacobians)."""
    o_k = _output_factor(mode, n_out)
    gram = n1 * n2 * spec.n_pos**2 * (spec.d_in + o_k * spec.d_out + o_k)
    explicit = (n1 + n2) * n_out * spec.n_pos * spec.d_in * spec.d_out
    explicit += n1 * n2 * o_k * spec.d_in * spec.d_out
    return gram, explicit


def _weight_jacobian(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Per-sample weight Jacobian (n, O, d_out*d_in) = sum_p delta_p a_p^T."""
    return torch.einsum("nope,npi->noei", d, a).flatten(2)


def _layer_kernel(spec: _LayerSpec, f1: _Structured, f2: _Structured, mode: str) -> torch.Tensor:
    r"""One layer's kernel. Weight: :math:`s_w^2 \sum_{p,p'} (a_p\cdot a'_{p'})
    (\delta_p\cdot\delta'_{p'})`; bias: :math:`s_b^2 (\sum_p\delta_p)\cdot(\sum_{p'}\delta'_{p'})`.
    """
    a1, a2 = f1.inputs[spec.name], f2.inputs[spec.name]
    d1, d2 = f1.deltas[spec.name], f2.deltas[spec.name]
    total = 0.0
    if spec.weight is not None:
        gram_cost, explicit_cost = _layer_costs(spec, a1.shape[0], a2.shape[0], d1.shape[1], mode)
        if gram_cost <= explicit_cost:
            gram_a = torch.einsum("ape,bse->abps", a1, a2)
            gram_d = _gram_outputs(d1, d2, mode)
            extra = gram_d.ndim - gram_a.ndim
            gram_a = gram_a.reshape(*gram_a.shape[:2], *([1] * extra), *gram_a.shape[2:])
            total = spec.weight_scale**2 * (gram_a * gram_d).sum((-2, -1))
        else:
            j1, j2 = _weight_jacobian(a1, d1), _weight_jacobian(a2, d2)
            total = spec.weight_scale**2 * _contract(j1, j2, mode)
    if spec.bias is not None:
        total = total + spec.bias_scale**2 * _contract(d1.sum(2), d2.sum(2), mode)
    return total


def _structured_block(ctx: _Context, f1: _Structured, f2: _Structured, mode: str):
    total = _contract_jacobians(f1.jac, f2.jac, mode)
    for spec in ctx.layers:
        term = _layer_kernel(spec, f1, f2, mode)
        total = term if total is None else total + term
    return total


# ---------------------------------------------------------------------------------------------
# Cost model, block schedule and the one block function
# ---------------------------------------------------------------------------------------------


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


def _bytes_per_sample(ctx: _Context, method: str, mode: str) -> tuple[float, float]:
    """(bytes per input in a block, bytes per (row, column) pair) for the memory budget."""
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
        pair = max(pair, 2.0 * s.n_pos**2 * (1 + o_m))
    return 2.0 * per * item, pair * item


def default_memory_budget(device: torch.device) -> int:
    """Bytes a kernel computation may use: half the free GPU memory, else 1 GiB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.5 * free)
    return _DEFAULT_CPU_BUDGET


def _auto_chunk(ctx: _Context, method: str, mode: str, n_max: int, budget: int) -> int:
    """Largest block size c with 2 c (per input) + c^2 (per pair) <= budget."""
    per, pair = _bytes_per_sample(ctx, method, mode)
    c = (-per + math.sqrt(per * per + pair * budget)) / pair
    return int(max(1, min(n_max, math.floor(c))))


def block_schedule(
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
            ~ N^2 (width + O width) per layer; other parameters by the Jacobian path),
            ``"auto"`` (the cheapest by a FLOP estimate; structured whenever the model allows).
        chunk_size: inputs per block; ``None`` picks the largest block that fits ``memory_budget``.
        memory_budget: bytes for one block's intermediates (default: half the free GPU memory,
            else 1 GiB).
        progress: show a progress bar when there is more than one block.
        distributed: split the blocks across the ranks of an initialised process group (each
            rank computes ``schedule[rank::world]``, then one all-reduce sums the disjoint
            blocks, so every rank returns the full kernel, equal to the one-process result).
            ``None`` does so whenever ``torch.distributed`` runs with more than one rank.

    Returns:
        The kernel in the parameters' dtype and device.
    """
    _check_choice(mode, "mode", MODES)
    _check_choice(method, "method", METHODS)
    check_ntk_ready(model)
    params = _trainable(model)
    ref = next(iter(params.values()))
    _check_input(x1, "x1", ref)
    symmetric = x2 is None or x2 is x1
    x2 = x1 if x2 is None else x2
    _check_input(x2, "x2", ref)
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"x1 and x2 must have the same per-sample shape, got {tuple(x1.shape[1:])} and "
            f"{tuple(x2.shape[1:])}"
        )
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    ctx = _make_context(model, x1)
    n1, n2 = x1.shape[0], x2.shape[0]
    if method == "structured" and not ctx.layers:
        raise ValueError(
            "method='structured' needs at least one nn.Linear/NTKLinear/nn.Conv2d layer with "
            "trainable weights called once per forward; use method='auto' or 'jacobian'."
        )
    if method == "auto":
        method = _pick_method(ctx, n1, n2, mode)
    ctx.budget = memory_budget or default_memory_budget(ref.device)
    if chunk_size is None:
        chunk_size = _auto_chunk(ctx, method, mode, max(n1, n2), ctx.budget)
    keys = ("x1", "x1") if symmetric else ("x1", "x2")
    schedule = block_schedule(n1, n2, chunk_size, symmetric)
    shape = {"full": (n1, n2, ctx.n_out, ctx.n_out), "diagonal": (n1, n2, ctx.n_out),
             "trace": (n1, n2)}[mode]
    sharded = dist_utils.is_distributed() if distributed is None else distributed
    if sharded:  # every rank fills its own blocks into zeros; the all-reduce assembles them
        schedule = schedule[dist_utils.rank() :: dist_utils.world_size()]
    kernel = (torch.zeros if sharded else torch.empty)(shape, dtype=ref.dtype, device=ref.device)
    bar = tqdm(schedule, desc="NTK blocks",
               disable=not progress or len(schedule) <= 1 or not dist_utils.is_main())
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


def structured_coverage(model: nn.Module, x: torch.Tensor) -> float:
    """Fraction of trainable parameters the structured method handles without Jacobians."""
    ctx = _make_context(model, x)
    return 1.0 - _n_params(ctx, ctx.fallback) / _n_params(ctx)


# ---------------------------------------------------------------------------------------------
# Infinite-width kernels (neural-tangents stax conventions)
# ---------------------------------------------------------------------------------------------


def _relu_expectations(k11, k22, k12):
    r"""Arc-cosine kernel (Cho & Saul 2009): with :math:`\cos\vartheta = k_{12}/\sqrt{k_{11}k_{22}}`,
    :math:`E[\phi\phi'] = \frac{\sqrt{k_{11}k_{22}}}{2\pi}(\sin\vartheta + (\pi-\vartheta)
    \cos\vartheta)`, :math:`E[\dot\phi\dot\phi'] = \frac{\pi - \vartheta}{2\pi}`."""
    norm = torch.sqrt(k11 * k22)
    cos = torch.clamp(k12 / norm.clamp_min(torch.finfo(k12.dtype).tiny), -1.0, 1.0)
    theta = torch.arccos(cos)
    value = norm / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * cos)
    deriv = (math.pi - theta) / (2 * math.pi)
    return value, deriv


def _erf_expectations(k11, k22, k12):
    r""":math:`E[\mathrm{erf}\,\mathrm{erf}'] = \frac{2}{\pi}\arcsin\frac{2k_{12}}
    {\sqrt{(1+2k_{11})(1+2k_{22})}}`, :math:`E[\dot\phi\dot\phi'] = \frac{4}{\pi}
    \left[(1+2k_{11})(1+2k_{22}) - 4k_{12}^2\right]^{-1/2}` (Williams 1997)."""
    prod = (1 + 2 * k11) * (1 + 2 * k22)
    value = 2 / math.pi * torch.arcsin(torch.clamp(2 * k12 / torch.sqrt(prod), -1.0, 1.0))
    deriv = 4 / math.pi / torch.sqrt(prod - 4 * k12**2)
    return value, deriv


def _identity_expectations(k11, k22, k12):
    return k12, torch.ones_like(k12)


_ACTIVATION_KERNELS: dict[str, Callable] = {
    "relu": _relu_expectations,
    "erf": _erf_expectations,
    "identity": _identity_expectations,
    "linear": _identity_expectations,
}


def analytic_ntk(
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    depth: int,
    activation: str = "relu",
    sigma_w: float = 2**0.5,
    sigma_b: float = 0.0,
    kernel: str = "ntk",
) -> torch.Tensor:
    r"""Infinite-width NTK (or NNGP) of an NTK-parameterised MLP with ``depth`` hidden layers.

    Conventions of neural-tangents' ``stax`` (Novak et al. 2020, arXiv 1912.02803) for
    ``serial(Dense(W_std=sigma_w, b_std=sigma_b), phi, ..., Dense(...))``, i.e. of
    ``toolkit.models.MLP(..., parameterization="ntk")``. Recursion (Jacot et al. 2018,
    arXiv 1806.07572; Lee et al. 2019, arXiv 1902.06720):

    .. math::
        \Sigma^1 = \sigma_w^2\,\frac{x\cdot x'}{d} + \sigma_b^2,\qquad \Theta^1 = \Sigma^1,\\
        \Sigma^{l+1} = \sigma_w^2\,E[\phi(u)\phi(v)] + \sigma_b^2,\qquad
        \Theta^{l+1} = \Sigma^{l+1} + \sigma_w^2\,E[\dot\phi(u)\dot\phi(v)]\,\Theta^l,

    with :math:`(u, v) \sim N(0, \Sigma^l)`, for l = 1..depth; the output kernel is
    :math:`\Theta^{depth+1}` (``kernel="nngp"``: :math:`\Sigma^{depth+1}`).
    Activations: ``"relu"`` (arc-cosine), ``"erf"``, ``"identity"``.

    Returns:
        (N1, N2) tensor in the dtype of ``x1`` (use float64 for accuracy).
    """
    _check_choice(activation, "activation", list(_ACTIVATION_KERNELS))
    _check_choice(kernel, "kernel", ("ntk", "nngp"))
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth (number of hidden layers) must be an int >= 0, got {depth!r}")
    if not isinstance(x1, torch.Tensor) or not x1.is_floating_point():
        raise TypeError("x1 must be a floating-point torch.Tensor (N, ...)")
    x2 = x1 if x2 is None else x2
    if x2.device != x1.device or x2.dtype != x1.dtype:
        raise ValueError(f"x2 must match x1's device and dtype ({x1.device}, {x1.dtype})")
    a, b = x1.flatten(1), x2.flatten(1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x1 and x2 must have the same feature size, got {a.shape[1]}, {b.shape[1]}")
    d = a.shape[1]
    sw2, sb2 = sigma_w**2, sigma_b**2
    k12 = sw2 * (a @ b.T) / d + sb2
    k11 = sw2 * (a * a).sum(1) / d + sb2
    k22 = sw2 * (b * b).sum(1) / d + sb2
    ntk = k12
    expect = _ACTIVATION_KERNELS[activation]
    for _ in range(depth):
        value, deriv = expect(k11[:, None], k22[None, :], k12)
        v11 = expect(k11, k11, k11)[0]
        v22 = expect(k22, k22, k22)[0]
        k12, k11, k22 = sw2 * value + sb2, sw2 * v11 + sb2, sw2 * v22 + sb2
        ntk = k12 + sw2 * deriv * ntk
    return ntk if kernel == "ntk" else k12


# ---------------------------------------------------------------------------------------------
# Kernel regression = linearised training dynamics
# ---------------------------------------------------------------------------------------------


def _flatten_kernel(k: torch.Tensor, name: str) -> torch.Tensor:
    if k.ndim == 2:
        return k
    if k.ndim == 4:
        n1, n2, o1, o2 = k.shape
        return k.permute(0, 2, 1, 3).reshape(n1 * o1, n2 * o2)
    raise ValueError(f"{name} must be (N1, N2) or a full (N1, N2, O, O) kernel, got {tuple(k.shape)}")


def _as_targets(y: torch.Tensor, n: int, name: str) -> torch.Tensor:
    y = y if y.ndim > 1 else y[:, None]
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} rows but the kernel has {n}")
    return y


def _time_factor(evals, t, lr, discrete):
    r"""g(lambda) with f_t - f_0 = K_* V diag(g) V^T (y - f_0) (see kernel_regression)."""
    tol = evals.abs().max() * evals.shape[0] * torch.finfo(evals.dtype).eps
    safe = torch.where(evals.abs() > tol, evals, torch.ones_like(evals))
    if t is None:
        return torch.where(evals.abs() > tol, 1.0 / safe, torch.zeros_like(evals))
    if discrete:
        decay = (1 - lr * evals) ** t
        limit = lr * t * torch.ones_like(evals)
    else:
        decay = torch.exp(-lr * evals * t)
        limit = lr * t * torch.ones_like(evals)
    return torch.where(evals.abs() > tol, (1 - decay) / safe, limit)


def kernel_regression(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    k_test_train: torch.Tensor,
    *,
    t: float | Sequence[float] | None = None,
    lr: float = 1.0,
    ridge: float = 0.0,
    f0_train: torch.Tensor | None = None,
    f0_test: torch.Tensor | None = None,
    discrete: bool = False,
) -> torch.Tensor:
    r"""Prediction of the linearised network trained on MSE, at time ``t`` (Lee et al. 2019,
    arXiv 1902.06720, eq. 9-10).

    Gradient flow :math:`\dot f = -\eta\,K\,(f - y)` on the training inputs (the function-space
    form of gradient flow on :math:`\tfrac12\|f-y\|^2` with learning rate :math:`\eta` =
    ``lr``) gives, with :math:`K = V\Lambda V^\top` (``k_train`` plus ``ridge`` I),

    .. math:: f_t(x_*) = f_0(x_*) + K_{*}\,V\,\mathrm{diag}\!\left(
              \frac{1 - e^{-\eta\lambda_i t}}{\lambda_i}\right)V^\top (y - f_0(X)),

    which at :math:`t=\infty` (``t=None``) is kernel (ridge) regression
    :math:`f_0(x_*) + K_*(K + \text{ridge}\,I)^{-1}(y - f_0(X))` (pseudo-inverse if singular).
    ``discrete=True`` replaces :math:`e^{-\eta\lambda t}` by :math:`(1-\eta\lambda)^t`: exact for
    ``t`` steps of full-batch gradient descent on the linearised model. With PyTorch's mean MSE
    over N samples and O outputs use ``lr = gd_kernel_lr(sgd_lr, N, O)``.

    Args:
        k_train: (N, N) kernel on the training inputs, or a full (N, N, O, O) kernel.
        y_train: (N,) or (N, O) targets.
        k_test_train: (M, N) kernel between test and training inputs (or (M, N, O, O)).
        t: time, a sequence of times, or None for t = infinity.
        lr: learning rate :math:`\eta` of the function-space dynamics.
        ridge: added to the kernel's diagonal.
        f0_train, f0_test: outputs at initialisation (default zero).
        discrete: gradient-descent steps instead of gradient flow.

    Returns:
        (M, O) predictions, or (T, M, O) for a sequence of times.
    """
    full = k_train.ndim == 4
    k = _flatten_kernel(k_train, "k_train")
    ks = _flatten_kernel(k_test_train, "k_test_train")
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"k_train must be square, got {tuple(k_train.shape)}")
    n = k_train.shape[0]
    m = k_test_train.shape[0]
    if ks.shape[1] != k.shape[0]:
        raise ValueError(
            f"k_test_train has {k_test_train.shape[1]} training columns but k_train has {n}"
        )
    y = _as_targets(y_train, n, "y_train").to(k.dtype)
    n_out = y.shape[1]
    f0 = torch.zeros_like(y) if f0_train is None else _as_targets(f0_train, n, "f0_train")
    f0s = (torch.zeros(m, n_out, dtype=k.dtype, device=k.device) if f0_test is None
           else _as_targets(f0_test, m, "f0_test"))
    resid = (y - f0).to(k.dtype)
    if full:
        resid = resid.reshape(-1, 1)
    evals, evecs = torch.linalg.eigh(k + ridge * torch.eye(k.shape[0], dtype=k.dtype,
                                                           device=k.device))
    coeff = evecs.T @ resid
    several = t is not None and not isinstance(t, (int, float))
    times = [float(v) for v in t] if several else [t]
    preds = []
    for ti in times:
        g = _time_factor(evals, ti, lr, discrete)
        delta = ks @ (evecs @ (g[:, None] * coeff))
        preds.append(f0s + delta.reshape(m, n_out))
    return torch.stack(preds) if several else preds[0]


def gd_kernel_lr(lr: float, n_samples: int, n_outputs: int = 1) -> float:
    r"""Function-space learning rate of gradient descent on PyTorch's mean MSE.

    :math:`L = \frac{1}{N O}\sum (f - y)^2` gives :math:`f \leftarrow f - \eta\,\frac{2}{N O}
    K (f - y)`, so :func:`kernel_regression` needs ``lr = 2 * lr / (N * O)``.
    """
    return 2.0 * lr / (n_samples * n_outputs)


# ---------------------------------------------------------------------------------------------
# Linearisation
# ---------------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return name.replace(".", "__")


class LinearizedModel(nn.Module):
    r"""First-order Taylor model :math:`f_{lin}(\theta, x) = f(\theta_0, x) + J(\theta_0, x)
    (\theta - \theta_0)` (Lee et al. 2019, arXiv 1902.06720), evaluated with one ``jvp``.

    Its trainable parameters start at :math:`\theta_0`; ``base`` (not a submodule) is the
    template network, evaluated functionally with the stored :math:`\theta_0` and buffers.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        check_ntk_ready(model)
        params = _trainable(model)
        self.__dict__["base"] = model
        self._names = list(params)
        self.params = nn.ParameterDict(
            {_safe(n): nn.Parameter(p.clone()) for n, p in params.items()}
        )
        for n, p in params.items():
            self.register_buffer("theta0__" + _safe(n), p.clone())
        # frozen parameters and buffers travel with the wrapper (so .to(device) moves them)
        consts = {n: p for n, p in model.named_parameters() if n not in params}
        consts.update(dict(model.named_buffers()))
        self._const_names = list(consts)
        for n, b in consts.items():
            self.register_buffer("const__" + _safe(n), b.detach().clone())

    def _theta0(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, "theta0__" + _safe(n)) for n in self._names}

    def _consts(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, "const__" + _safe(n)) for n in self._const_names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta0, consts = self._theta0(), self._consts()
        tangent = {n: self.params[_safe(n)] - theta0[n] for n in self._names}

        def f(p):
            return functional_call(self.base, {**p, **consts}, (x,))

        out, dout = jvp(f, (theta0,), (tangent,))
        return out + dout


def linearize(model: nn.Module) -> LinearizedModel:
    """Return the linearised model f_lin(theta, x) = f(theta0, x) + J(theta0)(theta - theta0).

    It is an ordinary ``nn.Module`` (train it with ``toolkit.train.fit``); its NTK equals the
    NTK of ``model`` at initialisation for every theta. See :class:`LinearizedModel`.
    """
    return LinearizedModel(model)


# ---------------------------------------------------------------------------------------------
# Training callbacks
# ---------------------------------------------------------------------------------------------


def relative_change(k0: torch.Tensor, k1: torch.Tensor) -> float:
    r""":math:`\|K_1 - K_0\|_F / \|K_0\|_F`."""
    return float(torch.linalg.norm(k1 - k0) / torch.linalg.norm(k0))


class KernelDrift:
    r"""Training callback: relative kernel change :math:`\|K_t - K_0\|_F/\|K_0\|_F` on a probe set.

    The first call stores :math:`K_0`. Lazy training (Jacot et al. 2018, arXiv 1806.07572) means
    this drift vanishes as width grows under the NTK parameterisation. Use as
    ``train.fit(..., callbacks=[KernelDrift(x_probe)])``; returns ``{key: drift}``.
    """

    def __init__(self, x_probe: torch.Tensor, *, mode: str = "trace", method: str = "auto",
                 key: str = "kernel_drift"):
        self.x_probe, self.mode, self.method, self.key = x_probe, mode, method, key
        self.k0: torch.Tensor | None = None
        self.last: torch.Tensor | None = None

    def __call__(self, epoch: int, model: nn.Module, history_rows=None) -> dict[str, float]:
        ref = next(model.parameters())
        x = self.x_probe.to(device=ref.device, dtype=ref.dtype)
        k = empirical_ntk(model, x, mode=self.mode, method=self.method, progress=False)
        if self.k0 is None:
            self.k0 = k
        self.last = k
        return {self.key: relative_change(self.k0, k)}


def kernel_drift(x_probe: torch.Tensor, **kwargs) -> KernelDrift:
    """A :class:`KernelDrift` callback on the probe inputs ``x_probe``."""
    return KernelDrift(x_probe, **kwargs)


class OutputRecorder:
    """Training callback storing ``model(x)`` at each call: ``epochs`` and ``outputs`` (T, N, O).

    Used to compare a trained network with :func:`kernel_regression` at the same times.
    """

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.epochs: list[int] = []
        self._outputs: list[torch.Tensor] = []

    def __call__(self, epoch: int, model: nn.Module, history_rows=None) -> None:
        ref = next(model.parameters())
        with torch.no_grad():
            out = model(self.x.to(device=ref.device, dtype=ref.dtype))
        self.epochs.append(int(epoch))
        self._outputs.append(out.reshape(len(self.x), -1).detach().cpu())
        return None

    @property
    def outputs(self) -> torch.Tensor:
        return torch.stack(self._outputs)


class OutputScale(nn.Module):
    r"""``alpha * model(x)``: the output scale of lazy training (Chizat, Oyallon, Bach 2019,
    arXiv 1812.07956).

    On an NTK-parameterised one-hidden-layer net of width n, ``alpha = 1/sqrt(n)`` gives the
    mean-field scaling :math:`\frac1n\sum_i a_i\phi(w_i\cdot x)` (features move; train with the
    learning rate multiplied by n), ``alpha = 1`` the lazy NTK regime.
    """

    def __init__(self, model: nn.Module, alpha: float):
        super().__init__()
        self.model, self.alpha = model, float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.model(x)


# ---------------------------------------------------------------------------------------------
# Fixed-activation surrogate networks (Noy et al. 2021, arXiv 2101.04243)
# ---------------------------------------------------------------------------------------------


def _make_linear(d_in, d_out, parameterization, sigma_w, sigma_b, bias):
    if parameterization == "ntk":
        from toolkit.models import NTKLinear

        return NTKLinear(d_in, d_out, bias=bias, sigma_w=sigma_w, sigma_b=sigma_b)
    return nn.Linear(d_in, d_out, bias=bias)


def _affine(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """Effective (W, b) of a Linear/NTKLinear: forward(x) = x W^T + b."""
    s_w, s_b = _linear_scales(layer) or (1.0, 1.0)
    w = s_w * layer.weight.detach()
    b = (s_b * layer.bias.detach() if layer.bias is not None
         else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
    return w, b


class GatedReLUMLP(nn.Module):
    r"""MLP whose ReLU gates are frozen at initialisation (Noy et al. 2021, arXiv 2101.04243).

    A frozen copy of the initial weights :math:`(G_l, c_l)` runs the initial ReLU network
    :math:`h^0_l = \mathrm{ReLU}(G_l h^0_{l-1} + c_l)`, :math:`h^0_0 = x`; the trained layers
    pass through its activation pattern:

    .. math:: h_l = \mathbf 1[G_l h^0_{l-1} + c_l > 0] \odot (W_l h_{l-1} + b_l),\qquad
              f(x) = W_{L+1} h_L + b_{L+1}.

    At initialisation :math:`W = G` so :math:`f` equals the ReLU network. The gates depend on
    x only, so f is multilinear in the layers' weights; with one hidden layer and a frozen head
    (``train_head=False``) it is linear in :math:`W_1`, its NTK is exactly constant and gradient
    descent on MSE converges geometrically, at rate :math:`(1 - \eta\lambda_{\min})` per step.

    Args:
        in_dim, widths, out_dim: layer sizes (inputs are flattened).
        parameterization: ``"ntk"`` (NTKLinear layers, weights N(0, 1)) or ``"standard"``.
        sigma_w, sigma_b: NTK-parameterisation scales.
        train_head: whether the output layer is trainable.
    """

    def __init__(self, in_dim: int, widths: Sequence[int], out_dim: int, *,
                 parameterization: str = "ntk", sigma_w: float = 2**0.5, sigma_b: float = 0.0,
                 bias: bool = True, train_head: bool = True):
        super().__init__()
        _check_choice(parameterization, "parameterization", ("ntk", "standard"))
        widths = [int(w) for w in widths]
        if not widths:
            raise ValueError("widths must list at least one hidden layer width")
        dims = [in_dim, *widths]
        self.hidden = nn.ModuleList(
            _make_linear(a, b, parameterization, sigma_w, sigma_b, bias)
            for a, b in zip(dims[:-1], dims[1:])
        )
        self.head = _make_linear(widths[-1], out_dim, parameterization, sigma_w, sigma_b, bias)
        self.head.requires_grad_(train_head)
        for i, layer in enumerate(self.hidden):
            g, c = _affine(layer)
            self.register_buffer(f"gate_weight_{i}", g.clone())
            self.register_buffer(f"gate_bias_{i}", c.clone())

    def gate(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen effective (G_i, c_i) of hidden layer i."""
        return getattr(self, f"gate_weight_{i}"), getattr(self, f"gate_bias_{i}")

    def trace(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per hidden layer: (pre-activation W h + b, gate pre-activation G h0 + c)."""
        h = h0 = x.flatten(1)
        out = []
        for i, layer in enumerate(self.hidden):
            g, c = self.gate(i)
            z0 = F.linear(h0, g, c)
            z = layer(h)
            out.append((z, z0))
            h, h0 = z * (z0 > 0).to(z.dtype), F.relu(z0)
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z, z0 = self.trace(x)[-1]
        return z * (z0 > 0).to(z.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def as_relu_mlp(self) -> nn.Sequential:
        """The ordinary ReLU network with the same current layers (equal to ``self`` while the
        weights still equal the gates, i.e. at initialisation); ``requires_grad`` flags kept."""
        layers: list[nn.Module] = [nn.Flatten()]
        for layer in self.hidden:
            layers += [copy.deepcopy(layer), nn.ReLU()]
        return nn.Sequential(*layers, copy.deepcopy(self.head))


def to_relu(gated: GatedReLUMLP, x: torch.Tensor, *, margin: float = 2.0,
            dtype: torch.dtype | None = None) -> nn.Sequential:
    r"""An exactly equivalent ReLU MLP (twice as wide) on the inputs ``x`` (arXiv 2101.04243).

    One unit: for :math:`M \ge \max_x |w\cdot h| / |g\cdot h^0|` (M > 0),

    .. math:: \mathbf 1[g\cdot h^0 > 0]\,(w\cdot h) = \mathrm{ReLU}(w\cdot h + M g\cdot h^0)
              - \mathrm{ReLU}(M g\cdot h^0)

    (if :math:`g\cdot h^0>0` the first ReLU is active and the M terms cancel; otherwise both
    vanish). Biases are folded into w, g.

    Deep case. Hidden layer l of the ReLU net has units :math:`u^+_l = \mathrm{ReLU}(z_l + M_l
    z^0_l)` and :math:`u^-_l = \mathrm{ReLU}(M_l z^0_l) = M_l h^0_l` (M_l > 0 diagonal), where
    :math:`z_l = W_l h_{l-1} + b_l` and :math:`z^0_l = G_l h^0_{l-1} + c_l`. So the layer carries
    both streams of the gated net: :math:`h_l = u^+_l - u^-_l` (trained, gated) and
    :math:`h^0_l = M_l^{-1} u^-_l` (frozen gate network). Both pre-activations of layer l+1 are
    therefore linear in :math:`(u^+_l, u^-_l)`:

    .. math:: z_{l+1} = W_{l+1}u^+_l - W_{l+1}u^-_l + b_{l+1},\qquad
              z^0_{l+1} = G_{l+1} M_l^{-1} u^-_l + c_{l+1},

    giving the ReLU layer weights :math:`\begin{pmatrix} W & -W + M G M_{prev}^{-1}\\
    0 & M G M_{prev}^{-1}\end{pmatrix}` with biases :math:`(b + M c,\; M c)`; the first layer
    acts on x with :math:`(W_1 + M_1G_1;\ M_1G_1)`, the head is :math:`(W_{L+1}, -W_{L+1})`.
    Induction over l gives identical outputs on every input where each
    :math:`M_l \ge |z_l|/|z^0_l|` unit-wise, which is how ``M_l`` is chosen from ``x`` (times
    ``margin``). A unit with :math:`z^0 = 0` on some input has no such M (``ValueError``).

    Returns:
        ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU`` with widths 2 x ``widths``, in ``dtype``
        (default: the gated model's; prefer float64 when checking agreement).
    """
    if not isinstance(gated, GatedReLUMLP):
        raise TypeError(f"gated must be a GatedReLUMLP, got {type(gated).__name__}")
    if margin < 1:
        raise ValueError(f"margin must be >= 1 (M must dominate |z|/|z0|), got {margin}")
    ref = gated.gate(0)[0]
    dtype = dtype or ref.dtype
    with torch.no_grad():
        x = x.to(device=ref.device, dtype=ref.dtype)
        scales = []
        for i, (z, z0) in enumerate(gated.trace(x)):
            if (z0 == 0).any():
                raise ValueError(f"a gate pre-activation of hidden layer {i} is exactly 0 on x; "
                                 "no finite M makes the construction exact there")
            m = margin * (z.abs() / z0.abs()).amax(0)
            scales.append(torch.where(m > 0, m, torch.ones_like(m)).to(torch.float64))
        layers: list[nn.Module] = []
        prev = None
        for i, layer in enumerate(gated.hidden):
            w, b = (t.to(torch.float64) for t in _affine(layer))
            g, c = (t.to(torch.float64) for t in gated.gate(i))
            m = scales[i][:, None]
            mg = m * (g if prev is None else g / prev[None, :])
            if prev is None:
                top, bottom = w + mg, mg
            else:
                zeros = torch.zeros_like(w)
                top, bottom = torch.cat([w, -w + mg], 1), torch.cat([zeros, mg], 1)
            lin = nn.Linear(top.shape[1], 2 * w.shape[0], dtype=torch.float64)
            lin.weight.copy_(torch.cat([top, bottom], 0))
            lin.bias.copy_(torch.cat([b + m[:, 0] * c, m[:, 0] * c]))
            layers += [lin, nn.ReLU()]
            prev = scales[i]
        w, b = (t.to(torch.float64) for t in _affine(gated.head))
        head = nn.Linear(2 * w.shape[1], w.shape[0], dtype=torch.float64)
        head.weight.copy_(torch.cat([w, -w], 1))
        head.bias.copy_(b)
        layers.append(head)
    net = nn.Sequential(nn.Flatten(), *layers)
    return net.to(device=ref.device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Experiments behind notebooks/01_ntk_equivalence (return tables and tensors; never plot)
# ---------------------------------------------------------------------------------------------


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (a power law y ~ x^slope)."""
    lx = torch.log(torch.tensor([float(v) for v in x], dtype=torch.float64))
    ly = torch.log(torch.tensor([float(v) for v in y], dtype=torch.float64))
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


def _ntk_mlp(in_dim, width, depth, out_dim, *, activation="relu", sigma_w=2**0.5, sigma_b=0.0,
             seed=0, like: torch.Tensor | None = None) -> nn.Module:
    from toolkit.models import MLP

    torch.manual_seed(seed)
    model = MLP(in_dim, [width] * depth, out_dim, activation=activation, parameterization="ntk",
                sigma_w=sigma_w, sigma_b=sigma_b)
    return model if like is None else model.to(device=like.device, dtype=like.dtype)


def width_convergence(x: torch.Tensor, widths: Sequence[int], *, depth: int = 2,
                      activation: str = "relu", sigma_w: float = 2**0.5, sigma_b: float = 0.0,
                      seeds: Sequence[int] = (0, 1, 2), progress: bool = True):
    r"""Relative error :math:`\|\hat\Theta_n - \Theta_\infty\|_F / \|\Theta_\infty\|_F` of the
    empirical NTK at initialisation against :func:`analytic_ntk`, per width and seed.

    Jacot et al. 2018 (arXiv 1806.07572): the NTK converges to a deterministic limit; its
    fluctuations are :math:`O(n^{-1/2})`, a slope of -1/2 on log-log axes.

    Returns:
        DataFrame with columns ``width, seed, rel_error``.
    """
    import pandas as pd

    k_inf = analytic_ntk(x, depth=depth, activation=activation, sigma_w=sigma_w, sigma_b=sigma_b)
    rows = []
    for width in tqdm(list(widths), desc="widths", disable=not progress):
        for seed in seeds:
            net = _ntk_mlp(x[0].numel(), width, depth, 1, activation=activation, sigma_w=sigma_w,
                           sigma_b=sigma_b, seed=seed, like=x)
            k = empirical_ntk(net, x, progress=False)
            rows.append({"width": width, "seed": seed, "rel_error": relative_change(k_inf, k)})
    return pd.DataFrame(rows)


def lazy_training(train_data, widths: Sequence[int], *, epochs: int, lr: float | None = None,
                  lr_target: float = 0.5, depth: int = 1,
                  sigma_b: float = 1.0, scalings: Sequence[str] = ("ntk", "mean-field"),
                  seed: int = 0, device="cpu", progress: bool = True):
    r"""Relative kernel drift :math:`\|K_T - K_0\|_F/\|K_0\|_F` after full-batch GD, per width.

    ``"ntk"``: NTK parameterisation, learning rate ``lr``: lazy training, drift
    :math:`O(n^{-1/2})` (Jacot et al. 2018, arXiv 1806.07572; Lee et al. 2019, arXiv 1902.06720).
    ``"mean-field"``: the same network with its output multiplied by :math:`1/\sqrt n`
    (:class:`OutputScale`; :math:`f = \frac1n\sum_i a_i\phi(\cdot)`) and learning rate
    ``lr * n``: the features move by O(1) at every width (Chizat et al. 2019, arXiv 1812.07956;
    Yang & Hu 2021, arXiv 2011.14522).

    ``lr=None`` picks :func:`stable_lr` of the infinite-width kernel with ``lr_target``.

    Returns:
        DataFrame ``width, scaling, drift, final_loss`` (mean MSE on the training set).
    """
    import pandas as pd

    from toolkit import train as tk_train

    x, y = train_data.tensors if hasattr(train_data, "tensors") else train_data
    if lr is None:
        k_inf = analytic_ntk(x.double(), depth=depth, sigma_b=sigma_b)
        lr = stable_lr(k_inf, y.shape[1], lr_target)
    rows = []
    runs = [(w, s) for w in widths for s in scalings]
    for width, scaling in tqdm(runs, desc="lazy training", disable=not progress):
        _check_choice(scaling, "scaling", ("ntk", "mean-field"))
        net = _ntk_mlp(x[0].numel(), width, depth, y.shape[1], sigma_b=sigma_b, seed=seed, like=x)
        alpha, rate = (1.0, lr) if scaling == "ntk" else (width**-0.5, lr * width)
        model = OutputScale(net, alpha)
        drift = KernelDrift(x)
        hist = tk_train.fit(model, (x, y), loss="mse", lr=rate, epochs=epochs, device=device,
                            seed=seed, callbacks=[drift], callback_every=epochs, progress=False)
        rows.append({"width": width, "scaling": scaling, "drift": hist["kernel_drift"].iloc[-1],
                     "final_loss": hist["train_loss"].iloc[-1]})
    return pd.DataFrame(rows)


@dataclass
class EquivalenceRun:
    """A network trained by full-batch GD next to kernel regression with its initial NTK.

    ``net_*`` and ``kernel_*`` are (T, N, O) predictions at ``epochs``; ``k_train`` is the
    initial empirical NTK on the training inputs and ``lr_function`` the function-space rate.
    """

    width: int
    seed: int
    epochs: list[int]
    net_train: torch.Tensor
    net_test: torch.Tensor
    kernel_train: torch.Tensor
    kernel_test: torch.Tensor
    k_train: torch.Tensor
    y_train: torch.Tensor
    lr_function: float

    @property
    def gap(self) -> float:
        """RMS difference between network and kernel predictions over test inputs and times."""
        return float(torch.sqrt(((self.net_test - self.kernel_test) ** 2).mean()))


def stable_lr(k_train: torch.Tensor, n_outputs: int = 1, target: float = 1.0) -> float:
    r"""Learning rate of GD on mean MSE with :math:`\eta_f \lambda_{max}(K)` = ``target``
    (GD on the linearised model is stable for values below 2)."""
    lam = float(torch.linalg.eigvalsh(_flatten_kernel(k_train, "k_train")).max())
    return target * k_train.shape[0] * n_outputs / (2.0 * lam)


def _equivalence_run(x, y, xs, width, seed, *, epochs, lr, depth, sigma_b, record_every, device):
    from toolkit import train as tk_train

    n, n_out = y.shape
    eta = gd_kernel_lr(lr, n, n_out)
    net = _ntk_mlp(x[0].numel(), width, depth, n_out, sigma_b=sigma_b, seed=seed, like=x)
    k = empirical_ntk(net, x, mode="full", progress=False)
    ks = empirical_ntk(net, xs, x, mode="full", progress=False)
    record = OutputRecorder(torch.cat([x, xs]))
    tk_train.fit(net, (x, y), loss="mse", lr=lr, epochs=epochs, device=device, seed=seed,
                 callbacks=[record], callback_every=record_every, progress=False)
    outs = record.outputs.to(device=k.device, dtype=k.dtype)
    f0, f0s = outs[0, :n], outs[0, n:]
    kw = dict(t=record.epochs, lr=eta, f0_train=f0, discrete=True)
    pred_train = kernel_regression(k, y, k, f0_test=f0, **kw)
    pred_test = kernel_regression(k, y, ks, f0_test=f0s, **kw)
    k_out = k[:, :, 0, 0] if n_out == 1 else k
    cpu = [t.detach().cpu() for t in (outs[:, :n], outs[:, n:], pred_train, pred_test, k_out, y)]
    return EquivalenceRun(width, seed, record.epochs, *cpu[:4], cpu[4], cpu[5], eta)


def ntk_equivalence(train_data, test_data, widths: Sequence[int], *, epochs: int,
                    lr: float | None = None, lr_target: float = 0.5, depth: int = 1,
                    sigma_b: float = 1.0, record_every: int = 1, seeds: Sequence[int] = (0,),
                    device="cpu", progress: bool = True) -> list[EquivalenceRun]:
    r"""Train NTK-parameterised MLPs by full-batch GD on mean MSE and predict them with
    :func:`kernel_regression` (discrete time, each net's own initial NTK and outputs).

    Lee et al. 2019 (arXiv 1902.06720): the gap closes as the width grows. ``lr=None`` picks
    :func:`stable_lr` of the infinite-width kernel with ``lr_target`` (the same for every width).
    One :class:`EquivalenceRun` per (seed, width).
    """
    (x, y), (xs, _) = (d.tensors if hasattr(d, "tensors") else d for d in (train_data, test_data))
    if lr is None:
        lr = stable_lr(analytic_ntk(x.double(), depth=depth, sigma_b=sigma_b), y.shape[1],
                       lr_target)
    jobs = [(s, w) for s in seeds for w in widths]
    return [_equivalence_run(x, y, xs, w, s, epochs=epochs, lr=lr, depth=depth, sigma_b=sigma_b,
                             record_every=record_every, device=device)
            for s, w in tqdm(jobs, desc="equivalence", disable=not progress)]


def equivalence_table(runs: Sequence[EquivalenceRun]):
    """DataFrame ``width, seed, gap`` of :func:`ntk_equivalence` runs."""
    import pandas as pd

    return pd.DataFrame([{"width": r.width, "seed": r.seed, "gap": r.gap} for r in runs])


def spectral_decay(run: EquivalenceRun, n_modes: int = 4):
    r"""Residual of a trained network along the eigenvectors of its initial NTK.

    Kernel GD gives :math:`v_i^\top (f_t - y) = (1 - \eta\lambda_i)^t\, v_i^\top (f_0 - y)`:
    directions with large eigenvalues are learned first (spectral bias; Jacot et al. 2018,
    arXiv 1806.07572; Rahaman et al. 2019, arXiv 1806.08734).

    Returns:
        DataFrame ``epoch, mode, eigenvalue, measured, predicted`` with the ratio
        :math:`|v_i^\top r_t| / |v_i^\top r_0|` for the ``n_modes`` largest eigenvalues.
    """
    import pandas as pd

    if run.net_train.shape[-1] != 1:
        raise ValueError("spectral_decay needs a single-output network (O = 1)")
    evals, evecs = torch.linalg.eigh(run.k_train)
    order = torch.argsort(evals, descending=True)[:n_modes]
    resid = (run.net_train[..., 0] - run.y_train[:, 0]).to(evecs.dtype)  # (T, N)
    proj = (resid @ evecs[:, order]).abs()
    rows = []
    for t_idx, epoch in enumerate(run.epochs):
        for j, i in enumerate(order.tolist()):
            lam = float(evals[i])
            rows.append({"epoch": epoch, "mode": j + 1, "eigenvalue": lam,
                         "measured": float(proj[t_idx, j] / proj[0, j]),
                         "predicted": abs(1 - run.lr_function * lam) ** epoch})
    return pd.DataFrame(rows)


@dataclass
class GatedRun:
    """Training record of a :class:`GatedReLUMLP` (and of its ReLU twin from the same init)."""

    history: object  # pandas DataFrame from toolkit.train.fit
    bound: torch.Tensor  # L_0 (1 - eta lambda_min)^(2t), the linear-model rate
    drift: float
    relu_history: object
    relu_drift: float
    model: GatedReLUMLP
    lr: float


def gated_training(x: torch.Tensor, y: torch.Tensor, *, width: int, epochs: int,
                   depth: int = 1, train_head: bool = False, sigma_b: float = 1.0,
                   lr: float | None = None, lr_target: float = 1.0, seed: int = 0,
                   device="cpu") -> GatedRun:
    r"""Full-batch GD on mean MSE for a :class:`GatedReLUMLP` and for the ordinary ReLU network
    with the same initial weights (Noy et al. 2021, arXiv 2101.04243).

    With one hidden layer and a frozen head the gated net is linear in its weights, so its NTK K
    is constant and the residual obeys :math:`r_t = (I - \eta K) r_0`, hence
    :math:`L_t \le (1 - \eta\lambda_{min})^{2t} L_0` (``bound``, valid while
    :math:`\eta\lambda_{max} \le 1`). ``lr=None`` sets :math:`\eta\lambda_{max}` =
    ``lr_target``. Use float64 inputs for exactness checks.
    """
    from toolkit import train as tk_train

    torch.manual_seed(seed)
    gated = GatedReLUMLP(x[0].numel(), [width] * depth, y.shape[1], sigma_b=sigma_b,
                         train_head=train_head).to(device=x.device, dtype=x.dtype)
    relu = gated.as_relu_mlp()
    k0 = empirical_ntk(gated, x, mode="full", progress=False)
    lr = stable_lr(k0, y.shape[1], lr_target) if lr is None else lr
    eta = gd_kernel_lr(lr, *y.shape)
    lam_min = float(torch.linalg.eigvalsh(_flatten_kernel(k0, "k")).min())
    results = []
    for model in (gated, relu):
        drift = KernelDrift(x, mode="full")
        hist = tk_train.fit(model, (x, y), loss="mse", lr=lr, epochs=epochs, device=device,
                            seed=seed, callbacks=[drift], callback_every=epochs, progress=False)
        results.append((hist, float(hist["kernel_drift"].iloc[-1])))
    (hist, drift), (relu_hist, relu_drift) = results
    steps = torch.arange(epochs + 1, dtype=torch.float64)
    bound = float(hist["train_loss"].iloc[0]) * (1 - eta * lam_min) ** (2 * steps)
    return GatedRun(hist, bound, drift, relu_hist, relu_drift, gated, lr)
