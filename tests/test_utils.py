"""Shared helpers in toolkit.utils: the eval-mode guard, input capture and the log-log slope."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from toolkit import utils


def test_eval_mode_restores_every_submodule_also_on_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.BatchNorm1d(2))
    model.train()
    model[2].eval()  # a model may mix modes: restore each as it was
    with utils.eval_mode(model) as m:
        assert m is model and not any(x.training for x in model.modules())
    assert model.training and model[1].training and not model[2].training
    with pytest.raises(RuntimeError), utils.eval_mode(model):
        raise RuntimeError("boom")
    assert model.training and model[1].training and not model[2].training


def test_input_capture_sees_the_head_input_and_removes_its_hooks():
    torch.manual_seed(0)
    features, head = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU()), nn.Linear(4, 3)
    model = nn.Sequential(features, head)
    x = torch.randn(5, 2, 3)
    with utils.InputCapture({"h": head}) as cap:
        model(x)
        h = cap.pop("h")
        with pytest.raises(ValueError, match="'h' was not called"):
            cap.pop("h")
    torch.testing.assert_close(h, features(x))
    assert not head._forward_pre_hooks


def test_loglog_slope_recovers_a_power_law():
    x = np.array([64, 128, 256, 512])
    assert math.isclose(utils.loglog_slope(x, 3.0 * x ** -0.5), -0.5, rel_tol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        utils.loglog_slope([1, 2], [1, 0])
    with pytest.raises(ValueError, match="same length"):
        utils.loglog_slope([1, 2, 3], [1, 2])


def test_progress_honours_enabled_and_tqdm_disable(monkeypatch, capsys):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert utils.progress_enabled() and not utils.progress_enabled(False)
    assert list(utils.progress(range(3), enabled=False)) == [0, 1, 2]
    bar = utils.progress(range(3), desc="shown")
    assert not bar.disable
    bar.close()
    for value, silenced in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert utils.progress_enabled() is not silenced
    monkeypatch.setenv("TQDM_DISABLE", "1")
    capsys.readouterr()
    assert sum(utils.progress(range(5), desc="quiet")) == 10
    with utils.progress(total=4, desc="quiet too") as bar:
        bar.update(4)
    assert "quiet" not in capsys.readouterr().err


def test_every_toolkit_bar_goes_through_the_progress_helper():
    """tqdm is imported only by utils: every bar honours progress=False and TQDM_DISABLE=1."""
    from pathlib import Path

    import toolkit

    root = Path(toolkit.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "tqdm" in p.read_text() and p.name != "utils.py"]
    assert offenders == []
