"""toolkit.hessian under the batch contract (toolkit.batches): dict batches, batch-taking losses
(a physics-style residual, a contrastive loss), the model's own loss, loaders and lists of dict
batches — each against the tuple path or a dense Hessian from torch.autograd.functional.hessian."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, Dataset

from toolkit import batches, hessian


class DictMLP(nn.Module):
    """Hugging Face style: forward(**batch), the labels passed too, a dict of outputs with the
    loss when labels are given."""

    def __init__(self, d=5, hidden=6, classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, classes))

    def forward(self, pixels, labels=None):
        logits = self.body(pixels)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out


def _flat_hessian(f, params):
    names = list(params)
    blocks = torch.autograd.functional.hessian(lambda *t: f(dict(zip(names, t))),
                                               tuple(params.values()))
    sizes = [params[n].numel() for n in names]
    return torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j])
                                 for j in range(len(names))], dim=1)
                      for i in range(len(names))], dim=0)


def _params(model):
    return {n: p.detach() for n, p in model.named_parameters()}


@pytest.fixture()
def dict_problem():
    torch.manual_seed(0)
    model = DictMLP().double().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    return model, x, y


@pytest.mark.parametrize("method", hessian.HVP_METHODS)
@pytest.mark.parametrize("loss", ["ce", "callable", None])
def test_dict_batches_give_the_tuple_path_hessian(dict_problem, method, loss):
    model, x, y = dict_problem
    loss_fn = {"ce": "ce", None: None,
               "callable": lambda out, batch: F.cross_entropy(out["logits"], batch["labels"])}[loss]
    dense = _flat_hessian(
        lambda p: F.cross_entropy(functional_call(model, p, (x,))["logits"], y), _params(model))
    v = torch.randn(dense.shape[0], generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    for budget in (None, 0):  # the kept first-order graph and the streaming product
        op = hessian.HessianOperator(model, loss_fn, {"pixels": x, "labels": y}, batch_size=15,
                                     method=method, graph_budget=budget)
        assert op.n_samples == 40
        torch.testing.assert_close(op.matvec(v), dense @ v, rtol=1e-9, atol=1e-12)
    tuple_model = model.body  # the same parameters under the tuple contract
    tuple_hv = hessian.hvp(tuple_model, "ce", (x, y), v, batch_size=15, method=method)
    torch.testing.assert_close(tuple_hv, dense @ v, rtol=1e-9, atol=1e-12)


def test_every_function_accepts_dict_batches(dict_problem):
    model, x, y = dict_problem
    data = {"pixels": x, "labels": y}
    dense = _flat_hessian(
        lambda p: F.cross_entropy(functional_call(model, p, (x,))["logits"], y), _params(model))
    exact = torch.linalg.eigvalsh(dense).numpy()
    top = hessian.top_eigenvalues(model, "ce", data, k=2, tol=1e-8, max_iter=300)
    np.testing.assert_allclose(top.eigenvalues, exact[::-1][:2], rtol=1e-6)
    tr = hessian.trace(model, "ce", data, n_samples=60, method="hutch++", progress=False)
    assert abs(tr.trace - float(torch.trace(dense))) < 5 * tr.stderr + 1e-9
    dens = hessian.spectral_density(model, "ce", data, n_vectors=1, steps=dense.shape[0],
                                    progress=False)
    assert dens.nodes[0].max() == pytest.approx(exact.max(), rel=1e-6)
    table = hessian.class_hessian(model, "ce", data, tol=1e-8, max_iter=300, progress=False)
    tuple_table = hessian.class_hessian(model.body, "ce", (x, y), tol=1e-8, max_iter=300,
                                        progress=False)
    np.testing.assert_allclose(table["lambda_max"], tuple_table["lambda_max"], rtol=1e-6)
    assert list(table["n_samples"]) == list(tuple_table["n_samples"])
    sharp = hessian.sharpness(model, "ce", data, rho=0.05)
    sharp_t = hessian.sharpness(model.body, "ce", (x, y), rho=0.05)
    assert sharp.sharpness == pytest.approx(sharp_t.sharpness, rel=1e-9)
    layers = hessian.layer_table(model, "ce", data, params="body.2", progress=False)
    assert list(layers["group"]) == ["body.2"]
    idx = slice(dense.shape[0] - layers["n_params"][0], None)
    assert layers["trace"][0] == pytest.approx(float(torch.trace(dense[idx, idx])), rel=1e-9)


class _Pairs(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixels": self.x[i], "labels": self.y[i]}


def test_loaders_and_lists_of_dict_batches(dict_problem):
    model, x, y = dict_problem
    dense = _flat_hessian(
        lambda p: F.cross_entropy(functional_call(model, p, (x,))["logits"], y), _params(model))
    v = torch.randn(dense.shape[0], generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    loader = DataLoader(_Pairs(x, y), batch_size=16)  # 16 + 16 + 8, streamed at every product
    ready = [{"pixels": x[i:i + 10], "labels": y[i:i + 10]} for i in range(0, 40, 10)]
    for data in (loader, ready):
        for method in hessian.HVP_METHODS:
            hv = hessian.hvp(model, "ce", data, v, method=method)
            torch.testing.assert_close(hv, dense @ v, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------- batch-taking losses


H_STEP = 0.05


@batches.takes_batch
def poisson_residual(out, batch):
    """Physics-style: the mean squared residual of u'' = f by central differences, plus the
    boundary values u(0)² + u(1)² (the batch's "boundary" points)."""
    lap = (out["u_plus"] - 2 * out["u"] + out["u_minus"]) / H_STEP**2
    return ((lap - batch["f"]) ** 2).mean() + (out["u_boundary"] ** 2).mean()


class Collocation(nn.Module):
    """u(x) by an MLP, evaluated at x, at x ± h and at the boundary (keys of a dict batch)."""

    def __init__(self):
        super().__init__()
        self.u = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x, x_plus, x_minus, boundary, f):
        return {"u": self.u(x), "u_plus": self.u(x_plus), "u_minus": self.u(x_minus),
                "u_boundary": self.u(boundary)}


@pytest.mark.parametrize("method", hessian.HVP_METHODS)
def test_physics_style_loss_on_dict_batches_equals_the_dense_hessian(method):
    torch.manual_seed(0)
    model = Collocation().double().eval()
    x = torch.linspace(0.05, 0.95, 30, dtype=torch.float64).reshape(-1, 1)
    ends = torch.tensor([[0.0], [1.0]], dtype=torch.float64).repeat(15, 1)  # a column of 30
    data = {"x": x, "x_plus": x + H_STEP, "x_minus": x - H_STEP, "boundary": ends,
            "f": -(torch.pi**2) * torch.sin(torch.pi * x)}
    dense = _flat_hessian(lambda p: poisson_residual(functional_call(model, p, (), data), data),
                          _params(model))
    v = torch.randn(dense.shape[0], generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64)
    # a per-sample mean loss: batches of 6 (each with both ends) give the full-data Hessian
    op = hessian.HessianOperator(model, poisson_residual, data, batch_size=6, method=method)
    torch.testing.assert_close(op.matvec(v), dense @ v, rtol=1e-9, atol=1e-9)
    assert float((dense @ v).norm()) > 1.0
    top = hessian.top_eigenvalues(model, poisson_residual, data, tol=1e-8, max_iter=200,
                                  hvp_method=method)
    assert top.eigenvalues[0] == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-6)


class Siamese(nn.Module):
    """One encoder on the two views of a tuple batch's first element."""

    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, views):
        return self.enc(views[0]), self.enc(views[1])


@batches.takes_batch
def nt_xent(out, batch, temperature=0.5):
    """Contrastive (InfoNCE, one direction): the two views of sample i are the positive pair, the
    other samples of the batch the negatives, so the loss couples the batch's samples."""
    za, zb = F.normalize(out[0], dim=1), F.normalize(out[1], dim=1)
    return F.cross_entropy(za @ zb.T / temperature, torch.arange(len(za)))


@pytest.mark.parametrize("method", hessian.HVP_METHODS)
def test_contrastive_loss_on_tuple_batches_marked_takes_batch(method):
    torch.manual_seed(0)
    model = Siamese(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))).double().eval()
    gen = torch.Generator().manual_seed(5)
    xa = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    xb = xa + 0.1 * torch.randn(12, 4, generator=gen, dtype=torch.float64)

    def dense_on(s):
        return _flat_hessian(lambda p: nt_xent(functional_call(model, p, ((xa[s], xb[s]),)), None),
                             _params(model))

    whole = dense_on(slice(0, 12))
    v = torch.randn(whole.shape[0], generator=torch.Generator().manual_seed(6),
                    dtype=torch.float64)
    # a list with one tuple batch ((xa, xb), unused targets): model(batch[0]) sees both views
    hv = hessian.hvp(model, nt_xent, [((xa, xb), torch.zeros(12))], v, method=method)
    torch.testing.assert_close(hv, whole @ v, rtol=1e-9, atol=1e-12)
    # two batches of 6: the size-weighted mean of the per-batch Hessians, as documented
    halves = [((xa[:6], xb[:6]), torch.zeros(6)), ((xa[6:], xb[6:]), torch.zeros(6))]
    hv2 = hessian.hvp(model, nt_xent, halves, v, method=method)
    torch.testing.assert_close(hv2, (dense_on(slice(0, 6)) + dense_on(slice(6, 12))) @ v / 2,
                               rtol=1e-9, atol=1e-12)
    assert float((hv2 - hv).norm()) > 1e-3 * float(hv.norm())  # the batching changes it


def test_a_loss_that_returns_no_scalar_is_refused(dict_problem):
    model, x, y = dict_problem
    with pytest.raises(ValueError, match="scalar"):
        hessian.HessianOperator(model, lambda out, batch: out["logits"], {"pixels": x,
                                                                         "labels": y})
