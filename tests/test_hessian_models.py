"""toolkit.hessian on the models a new user brings (issue 17): a small vision transformer
(nn.TransformerEncoder with its fused attention and eval-mode fast path, GELU so that finite
differences see no kink, LayerNorm, a linear head),
a CNN with BatchNorm in eval mode, parameter filters and the per-layer table.

References are independent of the toolkit: central finite differences of autograd's gradient
(float64) and ``torch.autograd.functional.hessian`` on the flattened parameters."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from toolkit import hessian

torch.set_default_dtype(torch.float32)


class TinyViT(nn.Module):
    """Patch embedding, a TransformerEncoder (dropout 0.1: inactive in eval mode), LayerNorm and a
    linear head on the mean token: the issue's model, small enough for a dense Hessian."""

    def __init__(self, d=4, heads=2, layers=1, patch=4, classes=3):
        super().__init__()
        self.embed = nn.Linear(patch, d)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.1, activation="gelu",
                                           batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.embed(x)).mean(1)))


class SDPANet(nn.Module):
    """Calls F.scaled_dot_product_attention directly, and nn.MultiheadAttention without weights
    (both dispatch to the fused kernel by default)."""

    def __init__(self, d=4):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.mha = nn.MultiheadAttention(d, 2, batch_first=True)
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(q, k, v)
        h = self.mha(h, h, h, need_weights=False)[0]
        return self.head(h.mean(1))


def _bn_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(12, 3)).double()
    with torch.no_grad():  # running statistics away from (0, 1), as after training
        model.train()
        for _ in range(3):
            model(torch.randn(16, 1, 6, 6, dtype=torch.float64) * 2 + 1)
    return model.eval()


def _vit_problem(seed=0, n=12, layers=1):
    torch.manual_seed(seed)
    model = TinyViT(layers=layers).double().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 5, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    return model, x, y


def _flat_grad(model, loss_fn, x, y):
    """Plain autograd on the module itself (default attention kernels)."""
    model.zero_grad()
    loss_fn(model(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()


def _shift(model, v, t):
    with torch.no_grad():
        i = 0
        for p in model.parameters():
            p.add_(t * v[i:i + p.numel()].view_as(p))
            i += p.numel()


def _finite_difference_hvp(model, loss_fn, x, y, v, h=1e-5):
    """(∇L(θ + h u) − ∇L(θ − h u)) / 2h · ‖v‖ with u = v / ‖v‖: error O(h²) ≈ 1e-9, rounding
    ≈ 1e-11 in float64."""
    u, scale = v / v.norm(), float(v.norm())
    _shift(model, u, h)
    plus = _flat_grad(model, loss_fn, x, y)
    _shift(model, u, -2 * h)
    minus = _flat_grad(model, loss_fn, x, y)
    _shift(model, u, h)
    return (plus - minus) / (2 * h) * scale


def _dense_reference(model, loss_fn, x, y):
    named = dict(model.named_parameters())
    names = list(named)

    def f(*flat):
        return loss_fn(functional_call(model, dict(zip(names, flat)), (x,)), y)

    with sdpa_kernel(SDPBackend.MATH):
        blocks = torch.autograd.functional.hessian(f, tuple(p.detach() for p in named.values()))
    sizes = [named[n].numel() for n in names]
    return torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j])
                                 for j in range(len(names))], dim=1)
                      for i in range(len(names))], dim=0)


@pytest.fixture(scope="module")
def vit():
    model, x, y = _vit_problem()
    return model, x, y, _dense_reference(model, F.cross_entropy, x, y)


@pytest.fixture(scope="module")
def cnn():
    model = _bn_cnn()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(10, 1, 6, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=gen)
    return model, x, y, _dense_reference(model, F.cross_entropy, x, y)


# ------------------------------------------------------------------------ §1 through attention


def test_the_fused_fast_path_is_never_taken_by_the_curvature_code(vit, monkeypatch):
    model, x, y, _ = vit
    fused = torch._transformer_encoder_layer_fwd
    calls = []
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd",
                        lambda *a, **k: calls.append(1) or fused(*a, **k))
    with torch.no_grad():
        model(x)  # eval mode and no grad: the whole layer is one fused kernel
    if not calls:
        pytest.skip("this torch takes no fused fast path for an eval-mode encoder layer")
    calls.clear()
    for method in hessian.HVP_METHODS:  # construction checks forward under no_grad
        hessian.HessianOperator(model, "ce", (x, y), method=method).matvec(
            torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64))
    hessian.sharpness(model, "ce", (x, y))  # the perturbed loss is a no-grad forward
    assert not calls
    assert torch.backends.mha.get_fastpath_enabled()  # and the global switch is restored


@pytest.mark.parametrize("method", hessian.HVP_METHODS)
@pytest.mark.parametrize("budget", [None, 0])
def test_transformer_hvp_equals_finite_differences_and_the_dense_hessian(vit, method, budget):
    model, x, y, dense = vit
    v = torch.randn(dense.shape[0], generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64)
    op = hessian.HessianOperator(model, F.cross_entropy, (x, y), method=method, batch_size=5,
                                 graph_budget=budget)
    hv = op.matvec(v)
    fd = _finite_difference_hvp(model, F.cross_entropy, x, y, v)
    torch.testing.assert_close(hv, fd, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(hv, dense @ v, rtol=1e-9, atol=1e-11)
    assert float((dense @ v).norm()) > 1e-2  # the product is not trivially small


def test_transformer_dense_hessian_both_methods(vit):
    model, x, y, dense = vit
    for method in hessian.HVP_METHODS:
        ours = hessian.HessianOperator(model, "ce", (x, y), method=method).dense()
        torch.testing.assert_close(ours, dense, rtol=1e-9, atol=1e-11)


def test_every_curvature_function_runs_through_the_transformer(vit):
    model, x, y, dense = vit
    exact = torch.linalg.eigvalsh(dense).numpy()
    top = hessian.top_eigenvalues(model, "ce", (x, y), k=2, tol=1e-8, max_iter=400)
    np.testing.assert_allclose(top.eigenvalues, exact[::-1][:2], rtol=1e-5)
    low = hessian.top_eigenvalues(model, "ce", (x, y), which="smallest", tol=1e-6, max_iter=300)
    np.testing.assert_allclose(low.eigenvalues, exact[:1], rtol=1e-3)
    tr = hessian.trace(model, "ce", (x, y), n_samples=60, method="hutch++", progress=False)
    assert abs(tr.trace - float(torch.trace(dense))) < 5 * tr.stderr + 1e-8
    dens = hessian.spectral_density(model, "ce", (x, y), n_vectors=2, steps=10, progress=False)
    assert dens.integral() == pytest.approx(1.0, abs=1e-3)
    table = hessian.class_hessian(model, "ce", (x, y), tol=1e-6, max_iter=200, progress=False)
    assert len(table) == len(torch.unique(y)) and np.isfinite(table["lambda_max"]).all()
    sharp = hessian.sharpness(model, "ce", (x, y), rho=1e-3)
    assert np.isfinite(sharp.sharpness) and sharp.grad_norm > 0
    gn = hessian.hessian_matrix(model, "ce", (x, y), part="gauss_newton")
    assert torch.linalg.eigvalsh(gn).min() > -1e-10  # the Gauss-Newton part is PSD


def test_scaled_dot_product_attention_and_multihead_attention_directly():
    torch.manual_seed(1)
    model = SDPANet().double().eval()
    x = torch.randn(8, 5, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (8,))
    dense = _dense_reference(model, F.cross_entropy, x, y)
    v = torch.randn(dense.shape[0], dtype=torch.float64)
    for method in hessian.HVP_METHODS:
        hv = hessian.hvp(model, F.cross_entropy, (x, y), v, method=method)
        torch.testing.assert_close(hv, dense @ v, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(hessian.hvp(model, F.cross_entropy, (x, y), v),
                               _finite_difference_hvp(model, F.cross_entropy, x, y, v),
                               rtol=1e-6, atol=1e-8)


def test_transformer_in_train_mode_with_dropout_is_refused_and_dropout_zero_works():
    model, x, y = _vit_problem(seed=2)
    model.train()
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        hessian.HessianOperator(model, "ce", (x, y))
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    with pytest.raises(ValueError, match="attention dropout"):  # self_attn.dropout is a float
        hessian.HessianOperator(model, "ce", (x, y))
    model.blocks.layers[0].self_attn.dropout = 0.0
    op = hessian.HessianOperator(model, "ce", (x, y))  # train mode, dropout 0: deterministic
    v = torch.randn(op.numel, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), _finite_difference_hvp(model, F.cross_entropy, x, y,
                                                                    v), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------- CNN with BatchNorm


@pytest.mark.parametrize("method", hessian.HVP_METHODS)
def test_cnn_with_batchnorm_in_eval_mode_hvp_equals_finite_differences_and_dense(cnn, method):
    model, x, y, dense = cnn
    v = torch.randn(dense.shape[0], generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    op = hessian.HessianOperator(model, F.cross_entropy, (x, y), method=method, batch_size=4)
    hv = op.matvec(v)
    torch.testing.assert_close(hv, _finite_difference_hvp(model, F.cross_entropy, x, y, v),
                               rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(hv, dense @ v, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(op.dense(), dense, rtol=1e-9, atol=1e-11)
    # the running statistics are used and left as they were (eval mode: no update)
    bn = model[1]
    assert not torch.allclose(bn.running_var, torch.ones(3, dtype=torch.float64))
    before = bn.running_mean.clone()
    hessian.top_eigenvalues(model, "ce", (x, y))
    torch.testing.assert_close(bn.running_mean, before, rtol=0, atol=0)


# ------------------------------------------------------------- what cannot be differentiated twice


class _OnceSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _NoJvpSquare(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _Wrap(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn.apply(x)


def _mlp_with(fn):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), _Wrap(fn), nn.Linear(4, 2)).eval()


@pytest.mark.parametrize("budget", [None, 0])
def test_once_differentiable_function_raises_our_error_not_a_silent_zero(budget):
    x, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    with pytest.raises(hessian.NotTwiceDifferentiableError, match="once_differentiable"):
        hessian.HessianOperator(_mlp_with(_OnceSquare), "ce", (x, y), method="rev-rev",
                                graph_budget=budget)
    # parameters after the function do not need its second derivative: that block works
    model = _mlp_with(_OnceSquare)
    op = hessian.HessianOperator(model, "ce", (x, y), method="rev-rev", params="2",
                                 graph_budget=budget)
    assert op.names == ["2.weight", "2.bias"] and torch.isfinite(op.dense()).all()


def test_missing_forward_mode_rule_suggests_reverse_over_reverse():
    x, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    model = _mlp_with(_NoJvpSquare)
    with pytest.raises(hessian.NotTwiceDifferentiableError, match="method='rev-rev'"):
        hessian.HessianOperator(model, "ce", (x, y), method="fwd-rev")
    op = hessian.HessianOperator(model, "ce", (x, y), method="rev-rev")
    v = torch.randn(op.numel)
    torch.testing.assert_close(op.matvec(v).double(), _dense_reference(model, F.cross_entropy,
                                                                        x, y).double() @ v.double(),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", hessian.HVP_METHODS)
def test_a_loss_without_double_backward_names_the_operation(method):
    # F.ctc_loss has a backward but no derivative of it
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    x = torch.randn(5, 3)

    def ctc(out, _):
        lp = out.log_softmax(-1).unsqueeze(1)  # (T=5, batch 1, classes 4)
        return F.ctc_loss(lp, torch.tensor([[1, 2]]), torch.tensor([5]), torch.tensor([2]))

    with pytest.raises(hessian.NotTwiceDifferentiableError, match="ctc_loss") as info:
        hessian.HessianOperator(model, ctc, (x, torch.zeros(5)), method=method)
    assert "PyTorch said" in str(info.value) and isinstance(info.value, RuntimeError)


# ------------------------------------------------------------------------- §3 parameter filters


def _index(model, names):
    idx, i = [], 0
    for n, p in model.named_parameters():
        if n in names:
            idx.extend(range(i, i + p.numel()))
        i += p.numel()
    return torch.tensor(idx)


@pytest.mark.parametrize("pattern", ["blocks.layers.0.self_attn.*", "blocks.layers.0.linear1",
                                     ["head.weight"], ["*.bias", "norm.weight"], "*norm*"])
def test_params_filter_is_the_principal_block_of_the_dense_hessian(vit, pattern):
    model, x, y, dense = vit
    op = hessian.HessianOperator(model, "ce", (x, y), params=pattern)
    idx = _index(model, op.names)
    assert 0 < op.numel == len(idx) < dense.shape[0]
    all_names = [n for n, _ in model.named_parameters()]
    assert op.names == [n for n in all_names if n in op.names]  # in the model's order
    torch.testing.assert_close(op.dense(), dense[idx][:, idx], rtol=1e-9, atol=1e-11)
    top = hessian.top_eigenvalues(model, "ce", (x, y), params=pattern, tol=1e-8, max_iter=300) \
        if op.numel > 2 else None
    if top is not None:
        assert top.eigenvalues[0] == pytest.approx(
            float(torch.linalg.eigvalsh(dense[idx][:, idx])[-1]), rel=1e-5)


def test_params_filter_selects_as_documented():
    model, _, _ = _vit_problem()
    sel = hessian.select_params
    assert sel(model, "head.weight") == ["head.weight"]
    assert sel(model, "head") == ["head.weight", "head.bias"]
    assert sel(model, "*.bias")[-1] == "head.bias" and all(n.endswith("bias")
                                                           for n in sel(model, "*.bias"))
    assert sel(model, ["head.bias", "embed.*"]) == ["embed.weight", "embed.bias", "head.bias"]
    assert sel(model, None) == [n for n, _ in model.named_parameters()]
    with pytest.raises(ValueError, match="'blocks.9.*' selects nothing"):
        sel(model, ["head.weight", "blocks.9.*"])
    with pytest.raises(TypeError, match="params must be"):
        sel(model, [3])


# -------------------------------------------------------------------------- per-layer table


def test_layer_table_rows_are_the_dense_diagonal_blocks(vit):
    model, x, y, dense = vit
    groups = hessian.parameter_groups(model, "module")
    assert "blocks.layers.0.self_attn" in groups and "head" in groups
    table = hessian.layer_table(model, "ce", (x, y), progress=False)
    assert list(table["group"]) == list(groups)
    assert table["exact"].all()  # every block here is below exact_below
    for row in table.itertuples():
        idx = _index(model, groups[row.group])
        block = dense[idx][:, idx]
        assert row.n_params == len(idx)
        assert row.lambda_max == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-9,
                                               abs=1e-12)
        assert row.trace == pytest.approx(float(torch.trace(block)), rel=1e-9, abs=1e-12)
        assert row.mean_curvature == pytest.approx(row.trace / row.n_params)
    # the blocks cover the diagonal, and no block is sharper than the whole (Cauchy interlacing)
    assert table["trace"].sum() == pytest.approx(float(torch.trace(dense)), rel=1e-9)
    assert table["lambda_max"].max() <= float(torch.linalg.eigvalsh(dense)[-1]) + 1e-12
    assert table["n_params"].sum() == dense.shape[0]


def test_layer_table_stochastic_path_agrees_with_the_dense_blocks(vit):
    model, x, y, dense = vit
    spec = {"attention": "blocks.layers.0.self_attn", "mlp": ["*.linear1.*", "*.linear2.*"],
            "head": "head"}
    table = hessian.layer_table(model, "ce", (x, y), groups=spec, exact_below=0, tol=1e-8,
                                max_iter=300, trace_samples=90, progress=False)
    assert list(table["group"]) == list(spec) and not table["exact"].any()
    for row in table.itertuples():
        idx = _index(model, hessian.select_params(model, spec[row.group]))
        block = dense[idx][:, idx]
        assert row.lambda_max == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-5)
        assert abs(row.trace - float(torch.trace(block))) <= 5 * row.trace_stderr + 1e-9
        assert row.n_hvp > 0


def test_layer_table_by_depth_on_a_two_block_transformer():
    model, x, y = _vit_problem(seed=4, layers=2)
    groups = hessian.parameter_groups(model, 3)
    assert list(groups) == ["embed", "blocks.layers.0", "blocks.layers.1", "norm", "head"]
    one = hessian.parameter_groups(model, "parameter", params="head")
    assert one == {"head.weight": ["head.weight"], "head.bias": ["head.bias"]}
    table = hessian.layer_table(model, "ce", (x, y), groups=3, progress=False)
    full = hessian.trace(model, "ce", (x, y), n_samples=300, progress=False)
    assert table.set_index("group").loc["blocks.layers.1", "n_params"] == sum(
        p.numel() for p in model.blocks.layers[1].parameters())
    assert abs(table["trace"].sum() - full.trace) < 5 * full.stderr
    with pytest.raises(ValueError, match="groups must be"):
        hessian.parameter_groups(model, "layer")
    with pytest.raises(ValueError, match="selects no parameter"):
        hessian.parameter_groups(model, {"a": "head"}, params="embed")
    assert math.isfinite(table["lambda_max"].max())


def test_lambda_max_tracker_on_one_block():
    from toolkit import train

    model, x, y = _vit_problem(seed=5)
    tracker = hessian.LambdaMaxTracker("ce", (x, y), tol=1e-8, max_iter=300, params="head")
    hist = train.fit(model, (x, y), epochs=2, lr=0.1, callbacks=[tracker], progress=False)
    model.eval()
    dense = _dense_reference(model, F.cross_entropy, x, y)
    idx = _index(model, ["head.weight", "head.bias"])
    expected = float(torch.linalg.eigvalsh(dense[idx][:, idx])[-1])
    assert hist["lambda_max"].iloc[-1] == pytest.approx(expected, rel=1e-6)
