r"""Hessian-vector products that reuse the first-order graph (private to :mod:`toolkit.hessian`).

The streaming product recomputes, for every product and every batch, the forward pass and the
first backward pass before the second backward (``autograd.grad`` twice). When the data are held
in memory and the autograd graph of the gradient fits a memory budget, the gradient of every batch
is computed *once* with ``create_graph=True`` and each product is one backward pass through that
graph, :math:`H_b v = ∂(g_b·v)/∂θ = \mathrm{autograd.grad}(g_b, θ, v)` — what PyHessian does
(Yao et al. 2020, arXiv 1912.07145). Same numbers as the streaming path, about a third of the work
per product; the price is the graph's memory, held for the operator's lifetime.

The graph is estimated before it is built: one probe forward on one sample counts the elements of
every leaf module's output (A per sample); the graph holds the forward activations and the
first backward's intermediates, about :data:`GRAPH_FACTOR` · N · A values, plus three
parameter-sized vectors. Measured on the digits MLPs (``benchmarks/anchors/hessian_vs_pyhessian.py``
prints the estimate next to the process's peak-memory growth).
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten

from .. import batches as B
from ._autodiff import check_graph

__all__: list[str] = []

GRAPH_FACTOR = 6  # graph values per activation value (forward + first backward), with margin
DEFAULT_BUDGET_BYTES = 1 << 30  # 1 GiB; HessianOperator(graph_budget=...) overrides it


def _flat_outputs(out) -> torch.Tensor:
    """Every tensor in a model's outputs (a tensor, tuple, dict...) as one flat vector."""
    leaves = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    if not leaves:
        leaves = [B.logits(out)]
    return torch.cat([t.detach().reshape(-1) for t in leaves])


def _input_numel(batch) -> int:
    """Values per sample of the batch's model inputs (x of a tuple, every column of a dict)."""
    part = batch[:1] if isinstance(batch, tuple) else batch
    return sum(t.numel() for t in tree_flatten(part)[0]
               if isinstance(t, torch.Tensor) and t.is_floating_point())


def graph_bytes(op, batches) -> int:
    """Estimated bytes of the first-order graphs of all ``batches`` (tuples or dicts) of ``op``."""
    one = B.select(batches[0], slice(0, 1))
    # the forward runs on two samples (layers with batch statistics need two) and counts one
    two = B.select(batches[0], slice(0, 2))
    acts = [0]

    def hook(mod, inp, out):
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                acts[0] += t[:1].numel() if t.ndim else 1

    leaves = [m for m in op.model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            op.outputs(op.params, two)
    finally:
        for h in handles:
            h.remove()
    n = sum(B.batch_len(b) for b in batches)
    item = torch.empty((), dtype=op.dtype).element_size()
    return int((GRAPH_FACTOR * n * (acts[0] + _input_numel(one)) + 3 * op.numel) * item)


def fits(op, batches, budget: int | None) -> bool:
    """Whether ``batches`` are in memory and their graph estimate fits ``budget`` bytes (None:
    :data:`DEFAULT_BUDGET_BYTES`): then a graph (or a chain's cache) is kept."""
    budget = DEFAULT_BUDGET_BYTES if budget is None else budget
    return bool(batches) and graph_bytes(op, batches) <= budget


def outputs_agree(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two computations of the same outputs agree to float rounding (relative 1e-5): the
    determinism test of :meth:`HessianOperator.check_determinism`."""
    return float((a - b).norm()) <= 1e-5 * (float(a.norm()) + float(b.norm())) + 1e-12


def _has_missing_derivative(grads) -> bool:
    """Whether the graph of the gradients holds a node PyTorch records for an operation with no
    derivative (``NotImplemented``: differentiating through it raises)."""
    stack = [g.grad_fn for g in grads if g is not None]
    seen = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name().endswith("NotImplemented"):
            return True
        stack.extend(fn for fn, _ in node.next_functions)
    return False


class FirstOrderGraph:
    """Per-batch gradients with their graphs, kept; ``hvp_sum`` takes one backward per batch."""

    def __init__(self, op, batches):
        self.op, self.batches, self.names = op, batches, op.names
        self._build()

    def _versions(self) -> list[int]:
        return [p._version for p in self.op.params.values()]

    def _build(self) -> None:
        op = self.op
        self.built_at = self._versions()  # parameters changed in place later: rebuilt on use
        self.leaves = {n: p.detach().requires_grad_(True) for n, p in op.params.items()}
        self.parts = []  # (gradients with graph, batch size)
        with torch.enable_grad():
            for i, batch in enumerate(self.batches):
                out = op.outputs(self.leaves, batch)
                if i == 0:
                    self.first_out = _flat_outputs(out).clone()
                loss = op.loss_of(out, batch)
                if i == 0:
                    check_graph(loss)
                gs = torch.autograd.grad(loss, list(self.leaves.values()),
                                         create_graph=True, allow_unused=True)
                self.parts.append((gs, B.batch_len(batch)))

    def batch_hvp(self, i: int, v: dict[str, torch.Tensor]) -> list[torch.Tensor | None]:
        gs, _ = self.parts[i]
        pairs = [(g, v[n]) for g, n in zip(gs, self.names) if g is not None and g.requires_grad]
        if not pairs:
            return [None] * len(self.names)
        hv = torch.autograd.grad([g for g, _ in pairs], list(self.leaves.values()),
                                 grad_outputs=[t for _, t in pairs], retain_graph=True,
                                 allow_unused=True)
        return list(hv)

    def hvp_sum(self, v: dict[str, torch.Tensor], total: torch.Tensor) -> int:
        """Add Σ_b n_b H_b v into ``total`` (flat); return Σ_b n_b."""
        if self._versions() != self.built_at:  # the graph holds the old parameters' activations
            self._build()
        count = 0
        for i, (_, n_b) in enumerate(self.parts):
            offset = 0
            for h, name in zip(self.batch_hvp(i, v), self.names):
                k = self.leaves[name].numel()
                if h is not None:
                    total[offset:offset + k].add_(h.reshape(-1), alpha=n_b)
                offset += k
            count += n_b
        return count

    def check(self, op, draw_v):
        """Cheap determinism evidence: (the first batch's gradient, (its outputs, again)).

        A second *forward* pass must reproduce the outputs the graph was built from (randomness in
        the model shows there); the gradient, already computed, must be finite. No product is
        spent — every product is checked for finiteness as it is made (``HessianOperator.matvec``)
        — unless the gradient's graph holds an operation without a derivative: then one product
        raises PyTorch's error, which ``second_order`` names (on a vector from ``draw_v()``)."""
        if _has_missing_derivative(self.parts[0][0]):
            self.batch_hvp(0, draw_v())
        batch = next(op.batches())
        with torch.no_grad():
            again = _flat_outputs(op.outputs(op.params, batch))
        gs = [g.detach() if g is not None else torch.zeros_like(self.leaves[n])
              for g, n in zip(self.parts[0][0], self.names)]
        return torch.cat([g.reshape(-1) for g in gs]), (self.first_out, again)
