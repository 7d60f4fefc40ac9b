r"""Hessian-vector products of Linear/activation chains by Pearlmutter's R-operator on a cached
forward and backward pass (private to :mod:`toolkit.hessian`).

For a model that is a chain of ``nn.Linear`` layers and elementwise activations (what
:func:`toolkit._grid.linear_chain` recognises: ``toolkit.models.MLP``, an ``nn.Sequential`` of
such modules), the exact product :math:`Hv` of the batch loss needs, per layer
:math:`z = aW^\top + b` with activation :math:`a' = σ(z)`, only the forward tangents
:math:`\dot z = \dot a W^\top + aV^\top + v_b`, :math:`\dot a' = σ'(z)\dot z`, the output
tangent of the gradient :math:`\dot g_{out} = ∇^2_{f}L\,\dot f`, and the backward tangents
:math:`\dot g_a = \dot g_z W + g_z V`, :math:`\dot g_z = \dot g_{a'} σ'(z) + g_{a'} σ''(z)\dot z`,
which give the blocks :math:`(Hv)_W = \dot g_z^\top a + g_z^\top \dot a`,
:math:`(Hv)_b = Σ_{rows} \dot g_z` (Pearlmutter 1994). The forward values a, σ'(z), σ''(z) and the
gradients g are computed once per batch and kept, as the kept autograd graph
(:mod:`~toolkit.hessian._graph`) keeps them; each product is then the six matrix products per
layer above (two for the first layer) and a few elementwise ones, written into workspace tensors
reused by every product and accumulated straight into the result (fresh tensors of activation
size cost page faults comparable to the products), where a backward pass through the autograd
graph also transposes, zero-fills and accumulates. The loss enters only through its gradient
and Hessian-vector product with respect to the model's outputs (autograd on the small output
tensor), so any loss works.

The quadratic form vᵀHv alone (all that Hutchinson's trace estimator uses) needs no backward
pass: second-order forward mode along θ + tv (:meth:`ChainGraph.batch_quadratic`) takes four
matrix products per layer (one for the first). On the digits MLP 64-256-256-10 (N = 1,347, one
thread) a product takes 7.7–8.9 ms against PyHessian's 9.3–9.6 ms and 7.3–7.5 ms for its
matrix products and σ' multiplications alone, a quadratic form 4.2–4.9 ms
(``benchmarks/anchors/hessian_vs_pyhessian.py``). Written by hand because the libraries we
compare with (PyHessian, curvlinops) take these products through autograd; it is checked
against dense Hessians and the autograd paths in ``tests/test_hessian_chain.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import batches as B
from .._grid import _input_of, first_linear_layer, linear_chain
from ._autodiff import check_graph
from ._graph import _flat_outputs, _has_missing_derivative, outputs_agree

__all__: list[str] = []

CHECK_ROWS = 32  # samples of the second forward pass that checks the cache (ChainGraph.check)


def chain_steps(op, batch) -> list[tuple[str, nn.Module]] | None:
    """The chain's modules from its first ``nn.Linear`` on, when ``op``'s model is a chain of
    Linear layers and elementwise activations called as ``model(x)`` on tuple batches; else None."""
    if not isinstance(batch, tuple):
        return None
    x = batch[0]
    first = first_linear_layer(op.model, x)
    mods = dict(op.model.named_modules())
    if first is None or not isinstance(mods[first], nn.Linear):
        return None
    after = linear_chain(op.model, first)
    return None if after is None else [(first, mods[first]), *after]


def _derivatives(module: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """σ'(z) and σ''(z) of an elementwise module (None where σ'' is zero everywhere, as for
    ReLU): the gradients of Σσ(z) and of Σσ'(z), reverse mode (forward mode lacks rules for some
    activations' backward, e.g. SiLU's); for ReLU directly 1[z > 0] and None, what autograd gives
    (a third of the operator's set-up time)."""
    if type(module) is nn.ReLU:
        return (z > 0).to(z.dtype), None
    with torch.enable_grad():
        t = z.detach().requires_grad_(True)
        (s1,) = torch.autograd.grad(module(t).sum(), t, create_graph=True)
        s2 = (torch.autograd.grad(s1.sum(), t, allow_unused=True)[0] if s1.requires_grad
              else None)
    s1 = s1.detach()
    return s1, (s2 if s2 is not None and bool(s2.any()) else None)


class _Batch:
    """One batch's cached forward values, gradients and output-space second derivative."""

    def __init__(self, graph: ChainGraph, batch):
        op, steps = graph.op, graph.steps
        value = {**op.fixed, **op.params}
        x = _input_of(op.model, steps[0][1], batch[0])["x"]
        self.n = B.batch_len(batch)
        self.inputs, self.s1, self.s2 = [], [], []
        h = x
        with torch.no_grad():
            for name, module in steps:
                linear = isinstance(module, nn.Linear)  # a layer's input is kept, an activation's not
                self.inputs.append(h.reshape(-1, h.shape[-1]) if linear else None)
                if linear:
                    bias = value.get(f"{name}.bias") if module.bias is not None else None
                    h = torch.nn.functional.linear(h, value[f"{name}.weight"], bias)
                    self.s1.append(None)
                    self.s2.append(None)
                else:
                    s1, s2 = _derivatives(module, h)
                    self.s1.append(s1.reshape(-1, s1.shape[-1]))
                    self.s2.append(None if s2 is None else s2.reshape(-1, s2.shape[-1]))
                    h = module(h)
        self.out_shape = h.shape
        self.out = h
        # the loss as a function of the outputs: its gradient once, kept with its graph for the
        # output-space Hessian-vector products (a graph over the N x C outputs only)
        with torch.enable_grad():
            self.leaf = h.detach().requires_grad_(True)
            loss = op.loss_of(self.leaf, batch)
            check_graph(loss)
            (self.g_out,) = torch.autograd.grad(loss, self.leaf, create_graph=True)
        # first-order backward through the chain: the gradient at each step's output
        self.grads: list[torch.Tensor | None] = [None] * len(steps)
        g = self.g_out.detach().reshape(-1, h.shape[-1])
        for k in range(len(steps) - 1, -1, -1):
            name, module = steps[k]
            self.grads[k] = g
            if isinstance(module, nn.Linear):
                g = g @ value[f"{name}.weight"] if k > 0 else None
            else:
                g = g * self.s1[k]
        self.rows = self.inputs[0].shape[0]
        # g_{a'} σ''(z), the fixed factor of the σ'' term of the backward tangent
        self.g_s2 = [None if s2 is None else self.grads[k] * s2 for k, s2 in enumerate(self.s2)]

    def output_hvp(self, f_dot: torch.Tensor) -> torch.Tensor | None:
        """∇²_f L · ḟ (rows, C) through the kept output-space graph (None for a loss linear in
        the outputs)."""
        if not self.g_out.requires_grad:
            return None
        (h,) = torch.autograd.grad(self.g_out, self.leaf, grad_outputs=f_dot.view(self.out_shape),
                                   retain_graph=True, allow_unused=True)
        return None if h is None else h.reshape(-1, self.out_shape[-1])


class ChainGraph:
    """The kept-graph interface (:class:`~toolkit.hessian._graph.FirstOrderGraph`) for chains:
    ``hvp_sum``, ``batch_hvp``, ``check``; rebuilt when the parameters change in place."""

    def __init__(self, op, batches, steps):
        self.op, self.batches, self.names, self.steps = op, batches, op.names, steps
        self._build()

    def _versions(self) -> list[int]:
        return [p._version for p in self.op.params.values()]

    def _build(self) -> None:
        self.built_at = self._versions()
        self.parts = [_Batch(self, b) for b in self.batches]
        self.max_rows = max(part.rows for part in self.parts)
        self._work: dict[tuple[int, str], torch.Tensor] = {}

    def _buffer(self, k: int, kind: str, rows: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """A (rows, width) workspace tensor for step ``k``, allocated once and reused by every
        product: fresh tensors of this size cost page faults comparable to the matrix products."""
        key = (k, kind)
        buf = self._work.get(key)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != width or buf.dtype != like.dtype:
            buf = self._work[key] = torch.empty(max(rows, self.max_rows), width, dtype=like.dtype,
                                                device=like.device)
        return buf[:rows]

    def _accumulate(self, i: int, v: dict[str, torch.Tensor], out: dict[str, torch.Tensor],
                    alpha: float) -> None:
        """Add ``alpha`` · H_b v for batch ``i`` into ``out`` (name -> tensor shaped like the
        parameter; names of ``v`` only), by the R-operator (see the module docstring)."""
        part, value = self.parts[i], {**self.op.fixed, **self.op.params}
        rows = part.rows
        h_dot, tangent_in, z_dot_in = None, [None] * len(self.steps), [None] * len(self.steps)
        for k, (name, module) in enumerate(self.steps):  # forward tangents
            if isinstance(module, nn.Linear):
                tangent_in[k] = h_dot
                a, w = part.inputs[k], value[f"{name}.weight"]
                vw, vb = v.get(f"{name}.weight"), v.get(f"{name}.bias")
                if h_dot is None and vw is None and vb is None:
                    continue
                z_dot = self._buffer(k, "z", rows, w.shape[0], a)
                if h_dot is not None:
                    torch.mm(h_dot, w.T, out=z_dot)
                    if vw is not None:
                        z_dot.addmm_(a, vw.T)
                elif vw is not None:
                    torch.mm(a, vw.T, out=z_dot)
                else:
                    z_dot.zero_()
                if vb is not None:
                    z_dot.add_(vb)
                h_dot = z_dot
            elif h_dot is not None:  # each step's tangent is its own buffer: scaled in place
                if part.s2[k] is not None:  # σ'' term needs the input tangent kept
                    z_dot_in[k] = h_dot
                    h_dot = torch.mul(h_dot, part.s1[k],
                                      out=self._buffer(k, "a", rows, h_dot.shape[1], h_dot))
                else:
                    h_dot.mul_(part.s1[k])
        g_dot = part.output_hvp(h_dot) if h_dot is not None else None
        for k in range(len(self.steps) - 1, -1, -1):  # backward tangents
            name, module = self.steps[k]
            g = part.grads[k]
            if not isinstance(module, nn.Linear):
                if g_dot is not None:
                    g_dot.mul_(part.s1[k])
                if part.g_s2[k] is not None and z_dot_in[k] is not None:
                    g_dot = (torch.mul(part.g_s2[k], z_dot_in[k]) if g_dot is None
                             else g_dot.addcmul_(part.g_s2[k], z_dot_in[k]))
                continue
            a, w_name, b_name = part.inputs[k], f"{name}.weight", f"{name}.bias"
            if w_name in out:
                if g_dot is not None:
                    out[w_name].addmm_(g_dot.T, a, alpha=alpha)
                if tangent_in[k] is not None:
                    out[w_name].addmm_(g.T, tangent_in[k], alpha=alpha)
            if b_name in out and g_dot is not None:
                out[b_name].add_(g_dot.sum(0), alpha=alpha)
            if k > 0:
                vw = v.get(w_name)
                if g_dot is None and vw is None:  # no tangent reaches the layers below
                    continue
                w = value[w_name]
                new = self._buffer(k, "g", rows, w.shape[1], g)
                if g_dot is not None:
                    torch.mm(g_dot, w, out=new)
                    if vw is not None:
                        new.addmm_(g, vw)
                else:
                    torch.mm(g, vw, out=new)
                g_dot = new

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name in self.names:
            p = self.op.params[name]
            out[name] = flat[offset:offset + p.numel()].view(p.shape)
            offset += p.numel()
        return out

    def batch_quadratic(self, i: int, v: dict[str, torch.Tensor]) -> torch.Tensor:
        r"""vᵀH_b v for batch ``i`` (float64 scalar) by second-order forward mode, with no
        backward pass: along θ + tv every layer carries (ż, z̈) with
        :math:`\dot z = \dot aW^\top + aV^\top + v_b`, :math:`\ddot z = \ddot aW^\top + 2\dot aV^\top`,
        :math:`\dot a' = σ'\dot z`, :math:`\ddot a' = σ'\ddot z + σ''\dot z^2`, and
        :math:`\frac{d^2}{dt^2}L = \dot f^\top ∇^2_f L\,\dot f + ∇_f L^\top \ddot f`
        (Taylor-mode differentiation: Griewank & Walther, *Evaluating Derivatives*, 2008).
        Four matrix products per layer (one for the first) against the six of a product Hv:
        what Hutchinson's trace estimator needs, since it uses only these scalars."""
        part, value = self.parts[i], {**self.op.fixed, **self.op.params}
        rows = part.rows
        d1 = d2 = None  # first and second tangents of the current activations
        for k, (name, module) in enumerate(self.steps):
            if isinstance(module, nn.Linear):
                a, w = part.inputs[k], value[f"{name}.weight"]
                vw, vb = v.get(f"{name}.weight"), v.get(f"{name}.bias")
                z1 = z2 = None
                if d1 is not None or vw is not None or vb is not None:
                    z1 = self._buffer(k, "z", rows, w.shape[0], a)
                    if d1 is not None:
                        torch.mm(d1, w.T, out=z1)
                        if vw is not None:
                            z1.addmm_(a, vw.T)
                    elif vw is not None:
                        torch.mm(a, vw.T, out=z1)
                    else:
                        z1.zero_()
                    if vb is not None:
                        z1.add_(vb)
                if d2 is not None or (d1 is not None and vw is not None):
                    z2 = self._buffer(k, "zz", rows, w.shape[0], a)
                    if d2 is not None:
                        torch.mm(d2, w.T, out=z2)
                        if d1 is not None and vw is not None:
                            z2.addmm_(d1, vw.T, alpha=2.0)
                    else:
                        torch.mm(d1, vw.T, out=z2).mul_(2.0)
                d1, d2 = z1, z2
            elif d1 is not None:  # each tangent is its own buffer: updated in place
                if d2 is not None:
                    d2.mul_(part.s1[k])
                if part.s2[k] is not None:
                    term = part.s2[k] * d1.square()
                    d2 = term if d2 is None else d2.add_(term)
                d1.mul_(part.s1[k])
        if d1 is None:
            return torch.zeros((), dtype=torch.float64, device=part.out.device)
        curvature = part.output_hvp(d1)
        total = (torch.zeros((), dtype=torch.float64, device=d1.device) if curvature is None
                 else torch.sum(d1 * curvature, dtype=torch.float64))
        if d2 is not None:
            total = total + torch.sum(part.g_out.detach().reshape(d2.shape) * d2,
                                      dtype=torch.float64)
        return total

    def quadratic_sum(self, v: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(Σ_b n_b vᵀH_b v, Σ_b n_b)."""
        if self._versions() != self.built_at:
            self._build()
        total = sum(self.batch_quadratic(i, v) * part.n for i, part in enumerate(self.parts))
        return total, sum(part.n for part in self.parts)

    def batch_hvp(self, i: int, v: dict[str, torch.Tensor]) -> list[torch.Tensor | None]:
        """H_b v for batch ``i`` as a list aligned with ``op.names``."""
        flat = torch.zeros(self.op.numel, dtype=self.op.dtype, device=self.op.device)
        out = self._views(flat)
        self._accumulate(i, v, out, 1.0)
        return [out[n] for n in self.names]

    def hvp_sum(self, v: dict[str, torch.Tensor], total: torch.Tensor) -> int:
        """Add Σ_b n_b H_b v into ``total`` (flat); return Σ_b n_b."""
        if self._versions() != self.built_at:  # the cache holds the old parameters' values
            self._build()
        out = self._views(total)
        for i, part in enumerate(self.parts):
            self._accumulate(i, v, out, float(part.n))
        return sum(part.n for part in self.parts)

    def check(self, op, draw_v):
        """As :meth:`FirstOrderGraph.check`: (the first batch's gradient at the outputs, (the
        cached outputs, a second forward pass through the model)), the second pass on the first
        :data:`CHECK_ROWS` samples — the chain treats samples independently, so randomness and a
        chain that does not reproduce the model show there — and on the whole batch when those
        disagree (a model that mixes samples before its first layer). The comparison also
        confirms that the chain reproduces the model's forward."""
        if _has_missing_derivative([self.parts[0].g_out]):
            self.batch_hvp(0, draw_v())  # raises PyTorch's error, named by second_order
        batch, cached = next(op.batches()), self.parts[0].out.detach()
        n = min(CHECK_ROWS, B.batch_len(batch))
        with torch.no_grad():
            pair = (cached[:n].reshape(-1),
                    _flat_outputs(op.outputs(op.params, B.select(batch, slice(0, n)))))
            if not outputs_agree(*pair):
                pair = cached.reshape(-1), _flat_outputs(op.outputs(op.params, batch))
        return self.parts[0].g_out.detach().reshape(-1), pair
