"""Cross-check against curvlinops (Dangel et al., ``curvlinops-for-pytorch``, a test-only
dependency): its ``HessianLinearOperator`` on the same model, loss and batches must give our
Hessian-vector products, top eigenvalues and traces to float64 rounding.

Skipped with the reason when curvlinops is not installed (``make setup`` installs it)."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from toolkit import hessian

curvlinops = pytest.importorskip(
    "curvlinops", reason="curvlinops-for-pytorch is not installed (make setup installs it, "
    "--no-deps: its backpack dependency declares torchvision)")
from scipy.sparse.linalg import eigsh  # noqa: E402


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 8), nn.Sigmoid(),
                         nn.Linear(8, 3)).double().eval()


def _cnn():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(),
                          nn.AvgPool2d(2), nn.Conv2d(4, 3, 2), nn.Tanh(), nn.Flatten(),
                          nn.Linear(3, 3)).double()
    with torch.no_grad():
        model.train()
        model(torch.randn(32, 2, 4, 4, dtype=torch.float64) + 0.5)  # non-trivial running stats
    return model.eval()


def _vit():
    torch.manual_seed(2)

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 4)
            layer = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.1, batch_first=True)
            self.blocks = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.blocks(self.embed(x)).mean(1))

    return ViT().double().eval()


SHAPES = {"mlp": (6,), "cnn": (2, 4, 4), "vit": (5, 4)}
MODELS = {"mlp": _mlp, "cnn": _cnn, "vit": _vit}


@pytest.fixture(scope="module", params=list(MODELS))
def problem(request):
    name = request.param
    model = MODELS[name]()
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(40, *SHAPES[name], generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    sizes = (15, 15, 10)  # unequal batches: both weight them by size
    batches = list(zip(x.split(sizes), y.split(sizes)))
    # curvlinops 3.0.1 forms jvp(jacrev(loss)); under torch 2.13 that is wrong in the rows of
    # LayerNorm weights (0.28 off on a 4-unit LayerNorm MLP, where jvp(grad(loss)), ours, agrees
    # with finite differences and autograd.functional.hessian — tests/test_hessian_models.py). So
    # on the transformer both sides differentiate every parameter except the LayerNorm weights.
    names = hessian.select_params(model)
    if name == "vit":
        names = [n for n in names if not (".norm" in n and n.endswith(".weight"))]
    named = dict(model.named_parameters())
    params = [named[n] for n in names]
    # curvlinops differentiates the module as it is: for the transformer the fused attention
    # kernel has no double backward, so its operator runs under the math kernel (what ours does)
    with sdpa_kernel(SDPBackend.MATH):
        theirs = curvlinops.HessianLinearOperator(model, nn.CrossEntropyLoss(), params, batches)
    return names, model, (x, y), theirs


def _apply(theirs, v):
    with sdpa_kernel(SDPBackend.MATH):
        return theirs @ v


@pytest.mark.parametrize("method", hessian.HVP_METHODS)
def test_hvp_equals_curvlinops(problem, method):
    names, model, data, theirs = problem
    op = hessian.HessianOperator(model, "ce", data, batch_size=15, method=method, params=names)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(op.numel, generator=gen, dtype=torch.float64)
        ref = _apply(theirs, v)
        assert float(ref.norm()) > 1e-3
        torch.testing.assert_close(op.matvec(v), ref, rtol=1e-10, atol=1e-12)


def test_top_eigenvalues_equal_curvlinops(problem):
    names, model, data, theirs = problem
    with sdpa_kernel(SDPBackend.MATH):
        ref = np.sort(eigsh(theirs.to_scipy(), k=3, which="LA", tol=1e-12)[0])[::-1]
    ours = hessian.top_eigenvalues(model, "ce", data, k=3, tol=1e-10, max_iter=500, params=names)
    np.testing.assert_allclose(ours.eigenvalues, ref, rtol=1e-8)


def test_trace_equals_curvlinops(problem):
    names, model, data, theirs = problem
    op = hessian.HessianOperator(model, "ce", data, params=names)
    dense_theirs = _apply(theirs, torch.eye(op.numel, dtype=torch.float64))
    table = hessian.layer_table(model, "ce", data, groups="parameter", params=names,
                                exact_below=10_000, progress=False)  # exact blocks: Σ = tr(H)
    assert table["trace"].sum() == pytest.approx(float(torch.trace(dense_theirs)), rel=1e-10)
    # the Hutchinson estimate is the mean of zᵀHz over our Rademacher probes: the same probes
    # through curvlinops' operator give the same number
    est = hessian.trace(model, "ce", data, n_samples=20, seed=3, params=names, progress=False)
    gen = torch.Generator().manual_seed(3)
    probes = torch.stack([op.random_vector(gen, "rademacher") for _ in range(20)], dim=1)
    samples = (probes * _apply(theirs, probes)).sum(0)
    np.testing.assert_allclose(est.samples, samples.numpy(), rtol=1e-10)
    assert est.trace == pytest.approx(float(samples.mean()), rel=1e-10)
