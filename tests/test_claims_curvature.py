"""Negative controls for the claims of notebook 06 (toolkit.claims.curvature).

The rank predicate runs on the notebook's procedure (dense float64 Hessians of linear 1-D
TinyCNNs at initialisation) on three seeds, where it must hold, and on controls where the rank
grows like the parameter count: the count itself, and the ReLU CNN's (full-rank) Hessians.
"""

from functools import cache

import pytest
import torch

from toolkit import claims, hessian, models, presets
from toolkit.widgets import curvature as curvature_widgets

pytestmark = pytest.mark.control

P = presets.get_preset("curvature", "toy")
SEEDS = (0, 1, 2)


@cache
def _ranks(seed: int, activation: str = "linear"):
    g = torch.Generator().manual_seed(seed)
    d_in = P.rank_in_channels * P.rank_size**P.rank_dim
    x = torch.randn(P.rank_samples, d_in, generator=g)
    y = torch.randn(P.rank_samples, P.rank_outputs, generator=g)
    counts, ranks, spectra = [], [], {}
    for c in P.widths[-3:]:
        torch.manual_seed(seed + c)
        net = models.TinyCNN(P.rank_in_channels, c, P.rank_outputs, dim=P.rank_dim,
                             size=P.rank_size, kernel_size=P.rank_kernel, depth=P.rank_depth,
                             readout="pool", activation=activation)
        H = hessian.hessian_matrix(net, "mse", (x, y))
        r = hessian.numerical_rank(H)
        counts.append(models.count_parameters(net))
        ranks.append(r.rank)
        spectra[c] = (torch.linalg.svdvals(H), r.tol)
    return counts, ranks, spectra


@pytest.mark.parametrize("seed", SEEDS)
def test_rank_grows_like_sqrt_real(seed):
    counts, ranks, spectra = _ranks(seed)
    verdict = claims.curvature.rank_grows_like_sqrt(counts, ranks)
    assert verdict, verdict
    # the rank does not hinge on the tolerance: a gap of many decades around τ
    sv, tol = spectra[P.widths[-1]]
    r = ranks[-1]
    assert sv[r - 1] > 1e3 * tol and sv[r] < 1e-3 * tol


def test_rank_fails_when_the_rank_is_the_parameter_count():
    counts, _, _ = _ranks(0)
    verdict = claims.curvature.rank_grows_like_sqrt(counts, counts)
    assert not verdict and verdict["slope"] == pytest.approx(1.0)


def test_rank_fails_for_the_full_rank_relu_cnn():
    counts, ranks, _ = _ranks(0, "relu")
    verdict = claims.curvature.rank_grows_like_sqrt(counts, ranks)
    assert not verdict and verdict["slope"] > 0.9


def test_panel_drawn_on_the_rank_panel():
    import pandas as pd
    counts, ranks, spectra = _ranks(0)
    table = pd.DataFrame({"model": "linear CNN", "channels": list(P.widths[-3:]),
                          "n_params": counts, "rank": ranks})
    p = curvature_widgets.rank_panel(table, spectra)
    from toolkit import claims as C
    assert C.panel_drawn(p, n_axes=2)
    p.controls["channels"].value = P.widths[-3]
    assert p.n_draws == 2 and C.panel_drawn(p, n_axes=2)
    assert p.figure.axes[0].get_title() == f"rank {ranks[0]} of {counts[0]} parameters"
