import math

import pytest
import torch

from toolkit import models


def test_mlp_parameter_count():
    m = models.MLP(10, [20, 30], 5)
    assert models.count_parameters(m) == (10 * 20 + 20) + (20 * 30 + 30) + (30 * 5 + 5)
    m = models.MLP(10, [20], 5, bias=False)
    assert models.count_parameters(m) == 10 * 20 + 20 * 5


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_output_variance_at_init_matches_nngp(parameterization):
    """One hidden ReLU layer, σ_w²=2, σ_b=0: Var f(x) = σ_w² · E[relu(z)²] = σ_w² · q/2 · σ_w²/... .

    With inputs of squared norm d, the first pre-activation has variance q = σ_w²·|x|²/d = 2, the
    ReLU halves it (E relu(z)² = q/2 = 1), and the readout multiplies by σ_w² = 2: Var f = 2.
    """
    d, width, n_nets = 16, 256, 800
    x = torch.ones(1, d)
    outs = torch.stack([models.MLP(d, [width], 1, parameterization=parameterization)(x).squeeze()
                        for _ in range(n_nets)])
    # standard error of a variance estimate from n Gaussian samples ≈ var·sqrt(2/n) ≈ 0.1
    assert abs(outs.var().item() - 2.0) < 0.35
    assert abs(outs.mean().item()) < 0.2


def test_ntk_parameterization_scales():
    m = models.MLP(16, [64], 3, parameterization="ntk", sigma_w=1.5, sigma_b=0.3)
    first = m.features[1]
    assert isinstance(first, models.NTKLinear) and isinstance(first, torch.nn.Linear)
    assert math.isclose(first.weight_scale, 1.5 / 4) and first.bias_scale == 0.3
    assert abs(first.weight.std().item() - 1.0) < 0.1  # raw weights are unit Gaussians
    x = torch.randn(4, 16)
    z = first(x)
    assert torch.allclose(z, x @ (1.5 / 4 * first.weight).T + 0.3 * first.bias, atol=1e-6)


def test_features_head_split_for_every_model():
    cases = [(models.MLP(64, [32], 10), torch.randn(3, 64)),
             (models.SmallCNN(), torch.randn(3, 64)),
             (models.ResNetMini(64, 16, 2), torch.randn(3, 64)),
             (models.DeepLinear(64, 16, 3, 10), torch.randn(3, 64)),
             (models.ResNet18(width=8), torch.randn(2, 3, 32, 32))]
    for model, x in cases:
        model.eval()
        assert torch.allclose(model(x), model.head(models.penultimate(model, x)), atol=1e-6)
        assert isinstance(model.head, torch.nn.Linear)


def test_resnet18_parameter_count_matches_reference():
    """CIFAR ResNet-18 with width 64 has 11,173,962 parameters (the usual figure)."""
    assert models.count_parameters(models.ResNet18()) == 11_173_962


def test_skip_flag_changes_the_function():
    torch.manual_seed(0)
    a = models.ResNetMini(8, 8, 2, 3, skip=True)
    b = models.ResNetMini(8, 8, 2, 3, skip=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 8)
    assert not torch.allclose(a(x), b(x))


def test_deep_linear_is_linear():
    m = models.DeepLinear(6, 10, 4, 3)
    x1, x2 = torch.randn(2, 6), torch.randn(2, 6)
    assert torch.allclose(m(2 * x1 - x2), 2 * m(x1) - m(x2), atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(widths=[]), "widths is empty"),
    (dict(widths=[8], activation="swish"), "activation"),
    (dict(widths=[8], parameterization="mu-p"), "parameterization"),
    (dict(widths=[8], parameterization="mup", norm="batch"), "mup"),
    (dict(widths=[8], parameterization="mup", base_width=0), "base_width"),
])
def test_mlp_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.MLP(4, out_dim=2, **kwargs)


def test_build_unknown_model():
    with pytest.raises(ValueError, match="mlp"):
        models.build("vgg")


# ------------------------------------------------------------------------- MLP(norm="batch")
def test_batch_norm_mlp_has_bn_after_every_hidden_linear():
    m = models.MLP(5, [8, 6], 3, norm="batch")
    kinds = [type(layer).__name__ for layer in m.features]
    assert kinds == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU"]
    assert [layer.num_features for layer in m.features if isinstance(layer, torch.nn.BatchNorm1d)
            ] == [8, 6]
    assert isinstance(m.head, torch.nn.Linear) and m.norm == "batch"


def test_batch_norm_mlp_has_the_parameters_of_the_old_bn_mlp():
    # collapse.bn_mlp (removed) was Linear -> BatchNorm1d -> ReLU per hidden layer, then the head:
    # weights and biases of every Linear plus a scale and a shift per BN channel
    m = models.MLP(5, [8, 8], 3, norm="batch")
    expected = (5 * 8 + 8 + 2 * 8) + (8 * 8 + 8 + 2 * 8) + (8 * 3 + 3)
    assert models.count_parameters(m) == expected
    assert sorted(m.state_dict()) == sorted([
        "features.1.weight", "features.1.bias", "features.2.weight", "features.2.bias",
        "features.2.running_mean", "features.2.running_var", "features.2.num_batches_tracked",
        "features.4.weight", "features.4.bias", "features.5.weight", "features.5.bias",
        "features.5.running_mean", "features.5.running_var", "features.5.num_batches_tracked",
        "head.weight", "head.bias"])


def test_batch_norm_mlp_train_mode_uses_the_batch_eval_mode_the_running_statistics():
    torch.manual_seed(0)
    m = models.MLP(4, [16], 2, norm="batch")
    x = torch.randn(32, 4) * 3 + 1
    m.train()
    full = m(x)
    # training mode: each output depends on the other samples of the batch
    assert not torch.allclose(full[:4], m(x[:4]))
    bn = m.features[2]
    assert int(bn.num_batches_tracked) == 2 and not torch.allclose(bn.running_mean,
                                                                   torch.zeros(16))
    m.eval()
    # eval mode: a per-sample function, normalised by the stored statistics
    assert torch.allclose(m(x)[:4], m(x[:4]), atol=1e-6)
    h = m.features[1](x[:4])
    expected = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(m.features[:3](x[:4]), expected, atol=1e-5)


def test_norm_none_keeps_the_plain_mlp_bit_identical():
    torch.manual_seed(3)
    plain = models.MLP(6, [10, 7], 4)
    torch.manual_seed(3)
    explicit = models.MLP(6, [10, 7], 4, norm=None)
    assert plain.state_dict().keys() == explicit.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                 explicit.state_dict().values()))
    assert not any(isinstance(layer, torch.nn.BatchNorm1d) for layer in explicit.modules())


def test_unknown_norm_is_refused():
    with pytest.raises(ValueError, match="norm must be one of"):
        models.MLP(4, [8], 2, norm="layer")


# ------------------------------------------------------------------------------ MLP(parameterization="mup")


def test_mup_scales_follow_the_width_multipliers():
    n0, d, k = 16, 8, 3
    for n in (16, 64, 256):
        m = n / n0
        net = models.MLP(d, [n, 2 * n], k, parameterization="mup", base_width=n0, sigma_w=1.0,
                         sigma_b=0.5)
        first, hidden, head = net.features[1], net.features[3], net.head
        assert all(isinstance(layer, models.MuPLinear) for layer in (first, hidden, head))
        assert math.isclose(first.weight_scale, math.sqrt(m))  # input: step eta*m
        assert math.isclose(hidden.weight_scale, math.sqrt(2))  # hidden: m_out/m_in = 2
        assert math.isclose(head.weight_scale, 1 / math.sqrt(2 * m))  # readout: step eta/m
        assert math.isclose(first.bias_scale, math.sqrt(m)) and head.bias_scale == 1.0
        # effective init: SP variance 1/fan_in except the readout, 1/(fan_in * m_in)
        assert abs(first.effective_weight().std().item() * math.sqrt(d) - 1) < 0.15
        assert abs(hidden.effective_weight().std().item() * math.sqrt(n) - 1) < 0.1
        assert abs(head.effective_weight().std().item() * math.sqrt(2 * n * 2 * m) - 1) < 0.3
        assert abs(first.effective_bias().std().item() - 0.5) < 0.15


def test_mup_at_the_base_width_is_the_standard_parameterisation():
    torch.manual_seed(0)
    net = models.MLP(5, [16, 16], 2, parameterization="mup", base_width=16)
    for layer in (net.features[1], net.features[3], net.head):
        assert layer.weight_scale == 1.0 and layer.bias_scale == 1.0


def test_standard_and_ntk_mlps_unchanged_by_the_mup_option():
    # the new base_width argument must not touch the other parameterisations' random draws
    for par in ("standard", "ntk"):
        torch.manual_seed(3)
        a = models.MLP(4, [8, 8], 2, parameterization=par)
        torch.manual_seed(3)
        b = models.MLP(4, [8, 8], 2, parameterization=par, base_width=999)
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)


def _mup_reference(mup, d, width, k, depth):
    from torch import nn

    layers = [nn.Linear(d, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, mup.MuReadout(width, k)).double()


@pytest.mark.parametrize("depth", [1, 3])
def test_mup_matches_the_mup_package_step_for_step(depth):
    """Same effective weights, three SGD steps with one learning rate: our multipliers give the
    same network as mup.MuSGD's per-layer rates with mup.MuReadout (Yang et al. 2022)."""
    mup = pytest.importorskip("mup", reason="the `mup` package (dev extra) is not installed")
    d, n, k, n0 = 6, 128, 3, 32
    torch.manual_seed(0)
    ours = models.MLP(d, [n] * depth, k, parameterization="mup", base_width=n0,
                      sigma_b=0.5).double()
    ref = _mup_reference(mup, d, n, k, depth)
    mup.set_base_shapes(ref, _mup_reference(mup, d, n0, k, depth))
    ours_lin = [m for m in ours.modules() if isinstance(m, models.MuPLinear)]
    ref_lin = [m for m in ref.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for a, b in zip(ours_lin, ref_lin, strict=True):
            mult = b.width_mult() if isinstance(b, mup.MuReadout) else 1.0
            b.weight.copy_(a.effective_weight() * mult)
            b.bias.copy_(a.effective_bias())
    x, y = torch.randn(32, d, dtype=torch.float64), torch.randn(32, k, dtype=torch.float64)
    opts = [torch.optim.SGD(ours.parameters(), lr=0.3), mup.MuSGD(ref.parameters(), lr=0.3)]
    for _ in range(3):
        for net, opt in zip((ours, ref), opts):
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            opt.step()
    assert torch.allclose(ours(x), ref(x), atol=1e-10)
    assert (ours(x) - ref(x)).abs().max() < 1e-10 < (ours(x)).abs().max()


def test_mup_init_scales_match_the_mup_package_in_width():
    """The per-layer effective initial scales follow the same power of the width as mup's
    (SP init rescaled by set_base_shapes, MuReadout's 1/width_mult): slopes agree within 0.1."""
    mup = pytest.importorskip("mup", reason="the `mup` package (dev extra) is not installed")
    from toolkit.utils import loglog_slope

    d, k, n0, widths = 6, 3, 32, (64, 256, 1024)
    ours, ref = [], []
    for n in widths:
        torch.manual_seed(0)
        net = models.MLP(d, [n, n], k, parameterization="mup", base_width=n0)
        ours.append([float(m.effective_weight().detach().std()) for m in net.modules()
                     if isinstance(m, models.MuPLinear)])
        r = _mup_reference(mup, d, n, k, 2).float()
        mup.set_base_shapes(r, _mup_reference(mup, d, n0, k, 2))
        lin = [m for m in r.modules() if isinstance(m, torch.nn.Linear)]
        ref.append([float(m.weight.detach().std()) / (m.width_mult() if isinstance(m, mup.MuReadout)
                                             else 1.0) for m in lin])
    for layer in range(3):
        s_ours = loglog_slope(widths, [row[layer] for row in ours])
        s_ref = loglog_slope(widths, [row[layer] for row in ref])
        assert abs(s_ours - s_ref) < 0.1, (layer, s_ours, s_ref)
    assert abs(loglog_slope(widths, [row[2] for row in ours]) + 1.0) < 0.1  # readout std ∝ 1/n


def test_tiny_cnn_shapes_and_linearity():
    import torch as _torch

    from toolkit.models import TinyCNN, count_parameters
    for dim, readout in ((1, "flatten"), (2, "pool")):
        net = TinyCNN(2, 3, 4, dim=dim, size=5, depth=2, kernel_size=3, readout=readout)
        x = _torch.randn(6, 2 * 5**dim)
        assert net(x).shape == (6, 4)
        head_in = 3 * (5**dim if readout == "flatten" else 1)
        assert count_parameters(net) == 3**dim * (2 * 3 + 3 * 3) + head_in * 4
        assert _torch.allclose(net(2 * x - x[:1]), 2 * net(x) - net(x[:1]), atol=1e-5)
    with pytest.raises(ValueError, match="readout"):
        TinyCNN(readout="max")


def test_scaled_linear_layers_share_one_rule_for_what_they_apply():
    # NTKLinear and MuPLinear apply weight_scale * weight and bias_scale * bias (ScaledLinear), and
    # applied_weights reads that back for any Linear layer
    torch.manual_seed(0)
    x = torch.randn(5, 16)
    layers = [models.NTKLinear(16, 8, sigma_b=0.5),
              models.MuPLinear(16, 8, in_infinite=True, out_infinite=True, base_width=4, sigma_b=0.5),
              torch.nn.Linear(16, 8)]
    for layer in layers:
        w, b = models.applied_weights(layer)
        torch.testing.assert_close(layer(x), x @ w.T + b)
        assert not w.requires_grad
    w, b = models.applied_weights(torch.nn.Linear(16, 8, bias=False))
    assert b is None and w.shape == (8, 16)
