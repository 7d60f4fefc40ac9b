"""toolkit.hessian.rank: numerical ranks against closed forms (a known low-rank matrix, a linear
model's Hessian = input-covariance rank × outputs, the deep-linear Gauss–Newton rank
q(d + K − q) of arXiv 2106.16225) and the Gauss–Newton part against the full Hessian."""

import pytest
import torch
from torch import nn

from toolkit import models
from toolkit.hessian import rank as hr


def test_numerical_rank_of_a_known_low_rank_matrix():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(30, 4, generator=g, dtype=torch.float64), torch.randn(4, 20, generator=g,
                                                                            dtype=torch.float64)
    r = hr.numerical_rank(u @ v)
    assert int(r) == 4 and r.size == 30
    assert r.tol == pytest.approx(30 * torch.finfo(torch.float64).eps * r.sigma_max)
    assert int(hr.numerical_rank(u @ v, atol=2 * r.sigma_max)) == 0   # tolerance decides
    assert int(hr.numerical_rank(torch.eye(7, dtype=torch.float64))) == 7
    with pytest.raises(ValueError, match="2-D"):
        hr.numerical_rank(torch.ones(3))


@pytest.mark.parametrize("input_rank,n_out", [(3, 2), (6, 4)])
def test_linear_model_hessian_rank_is_input_rank_times_outputs(input_rank, n_out):
    torch.manual_seed(0)
    x = torch.randn(40, input_rank) @ torch.randn(input_rank, 8)      # inputs of rank r in R^8
    y = torch.randn(40, n_out)
    net = nn.Linear(8, n_out, bias=False)
    full = hr.hessian_matrix(net, "mse", (x, y))
    gn = hr.hessian_matrix(net, "mse", (x, y), part="gauss_newton")
    assert torch.allclose(full, gn, atol=1e-10)                        # f is linear in θ
    assert int(hr.numerical_rank(full)) == input_rank * n_out


@pytest.mark.parametrize("width,expected", [(3, 3 * (5 + 4 - 3)), (8, 4 * (5 + 4 - 4)),
                                            (2, 2 * (5 + 4 - 2))])
def test_deep_linear_gauss_newton_rank_closed_form(width, expected):
    torch.manual_seed(1)
    net = models.DeepLinear(5, width, 2, 4)
    x, y = torch.randn(50, 5), torch.randn(50, 4)
    assert hr.linear_gn_rank(5, 4, width) == expected
    assert int(hr.hessian_rank(net, "mse", (x, y), part="gauss_newton")) == expected
    # the full Hessian adds the functional part: strictly larger rank at random targets
    assert int(hr.hessian_rank(net, "mse", (x, y))) > expected


def test_full_hessian_equals_gauss_newton_at_zero_residual():
    torch.manual_seed(2)
    net = models.TinyCNN(2, 3, 2, dim=1, size=6, depth=2, activation="linear")
    x = torch.randn(20, 12, dtype=torch.float64)
    with torch.no_grad():
        y = net.double()(x)                                            # residuals are zero
    full = hr.hessian_matrix(net, "mse", (x, y))
    gn = hr.hessian_matrix(net, "mse", (x, y), part="gauss_newton")
    assert torch.allclose(full, gn, atol=1e-10)
    assert full.dtype == torch.float64 and full.shape[0] == models.count_parameters(net)


def test_gauss_newton_of_cross_entropy_matches_the_full_hessian_of_a_linear_model():
    torch.manual_seed(3)
    net = nn.Linear(4, 3)
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    full = hr.hessian_matrix(net, "ce", (x, y))
    gn = hr.hessian_matrix(net, "ce", (x, y), part="gauss_newton")
    assert torch.allclose(full, gn, atol=1e-10)
    # softmax removes one direction per sample: rank (d + 1)(K − 1) for weights and biases
    assert int(hr.numerical_rank(full)) == 5 * 2
