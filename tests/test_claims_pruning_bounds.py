"""Negative controls for the claims of notebook 11 (toolkit.claims.pruning_bounds).

Each predicate runs on the notebook's toy procedure (digits MLP 64-128-128-10, 30 epochs, one-shot
magnitude and random pruning of the hidden layers at the preset's sparsities) on seeds 0, 1 and 2,
where it must hold, and on a control where the phenomenon is absent, where it must fail: a net
trained on shuffled labels, an untrained net, a sketch constant so large that no sketch is smaller
than its matrix.
"""

import copy
from functools import cache

import pandas as pd
import pytest
import torch

import toolkit
import toolkit.claims.pruning_bounds  # noqa: F401  (registers claims.pruning_bounds)
from toolkit import claims, data, models, presets, pruning, pruning_bounds, train

pytestmark = pytest.mark.control

P = presets.get_preset("pruning_bounds", "toy")
SEEDS = (0, 1, 2)


@cache
def _model(seed: int, labels: str = "real", epochs: int | None = None):
    toolkit.seed_everything(seed)
    train_set, test_set = data.load(P.dataset, seed=seed)
    if labels == "shuffled":
        x, y = train_set.tensors
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        train_set = torch.utils.data.TensorDataset(x, y[perm])
    torch.manual_seed(seed)
    model = models.MLP(train_set.tensors[0].shape[1], list(P.widths), data.n_classes(test_set))
    epochs = P.epochs if epochs is None else epochs
    if epochs:
        train.fit(model, train_set, epochs=epochs, batch_size=P.batch_size, lr=P.lr,
                  momentum=P.momentum, seed=seed, progress=False)
    return model, train_set, test_set


@cache
def _sweep(seed: int, labels: str = "real", epochs: int | None = None, c: float = P.sketch_c):
    """The notebook's §1 sweep (measured deviations only; the claims read those)."""
    model, train_set, test_set = _model(seed, labels, epochs)
    rows = []
    for method in P.methods:
        for amount in P.amounts:
            pruned = pruning.prune(copy.deepcopy(model), method=method, amount=amount,
                                   scope="layer", exclude=("head",), seed=seed)
            test_err = 1 - train.evaluate(pruned, test_set)["acc"]
            table = pruning_bounds.bound_table(model, pruned, train_set, exclude=("head",), c=c,
                                               bits=P.bits, delta=P.delta)
            rows.append(table.assign(method=method, amount=amount, deviation="measured",
                                     test_err=test_err))
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_approximation_tracks_test_error_real(seed):
    verdict = claims.pruning_bounds.approximation_tracks_test_error(_sweep(seed))
    assert verdict, verdict


@pytest.mark.parametrize("seed", SEEDS)
def test_approximation_tracks_test_error_fails_on_shuffled_labels(seed):
    # memorised noise: the test error stays near chance however hard we prune
    verdict = claims.pruning_bounds.approximation_tracks_test_error(_sweep(seed, "shuffled"))
    assert not verdict, verdict


def test_approximation_tracks_test_error_fails_untrained():
    verdict = claims.pruning_bounds.approximation_tracks_test_error(_sweep(0, epochs=0))
    assert not verdict, verdict


@pytest.mark.parametrize("seed", SEEDS)
def test_ranks_methods_like_test_error_real(seed):
    verdict = claims.pruning_bounds.ranks_methods_like_test_error(_sweep(seed))
    assert verdict, verdict
    assert verdict["reversed"] == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_ranks_methods_like_test_error_fails_untrained(seed):
    # at initialisation magnitude and random pruning are equally bad: nothing to rank
    verdict = claims.pruning_bounds.ranks_methods_like_test_error(_sweep(seed, epochs=0))
    assert not verdict, verdict


@pytest.mark.parametrize("seed", SEEDS)
def test_sketch_below_dense_real(seed):
    verdict = claims.pruning_bounds.sketch_below_dense(_sweep(seed))
    assert verdict, verdict
    assert verdict["wins_from"] >= 0.95  # only at very high sparsity, as 1 - 1/ln^2(128) says
    assert verdict["sparse_over_sketch"] < 1  # and it never beats listing the non-zeros


def test_sketch_below_dense_fails_with_a_large_sketch_constant():
    verdict = claims.pruning_bounds.sketch_below_dense(_sweep(0, c=3.0))
    assert not verdict, verdict


def test_claims_refuse_a_wrong_table():
    with pytest.raises(ValueError, match="sweep"):
        claims.pruning_bounds.sketch_below_dense(pd.DataFrame({"amount": [0.5]}))
