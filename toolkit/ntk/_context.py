r"""What the NTK methods share: the model as a pure function of its trainable parameters.

:class:`_Context` holds the trainable parameters (a dict for ``torch.func``), the output size and
the structured layer plan of one kernel computation; Jacobian contractions and the kernel
flattening used by several modules live here once, as does the one reading of ``ScaledLinear``'s
scaling (:func:`_linear_scales`, :func:`_affine`). Private: nothing here is public API.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from toolkit.models import ScaledLinear, applied_weights

__all__: list[str] = []

_DEFAULT_CPU_BUDGET = 1 << 30  # 1 GiB: keeps Binder (2 GB) safe


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True); the NTK is 0.")
    return params


@dataclass
class _Context:
    model: nn.Module
    params: dict[str, torch.Tensor]
    n_out: int
    act_numel: int  # activations per sample (sum of module output sizes)
    layers: list = field(default_factory=list)  # structured._LayerSpec: the factorising layers
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
    """Scalars (s_w, s_b) with ``forward(x) = F.linear(x, s_w W, s_b b)``, or None if unknown.

    The structured engine needs a ScaledLinear's (NTK, μP) scaling as scalars (it multiplies Gram
    products, not matrices); a subclass that overrides ``forward`` is unknown, so it goes to the generic path.
    """
    if type(module).forward is nn.Linear.forward:
        return 1.0, 1.0
    if isinstance(module, ScaledLinear) and type(module).forward is ScaledLinear.forward:
        return float(module.weight_scale), float(module.bias_scale)
    return None


def _affine(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """Effective (W, b) of a Linear layer, detached, with a zero bias where it has none."""
    w, b = applied_weights(layer)
    return w, torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) if b is None else b


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


def _flatten_kernel(k: torch.Tensor, name: str) -> torch.Tensor:
    if k.ndim == 2:
        return k
    if k.ndim == 4:
        n1, n2, o1, o2 = k.shape
        return k.permute(0, 2, 1, 3).reshape(n1 * o1, n2 * o2)
    raise ValueError(f"{name} must be (N1, N2) or a full (N1, N2, O, O) kernel, got {tuple(k.shape)}")
