r"""What the NTK methods share: the model as a pure function of its trainable parameters.

:class:`_Context` holds the trainable parameters (a dict for ``torch.func``), the output size and
the structured layer plan of one kernel computation; Jacobian contractions and the kernel
flattening used by several modules live here once, as does the one reading of ``ScaledLinear``'s
scaling (:func:`_linear_scales`, :func:`_affine`). Private: nothing here is public API.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from toolkit.models import ScaledLinear, applied_weights

__all__: list[str] = []

_DEFAULT_CPU_BUDGET = 1 << 30  # 1 GiB: keeps Binder (2 GB) safe


def _trainable(model: nn.Module, select=None) -> dict[str, torch.Tensor]:
    """Trainable parameters ``{name: detached tensor}``, restricted to ``select`` if given: a name
    or glob pattern (``fnmatch``, e.g. ``"head.*"``) or a sequence of them; a pattern also matches
    the parameters of a module of that name (``"head"`` = ``"head.*"``)."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True); the NTK is 0.")
    if select is None:
        return params
    patterns = (select,) if isinstance(select, str) else select
    try:
        patterns = tuple(patterns)
    except TypeError:
        patterns = (select,)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise TypeError(f"params must be a parameter name or glob pattern (e.g. 'head.*') or a "
                        f"list of them, got {select!r}.")
    chosen = {}
    for pat in patterns:
        hits = [n for n in params if fnmatch.fnmatchcase(n, pat) or n.startswith(pat + ".")]
        if not hits:
            shown = ", ".join(list(params)[:8]) + (", ..." if len(params) > 8 else "")
            raise ValueError(f"params pattern {pat!r} matches no trainable parameter; the model's "
                             f"are {shown} (names as in model.named_parameters()).")
        chosen.update((n, params[n]) for n in hits)
    return {n: params[n] for n in params if n in chosen}  # model order


@contextlib.contextmanager
def _no_fastpath() -> Iterator[None]:
    """Turn off the fused kernels of attention for the duration: the inference fast path of
    ``nn.MultiheadAttention`` / ``nn.Transformer*`` (``torch.backends.mha``; under ``torch.func``
    transforms inputs are not marked ``requires_grad``, so they would take it) and the flash /
    memory-efficient ``scaled_dot_product_attention`` kernels. Neither has forward-mode AD (the
    ``"ntk_vp"`` method's ``jvp`` fails) nor ``vmap`` batching rules; the math kernel (plain
    matmuls and softmax) has both."""
    mha = getattr(torch.backends, "mha", None)
    before = mha.get_fastpath_enabled() if mha is not None else None
    if mha is not None:
        mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(before)


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
        with _no_fastpath():
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
