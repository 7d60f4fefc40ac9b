"""Negative controls for the claims of notebook 05 (toolkit.claims.features).

Each predicate runs on the notebook's procedure at toy size on three seeds (it must hold) and on a
control in which the phenomenon is absent: the NTK or the standard parameterisation's measurements
passed in place of μP's (it must fail).
"""

from functools import cache

import pandas as pd
import pytest
import torch

from toolkit import claims, data, feature_learning, models, ntk, presets, train
from toolkit.widgets import features as features_widgets

pytestmark = pytest.mark.control

P = presets.get_preset("feature_learning", "toy")
SEEDS = (0, 1, 2)


@cache
def _coordinate_check(seed: int, par: str):
    train_set, _ = data.teacher_regression(n_samples=2 * P.coord_points, dim=8, seed=seed)
    x = train_set.tensors[0][: P.coord_points]
    lr = P.coord_ntk_lr if par == "ntk" else P.lr
    table: dict[str, list[float]] = {}
    for width in P.widths:
        mean: dict[str, float] = {}
        for s in (0, 1):  # two inits per width (the notebook averages four)
            torch.manual_seed(10 * seed + s)
            net = models.MLP(8, [width] * P.coord_depth, 1, parameterization=par,
                             base_width=P.coord_base_width)
            before = feature_learning.preactivations(net, x)
            train.fit(net, train_set, loss="mse", lr=lr, epochs=P.epochs, progress=False,
                      metrics=("loss",))
            for layer, v in feature_learning.rms_change(
                    before, feature_learning.preactivations(net, x)).items():
                mean[layer] = mean.get(layer, 0.0) + v / 2
        for layer, v in mean.items():
            if layer != "head":
                table.setdefault(layer, []).append(v)
    return table


@pytest.mark.parametrize("seed", SEEDS)
def test_coordinate_check_real(seed):
    verdict = claims.features.coordinate_check(
        P.widths, _coordinate_check(seed, "mup"), _coordinate_check(seed, "standard"),
        _coordinate_check(seed, "ntk"))
    assert verdict, verdict


@pytest.mark.parametrize("impostor", ["ntk", "standard"])
def test_coordinate_check_fails_without_mup(impostor):
    # the NTK (features vanish) or SP (features blow up) measured in place of μP
    verdict = claims.features.coordinate_check(
        P.widths, _coordinate_check(0, impostor), _coordinate_check(0, "standard"),
        _coordinate_check(0, "ntk"))
    assert not verdict and verdict["mup_max_abs_slope"] > 0.3


@cache
def _lr_grid(seed: int, par: str):
    train_set, _ = data.gaussian_mixture(n_samples=P.lrt_samples, n_classes=P.lrt_classes,
                                         dim=P.lrt_dim, separation=1.5, seed=seed)
    lrs = [2.0**k for k in P.lrt_log2_lrs]
    losses = []
    for width in P.lrt_widths:
        row = []
        for lr in lrs:
            torch.manual_seed(seed)
            net = models.MLP(P.lrt_dim, [width] * P.lrt_depth, P.lrt_classes,
                             parameterization=par, base_width=P.base_width)
            h = train.fit(net, train_set, lr=lr, epochs=P.lrt_epochs, batch_size=P.lrt_batch,
                          seed=seed, progress=False, metrics=("loss",), on_nonfinite="stop")
            row.append(h["train_loss"].iloc[-1])
        losses.append(row)
    return lrs, losses


@pytest.mark.parametrize("seed", SEEDS)
def test_lr_transfer_real(seed):
    lrs, mup = _lr_grid(seed, "mup")
    verdict = claims.features.lr_transfer(P.lrt_widths, lrs, mup, _lr_grid(seed, "standard")[1])
    assert verdict, verdict


def test_lr_transfer_fails_when_the_optimum_drifts():
    # the standard parameterisation's grid in place of μP's: its optimum moves two octaves
    lrs, sp = _lr_grid(0, "standard")
    verdict = claims.features.lr_transfer(P.lrt_widths, lrs, sp, sp)
    assert not verdict and abs(verdict["mup_shift"]) >= 2


def test_lr_transfer_fails_when_nothing_drifts():
    lrs, mup = _lr_grid(0, "mup")
    assert not claims.features.lr_transfer(P.lrt_widths, lrs, mup, mup)


@cache
def _drifts(seed: int, par: str):
    train_set, _ = data.teacher_regression(n_samples=2 * P.coord_points, dim=8, seed=seed)
    x = train_set.tensors[0][: P.drift_points]
    out = []
    for width in P.drift_widths:
        torch.manual_seed(seed)
        net = models.MLP(8, [width] * P.drift_depth, 1, parameterization=par,
                         base_width=P.base_width)
        cb = ntk.KernelDrift(x)
        h = train.fit(net, train_set, loss="mse", epochs=P.drift_epochs,
                      lr=P.drift_mup_lr if par == "mup" else P.drift_ntk_lr, progress=False,
                      metrics=("loss",), callbacks=[cb], callback_every=P.drift_epochs)
        out.append(h["kernel_drift"].dropna().iloc[-1])
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_drift_stays_order_one_real(seed):
    verdict = claims.features.drift_stays_order_one(P.drift_widths, _drifts(seed, "mup"),
                                                    _drifts(seed, "ntk"))
    assert verdict, verdict


def test_drift_fails_for_the_ntk_parameterisation():
    ntk_drift = _drifts(0, "ntk")
    verdict = claims.features.drift_stays_order_one(P.drift_widths, ntk_drift, ntk_drift)
    assert not verdict and verdict["mup_slope"] < -0.4


def test_rms_change_and_preactivations():
    net = models.MLP(3, [5, 7], 2)
    x = torch.randn(4, 3)
    h = feature_learning.preactivations(net, x)
    assert list(h) == ["features.1", "features.3", "head"]
    assert torch.allclose(h["head"], net(x).detach())
    shifted = {k: v + 2.0 for k, v in h.items()}
    assert all(abs(v - 2.0) < 1e-6 for v in feature_learning.rms_change(h, shifted).values())
    with pytest.raises(ValueError, match="different layers"):
        feature_learning.rms_change(h, {"head": h["head"]})


# ------------------------------------------------------------------------- the panel (notebook 05)
def _grid_table(seed: int = 0):
    lrs, mup = _lr_grid(seed, "mup")
    _, sp = _lr_grid(seed, "standard")
    return pd.DataFrame([{"parameterization": par, "width": w, "lr": lr, "loss": losses[i][j]}
                         for par, losses in (("mup", mup), ("standard", sp))
                         for i, w in enumerate(P.lrt_widths) for j, lr in enumerate(lrs)])


def test_panel_drawn_on_the_transfer_panel():
    """Notebook 05's panel on the real grid: both axes drawn, also after the slider moves, and the
    titles report the shifts the lr_transfer claim measures (μP ≤ 1 octave, SP ≥ 2)."""
    table = _grid_table(0)
    p = features_widgets.transfer_panel(table)
    assert claims.panel_drawn(p, n_axes=2)
    titles = [ax.get_title() for ax in p.figure.axes]
    verdict = claims.features.lr_transfer(P.lrt_widths, *_lr_grid(0, "mup"),
                                          _lr_grid(0, "standard")[1])
    assert titles == [f"mup: best rate moved {verdict['mup_shift']:+.0f} octave(s)",
                      f"standard: best rate moved {verdict['standard_shift']:+.0f} octave(s)"]
    p.controls["width"].value = P.lrt_widths[0]
    assert p.n_draws == 2 and claims.panel_drawn(p, n_axes=2)
    assert all("moved +0" in ax.get_title() for ax in p.figure.axes)
    with pytest.raises(ValueError, match="lacks the columns"):
        features_widgets.transfer_panel(table.drop(columns="loss"))
