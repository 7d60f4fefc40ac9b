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
from torch.func import functional_call

__all__: list[str] = []

GRAPH_FACTOR = 6  # graph values per activation value (forward + first backward), with margin
DEFAULT_BUDGET_BYTES = 1 << 30  # 1 GiB; HessianOperator(graph_budget=...) overrides it


def graph_bytes(op, batches) -> int:
    """Estimated bytes of the first-order graphs of all ``batches`` (x, y) of operator ``op``."""
    x0 = batches[0][0]
    acts = [0]

    def hook(mod, inp, out):
        if isinstance(out, torch.Tensor):
            acts[0] += out[:1].numel()

    leaves = [m for m in op.model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            functional_call(op.model, {**op.fixed, **op.params}, (x0[:1],))
    finally:
        for h in handles:
            h.remove()
    n = sum(len(x) for x, _ in batches)
    item = torch.empty((), dtype=op.dtype).element_size()
    return int((GRAPH_FACTOR * n * (acts[0] + x0[:1].numel()) + 3 * op.numel) * item)


def kept_graph(op, batches, budget: int | None):
    """A :class:`FirstOrderGraph` when ``op`` is reverse-over-reverse on in-memory batches whose
    graph estimate fits ``budget`` bytes (None: :data:`DEFAULT_BUDGET_BYTES`); else None."""
    budget = DEFAULT_BUDGET_BYTES if budget is None else budget
    if op.method == "rev-rev" and batches and graph_bytes(op, batches) <= budget:
        return FirstOrderGraph(op, batches)
    return None


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
            for i, (x, y) in enumerate(self.batches):
                out = functional_call(op.model, {**op.fixed, **self.leaves}, (x,))
                if i == 0:
                    self.first_out = out.detach().clone()
                gs = torch.autograd.grad(op.loss_fn(out, y), list(self.leaves.values()),
                                         create_graph=True, allow_unused=True)
                self.parts.append((gs, len(x)))

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

    def check(self, op, v: dict[str, torch.Tensor]):
        """Cheap determinism evidence: (one product on the first batch, (its outputs, again)).

        A second *forward* pass must reproduce the outputs the graph was built from (randomness in
        the model shows there); the product through the graph must be finite."""
        x, _ = next(op.batches())
        with torch.no_grad():
            again = functional_call(op.model, {**op.fixed, **op.params}, (x,))
        hv = [h if h is not None else torch.zeros_like(self.leaves[n])
              for h, n in zip(self.batch_hvp(0, v), self.names)]
        return torch.cat([h.reshape(-1) for h in hv]), (self.first_out, again)
