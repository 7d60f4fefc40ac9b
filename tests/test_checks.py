"""The shared argument checks (toolkit._checks): each refuses what it should, with a message that
names the argument, and passes good input through (converted where it says so)."""

import numpy as np
import pytest
import torch
from torch import nn

from toolkit import _checks


def test_choice_and_numbers():
    assert _checks.check_choice("a", "mode", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"mode must be one of \['a', 'b'\], got 'c'"):
        _checks.check_choice("c", "mode", ("a", "b"))
    assert _checks.check_positive_int(np.int64(3), "epochs") == 3
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(ValueError, match="epochs must be a positive integer"):
            _checks.check_positive_int(bad, "epochs")
    assert _checks.check_positive_int(0, "k", allow_zero=True) == 0
    assert _checks.check_positive(0.5, "lr") == 0.5
    for bad in (0, -1e-3, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            _checks.check_positive(bad, "lr")
    assert _checks.check_fraction(0.0, "amount") == 0.0
    with pytest.raises(ValueError, match=r"amount must be a number in \[0, 1\)"):
        _checks.check_fraction(1.0, "amount")
    assert _checks.check_fraction(1.0, "amount", closed=True) == 1.0


def test_tensors():
    arr = np.zeros((3, 2), dtype=np.float32)
    t = _checks.as_tensor(arr, "x")
    assert isinstance(t, torch.Tensor) and t.data_ptr() == arr.__array_interface__["data"][0]
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor or a NumPy array, got list"):
        _checks.as_tensor([1, 2], "x")
    ref = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x has dtype torch.float32 .* convert it with x.to"):
        _checks.check_tensor(torch.zeros(3, 2), "x", like=ref)
    with pytest.raises(ValueError, match="x must be 2-D"):
        _checks.check_tensor(torch.zeros(3), "x", ndim=2)
    with pytest.raises(ValueError, match="x is empty"):
        _checks.check_tensor(torch.zeros(0, 2), "x")
    with pytest.raises(TypeError, match="x must be floating point"):
        _checks.check_tensor(torch.zeros(3, dtype=torch.long), "x", floating=True)
    bad = torch.tensor([1.0, float("nan"), float("inf")])
    with pytest.raises(ValueError, match="x has 2 non-finite values"):
        _checks.check_tensor(bad, "x", finite=True)
    good = torch.ones(4, 2, dtype=torch.float64)
    assert _checks.check_tensor(good, "x", ndim=2, floating=True, like=ref, finite=True) is good


def test_labels():
    y = _checks.check_labels(np.array([0, 2, 1], dtype=np.int32), 3, 3)
    assert y.dtype == torch.long
    with pytest.raises(TypeError, match="integer class indices"):
        _checks.check_labels(torch.tensor([0.0, 1.0]), 2, 2)
    with pytest.raises(ValueError, match="mismatched lengths"):
        _checks.check_labels(torch.tensor([0, 1]), 3, 2)
    with pytest.raises(ValueError, match=r"expected values in \[0, 2\) but found min 0, max 2"):
        _checks.check_labels(torch.tensor([0, 2]), 2, 2)


def test_eval_mode_check_names_the_layers():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Dropout(0.5), nn.Dropout(0.0))
    with pytest.raises(ValueError, match=r"1 \(BatchNorm1d\), 2 \(Dropout\); .*so the kernel is "
                                         r"undefined\. Call model.eval\(\)"):
        _checks.check_eval_mode(model, "the kernel is undefined")
    model.eval()
    assert _checks.check_eval_mode(model, "x") is model
    # dropout with p=0 is deterministic, so it is allowed in training mode
    assert _checks.check_eval_mode(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0)), "x")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        _checks.check_eval_mode("not a model", "x")
