r"""The structured-derivative engine (Novak, Sohl-Dickstein, Schoenholz 2022, arXiv 2206.08720).

For ``nn.Linear``/``NTKLinear``/``nn.Conv2d`` the Jacobian of a layer's weight is an outer product
:math:`\delta a^\top` of the layer's output gradient and its input, so that layer's NTK term is
:math:`(A_1A_2^\top)\odot(\Delta_1\Delta_2^\top)` and no Jacobian is ever built. Here:

* the *layer plan* (:func:`_plan_layers`): which parameters belong to such layers (called once per
  forward, sample-wise, not shared), and which go to the generic Jacobian path;
* the *features* (:func:`_structured_features`): every layer's inputs A and output gradients
  Delta from one forward pass and O batched backward passes;
* the *Gram products* (:func:`_layer_kernel`, :func:`_structured_block`) and their cost model
  (:func:`_layer_costs`), which picks per layer between Gram products and explicit Jacobians.

Private engine: reached through ``empirical_ntk(method="structured")`` (or ``"auto"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp, vmap

from ._context import _Context, _contract, _contract_jacobians, _jacobians, _linear_scales

__all__: list[str] = []


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


def _plan_layers(model: nn.Module, params: dict, records: dict,
                 reasons: dict | None = None) -> tuple[list, list]:
    """Split the trainable parameters into structured layers and a generic remainder.

    ``reasons`` (a dict, filled if given): for every module owning parameters of ``params`` that
    the structured engine does not cover, why (its parameters go to the generic Jacobian path).
    """
    shared = _shared_param_ids(model)
    id_to_name = {id(p): n for n, p in model.named_parameters()}
    layers, covered = [], set()
    why = {} if reasons is None else reasons
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        keys = {k: id_to_name[id(p)] for k, p in own.items()}
        keys = {k: v for k, v in keys.items() if v in params}
        if not keys:
            continue
        found = _structured_kind(module)
        calls = records.get(name, [])
        label = name or type(module).__name__
        if found is None:
            why[label] = (f"{type(module).__name__}: no structured rule (only nn.Linear / "
                          "NTKLinear / nn.Conv2d with groups=1 and numeric padding)")
            continue
        if len(calls) != 1 or calls[0] is None:
            why[label] = (f"called {len(calls)} times per forward" if len(calls) != 1 else
                          "called with a non-tensor input or output")
            if not calls and _is_attention_projection(model, module):
                why[label] = "attention reads its weight without calling it (out_proj)"
            continue
        if not set(own) <= {"weight", "bias"}:
            why[label] = f"has parameters other than weight/bias: {sorted(set(own) - {'weight', 'bias'})}"
            continue
        if module._forward_hooks or module._forward_pre_hooks:
            why[label] = "has forward hooks (e.g. pruning masks)"
            continue
        if any(id(p) in shared for p in own.values()):
            why[label] = "shares a parameter with another module"
            continue
        kind, (s_w, s_b) = found
        in_shape, out_shape = calls[0]
        if in_shape[0] != 1 or out_shape[0] != 1:  # the layer mixes batch and other axes
            why[label] = "its input does not keep the batch dimension first"
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


def _is_attention_projection(model: nn.Module, module: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) and m.out_proj is module
               for m in model.modules())


def _gram_outputs(d1: torch.Tensor, d2: torch.Tensor, mode: str) -> torch.Tensor:
    r"""Output-gradient Gram :math:`\Delta_1\Delta_2^\top` for (n, O, P, E) tensors.

    Returns (n1, n2, [O, [O,]] P1, P2) with the output axes as the mode asks (summed for trace).
    """
    if mode == "trace":
        return torch.einsum("aope,bose->abps", d1, d2)
    if mode == "diagonal":
        return torch.einsum("aope,bose->abops", d1, d2)
    return torch.einsum("aope,bqse->aboqps", d1, d2)


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
    total, gram_d = 0.0, None
    if spec.weight is not None:
        gram_cost, explicit_cost = _layer_costs(spec, a1.shape[0], a2.shape[0], d1.shape[1], mode)
        if gram_cost <= explicit_cost:
            gram_a = torch.einsum("ape,bse->abps", a1, a2)
            gram_d = _gram_outputs(d1, d2, mode)
            extra = gram_d.ndim - gram_a.ndim
            gram_a = gram_a.reshape(*gram_a.shape[:2], *([1] * extra), *gram_a.shape[2:])
            total = spec.weight_scale**2 * (gram_a * gram_d).sum((-2, -1))
        else:
            j1 = _weight_jacobian(a1, d1)
            j2 = j1 if a2 is a1 and d2 is d1 else _weight_jacobian(a2, d2)  # diagonal blocks
            total = spec.weight_scale**2 * _contract(j1, j2, mode)
    if spec.bias is not None:
        # (sum_p delta_p).(sum_p' delta'_p') = sum_{p,p'} delta_p.delta'_p': read off the
        # output-gradient Gram when the weight term built it (for an MLP layer that halves the
        # layer's cost: the bias term is as large a product as that Gram)
        bias = (gram_d.sum((-2, -1)) if gram_d is not None
                else _contract(d1.sum(2), d2.sum(2), mode))
        total = total + spec.bias_scale**2 * bias
    return total


def _structured_block(ctx: _Context, f1: _Structured, f2: _Structured, mode: str):
    total = _contract_jacobians(f1.jac, f2.jac, mode)
    for spec in ctx.layers:
        term = _layer_kernel(spec, f1, f2, mode)
        total = term if total is None else total + term
    return total
