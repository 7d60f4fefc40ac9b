"""toolkit.hessian._chain: the R-operator products of Linear/activation chains are checked against
dense Hessians (torch.autograd.functional.hessian, independent of toolkit) and against the
autograd paths, on activations with and without a second derivative, several batches, sequence
inputs, parameter blocks and losses of every kind."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from toolkit import hessian, models
from toolkit.hessian._chain import ChainGraph
from toolkit.hessian._graph import FirstOrderGraph

DT = torch.float64


def _dense(model, loss_fn, x, y, names=None):
    named = dict(model.named_parameters())
    names = list(named) if names is None else names
    fixed = {n: p.detach() for n, p in named.items() if n not in names}

    def f(*flat):
        return loss_fn(functional_call(model, {**fixed, **dict(zip(names, flat))}, (x,)), y)

    blocks = torch.autograd.functional.hessian(f, tuple(named[n].detach() for n in names))
    sizes = [named[n].numel() for n in names]
    return torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j])
                                 for j in range(len(names))], dim=1)
                      for i in range(len(names))], dim=0)


def _cases():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x = torch.randn(30, 5, generator=gen, dtype=DT)
    labels = torch.randint(0, 3, (30,), generator=gen)
    seq = torch.randn(12, 4, 5, generator=gen, dtype=DT)  # (N, S, d): rows are N*S
    return {
        "relu mlp, cross-entropy": (models.MLP(5, [7, 6], 3).to(DT), x, labels, F.cross_entropy),
        "tanh mlp, mse (sigma'' != 0)": (models.MLP(5, [7], 3, activation="tanh").to(DT), x,
                                         torch.randn(30, 3, generator=gen, dtype=DT), F.mse_loss),
        "gelu/silu/dropout, no bias, sequences": (
            nn.Sequential(nn.Linear(5, 6), nn.GELU(), nn.Dropout(0.3), nn.Linear(6, 4, bias=False),
                          nn.SiLU(), nn.Linear(4, 2)).to(DT),
            seq, torch.randn(12, 4, 2, generator=gen, dtype=DT), F.mse_loss),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_chain_products_equal_the_dense_hessian(case):
    model, x, y, loss_fn = _cases()[case]
    model.eval()
    op = hessian.HessianOperator(model, loss_fn, (x, y))
    assert isinstance(op._graph, ChainGraph)
    dense = _dense(model, loss_fn, x, y)
    torch.testing.assert_close(op.dense(), dense, rtol=1e-9, atol=1e-11)


def test_chain_products_over_batches_and_on_a_parameter_block_match_autograd():
    model, x, y, loss_fn = _cases()["tanh mlp, mse (sigma'' != 0)"]
    model.eval()
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]  # two batches: their size-weighted mean
    chain = hessian.HessianOperator(model, loss_fn, batches)
    graph = hessian.HessianOperator(model, loss_fn, batches, method="rev-rev")
    stream = hessian.HessianOperator(model, loss_fn, batches, graph_budget=0)
    assert isinstance(chain._graph, ChainGraph) and isinstance(graph._graph, FirstOrderGraph)
    assert stream._graph is None
    v = chain.random_vector(torch.Generator().manual_seed(1))
    for other in (graph, stream):
        torch.testing.assert_close(chain.matvec(v), other.matvec(v), rtol=1e-10, atol=1e-12)
    names = ["features.1.weight", "head.bias"]  # a block, with the rest of the chain fixed
    block = hessian.HessianOperator(model, loss_fn, (x, y), params=names)
    assert isinstance(block._graph, ChainGraph)
    torch.testing.assert_close(block.dense(), _dense(model, loss_fn, x, y, names), rtol=1e-9,
                               atol=1e-11)


def test_a_loss_linear_in_the_outputs_has_only_the_network_curvature():
    model, x, _, _ = _cases()["tanh mlp, mse (sigma'' != 0)"]
    model.eval()
    loss_fn = lambda out, _: out[:, 0].mean()  # noqa: E731 (zero Hessian in the outputs)
    op = hessian.HessianOperator(model, loss_fn, (x, torch.zeros(len(x))))
    assert isinstance(op._graph, ChainGraph)
    torch.testing.assert_close(op.dense(), _dense(model, loss_fn, x, torch.zeros(len(x))),
                               rtol=1e-9, atol=1e-12)


def test_only_chains_called_on_tuple_batches_with_the_automatic_method_take_the_chain_path():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 3)

        def forward(self, x):
            return self.b(x + torch.relu(self.a(x)))

    model, x, y, loss_fn = _cases()["relu mlp, cross-entropy"]
    model.eval()
    assert isinstance(hessian.HessianOperator(model, loss_fn, (x, y))._graph, ChainGraph)
    for kw in ({"method": "rev-rev"},):
        assert isinstance(hessian.HessianOperator(model, loss_fn, (x, y), **kw)._graph,
                          FirstOrderGraph)
    assert hessian.HessianOperator(model, loss_fn, (x, y), method="fwd-rev")._graph is None
    from torch.nn.utils import prune

    pruned = models.MLP(5, [7, 6], 3).to(DT).eval()
    prune.l1_unstructured(pruned.features[1], "weight", amount=0.5)  # first layer: a mask hook
    op = hessian.HessianOperator(pruned, loss_fn, (x, y))
    assert isinstance(op._graph, FirstOrderGraph)
    torch.testing.assert_close(op.dense(), _dense(pruned, loss_fn, x, y), rtol=1e-9, atol=1e-11)
    res = Residual().to(DT).eval()
    op = hessian.HessianOperator(res, loss_fn, (x, y))
    assert isinstance(op._graph, FirstOrderGraph)
    torch.testing.assert_close(op.dense(), _dense(res, loss_fn, x, y), rtol=1e-9, atol=1e-11)


def test_the_chain_cache_is_rebuilt_when_parameters_change_in_place():
    model, x, y, loss_fn = _cases()["relu mlp, cross-entropy"]
    model.eval()
    op = hessian.HessianOperator(model, loss_fn, (x, y))
    v = op.random_vector(torch.Generator().manual_seed(2))
    before = op.matvec(v)
    with torch.no_grad():
        model.head.weight.mul_(1.5)
    after = op.matvec(v)
    fresh = hessian.HessianOperator(model, loss_fn, (x, y), method="rev-rev").matvec(v)
    torch.testing.assert_close(after, fresh, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(before, after)


def test_a_loss_without_double_backward_is_named_on_the_chain_path():
    model = nn.Sequential(nn.Linear(3, 4))
    x = torch.randn(5, 3)

    def ctc(out, _):
        lp = out.log_softmax(-1).unsqueeze(1)
        return F.ctc_loss(lp, torch.tensor([[1, 2]]), torch.tensor([5]), torch.tensor([2]))

    with pytest.raises(hessian.NotTwiceDifferentiableError, match="ctc_loss"):
        hessian.HessianOperator(model, ctc, (x, torch.zeros(5)))


@pytest.mark.parametrize("case", list(_cases()))
def test_chain_quadratic_forms_equal_the_dense_hessians(case):
    model, x, y, loss_fn = _cases()[case]
    model.eval()
    op = hessian.HessianOperator(model, loss_fn, (x, y))
    assert isinstance(op._graph, ChainGraph)
    dense = _dense(model, loss_fn, x, y)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = op.random_vector(gen)
        assert op.quadratic_form(v) == pytest.approx(float(v @ dense @ v), rel=1e-10, abs=1e-12)
    assert op.n_hvp == 3


def test_chain_quadratic_forms_over_batches_on_blocks_and_for_a_linear_loss():
    model, x, y, loss_fn = _cases()["tanh mlp, mse (sigma'' != 0)"]
    model.eval()
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    chain = hessian.HessianOperator(model, loss_fn, batches)
    stream = hessian.HessianOperator(model, loss_fn, batches, graph_budget=0)
    assert isinstance(chain._graph, ChainGraph) and stream._graph is None
    v = chain.random_vector(torch.Generator().manual_seed(4))
    whole = float(v @ _dense(model, loss_fn, x, y) @ v)  # one batch: the same mean loss
    assert chain.quadratic_form(v) == pytest.approx(whole, rel=1e-10)
    assert stream.quadratic_form(v) == pytest.approx(whole, rel=1e-10)  # the vᵀ(Hv) fallback
    names = ["features.1.weight", "head.bias"]
    block = hessian.HessianOperator(model, loss_fn, (x, y), params=names)
    dense = _dense(model, loss_fn, x, y, names)
    w = block.random_vector(torch.Generator().manual_seed(5))
    assert block.quadratic_form(w) == pytest.approx(float(w @ dense @ w), rel=1e-10)
    linear = lambda out, _: out[:, 0].mean()  # noqa: E731 (only the network's curvature)
    op = hessian.HessianOperator(model, linear, (x, torch.zeros(len(x))))
    dense = _dense(model, linear, x, torch.zeros(len(x)))
    u = op.random_vector(torch.Generator().manual_seed(6))
    assert op.quadratic_form(u) == pytest.approx(float(u @ dense @ u), rel=1e-10, abs=1e-12)
    with pytest.raises(FloatingPointError, match="not finite"):
        op.quadratic_form(torch.full_like(u, float("nan")))


def test_hutchinson_on_the_chain_takes_quadratic_forms_and_matches_the_autograd_graph():
    model, x, y, loss_fn = _cases()["relu mlp, cross-entropy"]
    model.eval()
    for method in ("hutchinson", "hutch++"):
        chain = hessian.trace(model, loss_fn, (x, y), n_samples=9, method=method, seed=1,
                              progress=False)
        graph = hessian.trace(model, loss_fn, (x, y), n_samples=9, method=method, seed=1,
                              hvp_method="rev-rev", progress=False)
        np.testing.assert_allclose(chain.samples, graph.samples, rtol=1e-9, atol=1e-12)
        assert chain.n_hvp == graph.n_hvp == 9


def test_the_cache_check_falls_back_to_the_whole_batch_for_a_model_that_mixes_samples():
    _, x, y, loss_fn = _cases()["relu mlp, cross-entropy"]
    x = torch.cat([x, x + 1.0])  # more samples than the check's first rows
    y = torch.cat([y, y])
    # batch statistics even in eval mode: every output depends on every sample
    model = nn.Sequential(nn.BatchNorm1d(5, affine=False, track_running_stats=False),
                          nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).to(DT).eval()
    op = hessian.HessianOperator(model, loss_fn, (x, y))  # no "not deterministic" error
    assert isinstance(op._graph, ChainGraph)
    torch.testing.assert_close(op.dense(), _dense(model, loss_fn, x, y), rtol=1e-9, atol=1e-11)


def test_reused_workspaces_leave_no_trace_between_products():
    model, x, y, loss_fn = _cases()["gelu/silu/dropout, no bias, sequences"]
    model.eval()
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]  # unequal batches share the buffers
    op = hessian.HessianOperator(model, loss_fn, batches)
    gen = torch.Generator().manual_seed(7)
    u, w = op.random_vector(gen), op.random_vector(gen)
    first, q = op.matvec(u), op.quadratic_form(w)
    op.matvec(w)
    assert torch.equal(op.matvec(u), first)
    assert op.quadratic_form(w) == q
    dense = _dense(model, loss_fn, x, y)
    torch.testing.assert_close(first, dense @ u, rtol=1e-9, atol=1e-11)
