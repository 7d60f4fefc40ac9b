"""toolkit.pruning_bounds against closed forms, dense computations on tiny models, and each other."""

import copy
import math

import pytest
import torch
from torch import nn

from toolkit import models, pruning
from toolkit import pruning_bounds as pb


def _linear_classifier():
    # f(x) = W x + b with hand-picked W, b: margins are computable by hand
    model = nn.Sequential(nn.Linear(2, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, 0.5, 0.0]))
    return model


def test_margins_of_a_hand_built_linear_classifier():
    model = _linear_classifier()
    x = torch.tensor([[2.0, 0.0], [0.0, 0.0], [-1.0, -1.0]])
    y = torch.tensor([0, 0, 2])
    # logits: [2, .5, -2], [0, .5, 0], [-1, -.5, 2]
    expected = torch.tensor([2.0 - 0.5, 0.0 - 0.5, 2.0 - (-0.5)], dtype=torch.float64)
    torch.testing.assert_close(pb.margins(model, x, y), expected)
    m = pb.margins(model, x, y)
    assert pb.margin_loss(m, 0.0) == pytest.approx(1 / 3)      # the misclassified point
    assert pb.margin_loss(m, 1.5) == pytest.approx(2 / 3)      # margin 1.5 counts (<=)
    assert pb.margin_loss(m, 10.0) == 1.0


def test_margins_validate_labels():
    with pytest.raises(ValueError, match="out of range"):
        pb.margins(_linear_classifier(), torch.zeros(2, 2), torch.tensor([0, 3]))


def _mlp(seed=0, widths=(12, 9)):
    torch.manual_seed(seed)
    return models.MLP(7, list(widths), 4, sigma_b=0.3)


def test_layer_table_matches_matrix_norms_and_counts():
    dense = _mlp()
    pruned = pruning.prune(copy.deepcopy(dense), method="magnitude", amount=0.6, scope="layer")
    table = pb.layer_table(dense, pruned).set_index("name")
    for name, module in pruning.prunable_layers(dense):
        w = module.weight.detach().double()
        ws = dict(pruning.prunable_layers(pruned))[name]
        ws = (ws.weight_orig * ws.weight_mask).detach().double()
        row = table.loc[name]
        assert row["params"] == w.numel() and (row["rows"], row["cols"]) == tuple(w.shape)
        assert row["nnz"] == int((ws != 0).sum()) == w.numel() - round(0.6 * w.numel())
        assert row["op_error"] == pytest.approx(float(torch.linalg.matrix_norm(w - ws, ord=2)))
        assert row["op_norm"] == pytest.approx(float(torch.linalg.svdvals(w)[0]))
        assert row["sketch_dim"] == pb.sketch_dimension(int(row["nnz"]), tuple(w.shape))


def test_sketch_dimension_closed_form_and_monotone():
    assert pb.sketch_dimension(100, (50, 20)) == math.ceil(10 * math.log(50))
    assert pb.sketch_dimension(100, (50, 20), c=0.5) == math.ceil(5 * math.log(50))
    assert pb.sketch_dimension(0, (5, 5)) == 0
    dims = [pb.sketch_dimension(k, (64, 64)) for k in (1, 10, 100, 1000, 4096)]
    assert dims == sorted(dims)
    with pytest.raises(ValueError, match="exceeds"):
        pb.sketch_dimension(26, (5, 5))


def test_description_lengths_closed_forms():
    dense = _mlp()
    pruned = pruning.prune(copy.deepcopy(dense), method="random", amount=0.9, scope="layer",
                           seed=0)
    table = pb.layer_table(dense, pruned)
    lengths = pb.description_lengths(table, bits=8)
    n, nnz = table["params"].tolist(), table["nnz"].tolist()
    assert lengths["q_dense"] == sum(n) == sum(p.numel() for name, p in dense.named_parameters()
                                                if name.endswith("weight"))
    assert lengths["q_sparse"] == sum(nnz)
    assert lengths["dense"] == pytest.approx(sum(n) * 8 * math.log(2))
    support = sum(math.log(math.comb(a, b)) for a, b in zip(n, nnz))
    assert lengths["sparse"] == pytest.approx(sum(nnz) * 8 * math.log(2) + support)
    m = table["sketch_dim"].tolist()
    assert lengths["q_sketch"] == sum(min(k * k, a) for k, a in zip(m, n))
    # unpruned: the sparse code (values + an empty choice of positions) equals the dense one
    full = pb.description_lengths(pb.layer_table(dense, copy.deepcopy(dense)))
    assert full["sparse"] == pytest.approx(full["dense"]) and full["sketch"] == full["dense"]


def test_sketch_count_beats_dense_only_at_high_sparsity():
    # m^2 ≈ nnz ln^2 p < p^2 needs sparsity > 1 - 1/ln^2 p
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(400, 400))
    q = {}
    for amount in (0.5, 0.9, 0.99):
        pruned = pruning.prune(copy.deepcopy(dense), method="magnitude", amount=amount)
        q[amount] = pb.description_lengths(pb.layer_table(dense, pruned))["q_sketch"]
    assert q[0.5] == q[0.9] == 400 * 400 > q[0.99]


def test_output_deviation_is_the_largest_logit_change():
    dense = _mlp()
    pruned = pruning.prune(copy.deepcopy(dense), method="magnitude", amount=0.5, scope="layer")
    x = torch.randn(20, 7)
    with torch.no_grad():
        expected = (dense(x) - pruned(x)).abs().amax(1).double()
    torch.testing.assert_close(pb.output_deviation(dense, pruned, x), expected)


def test_perturbation_bound_covers_deviation_and_is_tight_for_one_layer():
    for seed in range(3):
        dense = _mlp(seed)
        for method in ("magnitude", "random"):
            pruned = pruning.prune(copy.deepcopy(dense), method=method, amount=0.7,
                                   scope="layer", seed=seed)
            x = torch.randn(50, 7)
            with torch.no_grad():
                l2 = (dense(x) - pruned(x)).double().norm(dim=1)
            assert bool((pb.perturbation_bound(dense, pruned, x) >= l2 - 1e-9).all())
    # one linear layer, no bias: the bound is ||E||_2 ||x||, attained at E's top right singular
    # vector
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(6, 5, bias=False))
    pruned = pruning.prune(copy.deepcopy(dense), method="random", amount=0.5, seed=0)
    e = (dense[0].weight - pruned[0].weight_orig * pruned[0].weight_mask).detach().double()
    v = torch.linalg.svd(e).Vh[0].float()[None]
    bound = pb.perturbation_bound(dense, pruned, 3 * v)
    with torch.no_grad():
        actual = (dense(3 * v) - pruned(3 * v)).double().norm()
    assert float(bound) == pytest.approx(float(actual), rel=1e-5)
    assert float(bound) == pytest.approx(3 * float(torch.linalg.matrix_norm(e, ord=2)), rel=1e-5)


def test_perturbation_bound_refuses_non_chains():
    model = models.MLP(7, [8], 3, norm="batch").eval()
    with pytest.raises(ValueError, match="chain"):
        pb.perturbation_bound(model, copy.deepcopy(model), torch.randn(4, 7))


def test_compression_bound_terms_and_monotone_in_m():
    margins = torch.tensor([3.0, 1.0, 0.2, -1.0], dtype=torch.float64)
    out = pb.compression_bound(margins, 0.5, 10.0, delta=0.1)
    assert out["margin_loss"] == pytest.approx(3 / 4)  # margins <= 2 * 0.5
    assert out["complexity"] == pytest.approx(math.sqrt((10 + math.log(10)) / 8))
    assert out["bound"] == pytest.approx(out["margin_loss"] + out["complexity"])
    # pointwise deviations: each point against twice its own deviation
    pointwise = pb.compression_bound(margins, torch.tensor([2.0, 0.0, 0.0, 0.0]), 10.0)
    assert pointwise["margin_loss"] == pytest.approx(2 / 4)
    # more training points (same margins repeated) -> smaller complexity, same margin term
    terms = [pb.compression_bound(margins.repeat(k), 0.5, 10.0)["complexity"] for k in (1, 4, 16)]
    assert terms[0] > terms[1] > terms[2] and terms[0] / terms[1] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="one value per training point"):
        pb.compression_bound(margins, torch.zeros(3), 1.0)


def test_bound_table_margin_term_dominates_the_pruned_training_error():
    torch.manual_seed(0)
    x, y = torch.randn(60, 7), torch.randint(0, 4, (60,))
    dense = _mlp()
    for amount in (0.0, 0.5, 0.9):
        pruned = pruning.prune(copy.deepcopy(dense), method="magnitude", amount=amount,
                               scope="layer", exclude=("head",))
        for deviation in pb.DEVIATIONS:
            table = pb.bound_table(dense, pruned, (x, y), exclude=("head",), deviation=deviation)
            assert list(table["encoding"]) == list(pb.ENCODINGS)
            assert (table["margin_loss"] >= table["train_error"] - 1e-12).all()
        measured = pb.bound_table(dense, pruned, (x, y), exclude=("head",))
        uniform = pb.bound_table(dense, pruned, (x, y), exclude=("head",), deviation="uniform")
        norms = pb.bound_table(dense, pruned, (x, y), exclude=("head",), deviation="norms")
        assert (measured["margin_loss"] <= uniform["margin_loss"]).all()
        assert (measured["margin_loss"] <= norms["margin_loss"]).all()
        q = measured.set_index("encoding")["q"]
        assert q["sketch"] <= q["dense"] and q["sparse"] <= q["dense"]
