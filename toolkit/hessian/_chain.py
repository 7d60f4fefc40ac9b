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
layer above (two for the first layer) and a few elementwise ones, where a backward pass through
the autograd graph also transposes, zero-fills and accumulates: 7.3 ms against 10.1 ms per
product on the digits MLP 64-256-256-10 (N = 1,347, one thread), whose six products per layer
alone take 6.7 ms (``benchmarks/anchors/hessian_vs_pyhessian.py``). The loss enters only through
its gradient and Hessian-vector product with respect to the model's outputs (autograd on the
small output tensor), so any loss works. Written by hand because no library computes structured
second-order products for such chains; it is checked against dense Hessians and the autograd
paths in ``tests/test_hessian_chain.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import batches as B
from .._grid import _input_of, first_linear_layer, linear_chain
from ._autodiff import check_graph
from ._graph import _flat_outputs, _has_missing_derivative

__all__: list[str] = []


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
        self.first_out = self.parts[0].out.detach().reshape(-1).clone()

    def batch_hvp(self, i: int, v: dict[str, torch.Tensor]) -> list[torch.Tensor | None]:
        """H_b v for batch ``i`` as a list aligned with ``op.names`` (R-operator, see module)."""
        part, value = self.parts[i], {**self.op.fixed, **self.op.params}
        out: dict[str, torch.Tensor] = {}
        h_dot, tangent_in, z_dot_in = None, [None] * len(self.steps), [None] * len(self.steps)
        for k, (name, module) in enumerate(self.steps):  # forward tangents
            if isinstance(module, nn.Linear):
                tangent_in[k] = h_dot
                a, w = part.inputs[k], value[f"{name}.weight"]
                vw, vb = v.get(f"{name}.weight"), v.get(f"{name}.bias")
                z_dot = h_dot @ w.T if h_dot is not None else None
                if vw is not None:
                    z_dot = a @ vw.T if z_dot is None else z_dot.addmm_(a, vw.T)
                if vb is not None:
                    z_dot = vb.expand(len(a), -1).clone() if z_dot is None else z_dot.add_(vb)
                h_dot = z_dot
            elif h_dot is not None:  # tangents here are fresh tensors: scaled in place
                if part.s2[k] is not None:
                    z_dot_in[k] = h_dot
                    h_dot = h_dot * part.s1[k]
                else:
                    h_dot = h_dot.mul_(part.s1[k])
        g_dot = part.output_hvp(h_dot) if h_dot is not None else None
        for k in range(len(self.steps) - 1, -1, -1):  # backward tangents
            name, module = self.steps[k]
            g = part.grads[k]
            if not isinstance(module, nn.Linear):
                new = g_dot.mul_(part.s1[k]) if g_dot is not None else None
                if part.s2[k] is not None and z_dot_in[k] is not None:
                    term = g * part.s2[k] * z_dot_in[k]
                    new = term if new is None else new.add_(term)
                g_dot = new
                continue
            a, w_name, b_name = part.inputs[k], f"{name}.weight", f"{name}.bias"
            if w_name in v:
                hw = g_dot.T @ a if g_dot is not None else torch.zeros_like(value[w_name])
                if tangent_in[k] is not None:
                    hw.addmm_(g.T, tangent_in[k])
                out[w_name] = hw
            if b_name in v:
                out[b_name] = (g_dot.sum(0) if g_dot is not None
                               else torch.zeros_like(value[b_name]))
            if k > 0:
                vw = v.get(w_name)
                new = g_dot @ value[w_name] if g_dot is not None else None
                if vw is not None:
                    new = g @ vw if new is None else new.addmm_(g, vw)
                g_dot = new
        return [out.get(n) for n in self.names]

    def hvp_sum(self, v: dict[str, torch.Tensor], total: torch.Tensor) -> int:
        """Add Σ_b n_b H_b v into ``total`` (flat); return Σ_b n_b."""
        if self._versions() != self.built_at:  # the cache holds the old parameters' values
            self._build()
        count = 0
        for i, part in enumerate(self.parts):
            offset = 0
            for h, name in zip(self.batch_hvp(i, v), self.names):
                k = self.op.params[name].numel()
                if h is not None:
                    total[offset:offset + k].add_(h.reshape(-1), alpha=part.n)
                offset += k
            count += part.n
        return count

    def check(self, op, v: dict[str, torch.Tensor]):
        """As :meth:`FirstOrderGraph.check`: (the first batch's gradient at the outputs, (the
        cached outputs, a second forward pass through the model)). The second comparison also
        confirms that the chain reproduces the model's forward."""
        if _has_missing_derivative([self.parts[0].g_out]):
            self.batch_hvp(0, v)  # raises PyTorch's error, named by second_order
        batch = next(op.batches())
        with torch.no_grad():
            again = _flat_outputs(op.outputs(op.params, batch))
        return self.parts[0].g_out.detach().reshape(-1), (self.first_out, again)
