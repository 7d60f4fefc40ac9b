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
    (dict(widths=[8], parameterization="mup"), "parameterization"),
])
def test_mlp_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.MLP(4, out_dim=2, **kwargs)


def test_build_unknown_model():
    with pytest.raises(ValueError, match="mlp"):
        models.build("vgg")
