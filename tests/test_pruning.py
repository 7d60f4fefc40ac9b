"""Tests for toolkit.pruning: exact sparsity, permanence, unbiased element-wise L2 sampling, errors,
spectral errors and the lottery-ticket loop."""

import copy
import math

import numpy as np
import pytest
import torch
from _models import TinyViT
from torch import nn

from toolkit import pruning
from toolkit.pruning import make_permanent, prune, sparsity, spectral_error
from toolkit.spectra import effective_weight


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, 5))


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _zeros(model):
    return {n: int((effective_weight(m) == 0).sum()) for n, m in pruning.prunable_layers(model)}


def _sizes(model):
    return {n: m.weight.numel() for n, m in pruning.prunable_layers(model)}


# ------------------------------------------------------------------------------ exact sparsity


@pytest.mark.parametrize("method", ["magnitude", "random", "l2_sampling"])
@pytest.mark.parametrize("amount", [0.1, 0.5, 0.93])
def test_global_pruning_reaches_exact_sparsity(method, amount):
    model = _mlp()
    prune(model, method=method, amount=amount, scope="global", seed=1)
    n = sum(_sizes(model).values())
    assert sum(_zeros(model).values()) == round(amount * n)
    assert math.isclose(sparsity(model)["global"], round(amount * n) / n)


@pytest.mark.parametrize("method", ["magnitude", "random", "l2_sampling"])
@pytest.mark.parametrize("model_fn", [_mlp, _cnn])
def test_layer_pruning_reaches_exact_sparsity_in_every_layer(method, model_fn):
    model = model_fn()
    prune(model, method=method, amount=0.6, scope="layer", seed=2)
    sizes, zeros = _sizes(model), _zeros(model)
    for name in sizes:
        assert zeros[name] == round(0.6 * sizes[name]), name


def test_magnitude_pruning_removes_the_smallest_weights_globally():
    model = _mlp()
    dense = copy.deepcopy(model)
    prune(model, method="magnitude", amount=0.7)
    pruned, kept = [], []
    for (_, m), (_, d) in zip(pruning.prunable_layers(model), pruning.prunable_layers(dense)):
        mask = m.weight_mask.bool()
        pruned.append(d.weight[~mask].abs())
        kept.append(d.weight[mask].abs())
    assert torch.cat(pruned).max() <= torch.cat(kept).min()


def test_structured_layer_pruning_zeroes_whole_rows_of_smallest_norm():
    model = _cnn()
    dense = copy.deepcopy(model)
    prune(model, method="structured", amount=0.5, scope="layer")
    for (name, m), (_, d) in zip(pruning.prunable_layers(model), pruning.prunable_layers(dense)):
        rows = effective_weight(m).reshape(m.weight.shape[0], -1)
        zero_rows = rows.abs().sum(1) == 0
        assert int(zero_rows.sum()) == round(0.5 * rows.shape[0]), name
        assert bool(((rows == 0).all(1) | (rows != 0).all(1)).all())  # whole rows only
        norms = d.weight.reshape(rows.shape[0], -1).norm(dim=1)
        assert norms[zero_rows].max() <= norms[~zero_rows].min()


def test_structured_global_pruning_is_the_smallest_number_of_rows_reaching_the_target():
    model = _mlp()
    prune(model, method="structured", amount=0.4, scope="global")
    n = sum(_sizes(model).values())
    zeros = sum(_zeros(model).values())
    assert zeros >= round(0.4 * n)
    largest_row = max(m.weight.shape[1] for _, m in pruning.prunable_layers(model))
    assert zeros - largest_row < round(0.4 * n)  # one row fewer would not be enough


def test_pruning_again_continues_from_the_current_mask():
    model = _mlp()
    prune(model, method="magnitude", amount=0.5)
    first = {n: m.weight_mask.clone() for n, m in pruning.prunable_layers(model)}
    prune(model, method="random", amount=0.8, seed=0)
    n = sum(_sizes(model).values())
    assert sum(_zeros(model).values()) == round(0.8 * n)
    for name, m in pruning.prunable_layers(model):
        assert bool((m.weight_mask[first[name] == 0] == 0).all())  # pruned weights stay pruned
    with pytest.raises(ValueError, match="already has sparsity"):
        prune(model, method="magnitude", amount=0.3)


def test_random_pruning_depends_only_on_the_seed():
    masks = []
    for seed in (5, 5, 6):
        model = _mlp()
        prune(model, method="random", amount=0.5, seed=seed)
        masks.append(torch.cat([m.weight_mask.flatten()
                                for _, m in pruning.prunable_layers(model)]))
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], masks[2])


def test_exclude_leaves_layers_dense():
    model = _mlp()
    prune(model, method="magnitude", amount=0.5, exclude=("5",))
    assert not hasattr(model[5], "weight_mask")
    s = sparsity(model, exclude=("5",))
    assert math.isclose(s["global"], round(0.5 * (20 * 32 + 32 * 16)) / (20 * 32 + 32 * 16))


# ---------------------------------------------------------------------------------- permanence


@pytest.mark.parametrize("method", pruning.METHODS)
def test_make_permanent_keeps_outputs(method):
    model = _cnn()
    x = torch.randn(7, 2, 6, 6)
    prune(model, method=method, amount=0.6, seed=0)
    before = model(x)
    make_permanent(model)
    assert torch.allclose(model(x), before, atol=1e-6)
    for _, m in pruning.prunable_layers(model):
        assert isinstance(m.weight, nn.Parameter)
        assert not hasattr(m, "weight_mask") and not m._forward_pre_hooks
    assert math.isclose(sparsity(model)["global"],
                        sum(_zeros(model).values()) / sum(_sizes(model).values()))


# ------------------------------------------------------------------ element-wise L2 sampling


def test_old_method_name_spectral_still_works_with_a_deprecation_warning():
    new, old = _mlp(), _mlp()
    prune(new, method="l2_sampling", amount=0.6, seed=3)
    with pytest.warns(DeprecationWarning, match='method="l2_sampling"'):
        prune(old, method="spectral", amount=0.6, seed=3)
    for (_, a), (_, b) in zip(pruning.prunable_layers(new), pruning.prunable_layers(old)):
        assert torch.equal(effective_weight(a), effective_weight(b))
    assert "spectral" not in pruning.METHODS and "l2_sampling" in pruning.METHODS
    x = torch.randn(8, 20)
    data = torch.utils.data.TensorDataset(x, torch.zeros(8, dtype=torch.long))
    with pytest.warns(DeprecationWarning, match="spectral"):
        sweep = pruning.sparsity_sweep(_mlp(), data, methods=["spectral"], amounts=[0.5],
                                       alphas=False, progress=False)
    assert list(sweep["method"]) == ["l2_sampling"]
    with pytest.raises(ValueError, match="method"):
        prune(_mlp(), method="spectrum", amount=0.5)


def test_inclusion_probabilities_sum_to_budget_and_follow_squared_weights():
    q = torch.tensor([100.0, 4.0, 1.0, 1.0, 0.25, 0.0, 9.0])
    pi = pruning.inclusion_probabilities(q, 3)
    assert math.isclose(float(pi.sum()), 3.0, rel_tol=1e-12)
    assert float(pi.max()) <= 1.0 and float(pi[5]) == 0.0
    assert float(pi[0]) == 1.0  # far above its share: kept for sure
    free = (pi < 1) & (q > 0)   # the others are proportional to q
    ratio = pi[free] / q[free].double()
    assert torch.allclose(ratio, ratio[0].expand_as(ratio))


def test_systematic_sample_has_exact_size_and_inclusion_probabilities():
    g = torch.Generator().manual_seed(0)
    q = torch.rand(12, generator=g) ** 3
    pi = pruning.inclusion_probabilities(q, 5)
    draws = torch.stack([pruning.systematic_sample(pi, g) for _ in range(4000)]).double()
    assert bool((draws.sum(1) == 5).all())
    se = torch.sqrt(pi * (1 - pi) / 4000) + 1e-9
    assert bool(((draws.mean(0) - pi).abs() <= 5 * se + 1e-3).all())


def test_spectral_pruning_is_unbiased():
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(6, 5, bias=False)
    with torch.no_grad():  # magnitudes in [0.3, 1]: every pi is large enough to be estimated
        sign = torch.randint(0, 2, (5, 6), generator=g) * 2 - 1
        layer.weight.copy_(sign * (0.3 + 0.7 * torch.rand(5, 6, generator=g)))
    w = layer.weight.detach().clone().double()
    draws = []
    for seed in range(1500):
        m = copy.deepcopy(layer)
        prune(m, method="l2_sampling", amount=0.6, seed=seed)
        assert int((m.weight == 0).sum()) == round(0.6 * 30)
        draws.append(effective_weight(m).double())
    draws = torch.stack(draws)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    # E[W_s] = W entrywise (without the 1/pi rescaling the mean would be pi * W instead)
    assert bool(((mean - w).abs() <= 5 * se + 1e-9).all())
    # and the rescaled survivors are w / pi: never smaller than the original entries
    kept = draws != 0
    assert bool((draws.abs()[kept] >= w.abs().expand_as(draws)[kept] - 1e-7).all())


def test_spectral_pruning_preserves_spectrum_better_than_random_at_same_sparsity():
    # low-rank-plus-noise "trained" layer: the top singular value and subspace survive importance
    # sampling but are shrunk by uniform random pruning (E[W_random] = (1 - s) W)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(80, 3, generator=g) @ torch.randn(3, 60, generator=g) / 3
    w += 0.05 * torch.randn(80, 60, generator=g)
    errors = {}
    for method in ("l2_sampling", "random"):
        layer = nn.Linear(60, 80, bias=False)
        with torch.no_grad():
            layer.weight.copy_(w)
        prune(layer, method=method, amount=0.7, seed=0)
        errors[method] = spectral_error(w, effective_weight(layer), k=3)
    assert errors["l2_sampling"]["sv_drift_max"] < errors["random"]["sv_drift_max"]
    assert errors["l2_sampling"]["operator"] < errors["random"]["operator"]


# --------------------------------------------------------------------------------- errors


def test_spectral_error_closed_forms():
    w = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    same = spectral_error(w, w.clone(), k=2)
    assert same["operator"] == 0 and same["sv_drift"] == 0 and same["angle"] < 1e-5
    drop_small = spectral_error(w, torch.diag(torch.tensor([3.0, 2.0, 0.0])), k=2)
    assert math.isclose(drop_small["operator"], 1 / 3, rel_tol=1e-12)
    assert math.isclose(drop_small["sv_drift"], 1 / math.sqrt(14), rel_tol=1e-12)
    assert drop_small["angle"] < 1e-5  # top-2 subspace untouched
    drop_middle = spectral_error(w, torch.diag(torch.tensor([3.0, 0.0, 1.0])), k=2)
    assert math.isclose(drop_middle["operator"], 2 / 3, rel_tol=1e-12)
    assert math.isclose(drop_middle["angle"], 90.0, abs_tol=1e-6)  # e2 replaced by e3


def test_spectral_error_inequalities_and_magnitude_optimality():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(40, 30, generator=g)
    errs = {}
    for method in ("magnitude", "random", "l2_sampling"):
        layer = nn.Linear(30, 40, bias=False)
        with torch.no_grad():
            layer.weight.copy_(w)
        prune(layer, method=method, amount=0.5, seed=0)
        e = spectral_error(w, effective_weight(layer))
        assert e["sv_drift_max"] <= e["operator"] + 1e-12  # Weyl
        assert e["sv_drift"] <= e["frobenius"] + 1e-12     # Mirsky
        errs[method] = e
    # zeroing the smallest entries minimises the Frobenius error among masks of that size
    assert errs["magnitude"]["frobenius"] <= errs["random"]["frobenius"]


def test_spectral_errors_per_layer_and_sweep():
    model = _mlp()
    pruned = prune(copy.deepcopy(model), method="magnitude", amount=0.5, scope="layer")
    table = pruning.spectral_errors(model, pruned)
    assert list(table["name"]) == [n for n, _ in pruning.prunable_layers(model)]
    assert np.allclose(table["sparsity"], 0.5, atol=0.01)
    x, y = torch.randn(40, 20), torch.randint(0, 5, (40,))
    sweep = pruning.sparsity_sweep(model, (x, y), methods=("magnitude", "random"),
                                   amounts=(0.0, 0.5), progress=False)
    assert len(sweep) == 4 and {"acc", "operator", "alpha:1"} <= set(sweep.columns)
    dense_acc = float((model(x).argmax(1) == y).float().mean())
    assert np.allclose(sweep.loc[sweep["amount"] == 0, "acc"], dense_acc)
    assert np.allclose(sweep.loc[sweep["amount"] == 0, "operator"], 0)


def test_bad_arguments_raise_clear_errors():
    model = _mlp()
    for amount in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="amount must be in"):
            prune(model, amount=amount)
    with pytest.raises(TypeError, match="amount"):
        prune(model, amount="half")
    with pytest.raises(ValueError, match="method must be one of"):
        prune(model, method="lottery", amount=0.5)
    with pytest.raises(ValueError, match="scope must be one of"):
        prune(model, amount=0.5, scope="row")
    with pytest.raises(ValueError, match="no prunable layers"):
        prune(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), amount=0.5)
    with pytest.raises(TypeError):
        prune("model", amount=0.5)
    with pytest.raises(ValueError, match="same shape"):
        spectral_error(torch.ones(3, 2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="k must be"):
        spectral_error(torch.ones(3, 2), torch.ones(3, 2), k=3)


# ----------------------------------------------------------------------------- lottery tickets


def test_lottery_ticket_schedule_rewinding_and_control():
    x = torch.randn(64, 20, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    starts = []  # effective weights of the first layer at the start of each training call

    def model_fn():
        return _mlp(seed=torch.initial_seed())

    def train_fn(model, epochs):
        starts.append((effective_weight(model[1]).clone(), epochs))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(epochs):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return {"acc": float((model(x).argmax(1) == y).float().mean())}

    result = pruning.lottery_ticket(model_fn, train_fn, rounds=3, rate=0.2, rewind_epoch=1,
                                    epochs=4, progress=False)
    hist = result.history
    assert list(hist["round"]) == [0, 1, 2, 3]
    assert np.allclose(hist["sparsity"], [0, 0.2, 0.36, 0.488], atol=2e-3)
    assert {"ticket_acc", "control_acc"} <= set(hist.columns)
    # calls: dense warm-up (1 epoch), dense rest (3), then ticket + control per round (3 each)
    assert [e for _, e in starts] == [1, 3] + [3, 3] * 3
    theta_k = starts[1][0]  # the rewinding point: weights after epoch 1
    for r in range(3):
        ticket_start, control_start = starts[2 + 2 * r][0], starts[3 + 2 * r][0]
        alive = ticket_start != 0
        assert torch.equal(ticket_start[alive], theta_k[alive])   # survivors rewound to theta_k
        assert torch.equal(control_start != 0, alive)             # same mask ...
        assert not torch.allclose(control_start[alive], theta_k[alive])  # ... fresh weights
    masks = list(result.masks.values())
    total = sum(int(m.sum()) for m in masks)
    assert total == round((1 - 0.488) * sum(m.numel() for m in masks))


def test_lottery_ticket_rejects_bad_arguments():
    def train_fn(model, epochs):
        return 0.0

    with pytest.raises(ValueError, match="rate"):
        pruning.lottery_ticket(_mlp, train_fn, rounds=2, rate=1.2, epochs=2)
    with pytest.raises(ValueError, match="rewind_epoch"):
        pruning.lottery_ticket(_mlp, train_fn, rounds=2, rewind_epoch=3, epochs=2)
    with pytest.raises(ValueError, match="rounds"):
        pruning.lottery_ticket(_mlp, train_fn, rounds=0, epochs=2)


# ------------------------------------------------------------------------------------- figures


def test_pruning_figures_and_headless_panel():
    from toolkit.plotting import pruning as pruning_plots
    from toolkit.widgets.pruning import sparsity_panel

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))
    x, y = torch.randn(60, 20), torch.randint(0, 5, (60,))
    sweep = pruning.sparsity_sweep(model, (x, y), amounts=(0.0, 0.5), progress=False)
    assert len(pruning_plots.pruning_curves(sweep).axes) == 2
    assert len(pruning_plots.alpha_curves(sweep).axes) == 2
    panel = sparsity_panel(model, (x, y), layer="0", sweep=sweep, sparsity=0.5)
    assert panel.n_draws == 1 and len(panel.figure.axes) == 3
    star = [ln for ln in panel.figure.axes[2].get_lines() if ln.get_label() == "this model"][0]
    assert math.isclose(float(star.get_xdata()[0]), 0.5, abs_tol=1e-3)  # the pruned copy's sparsity
    panel.controls["method"].value = "random"  # moving a control redraws
    assert panel.n_draws == 2
    with pytest.raises(ValueError, match="layer"):
        sparsity_panel(model, (x, y), layer="nope")


def test_figures_say_what_they_leave_out_and_lottery_panels_share_y():
    import pandas as pd

    from toolkit.plotting import pruning as pruning_plots

    sweep = pd.DataFrame({"method": ["magnitude"] * 3, "sparsity": [0.0, 0.5, 0.9],
                          "acc": [0.9, 0.85, 0.5], "operator": [0.0, 0.2, 0.7]})
    fig = pruning_plots.pruning_curves(sweep)
    notes = [t.get_text() for t in fig.axes[1].texts]
    assert any("not drawn" in t for t in notes)  # the zero error is masked on the log axis, said so
    hist = pd.DataFrame({"round": [0, 1], "sparsity": [0.0, 0.5], "ticket": [0.9, 0.88],
                         "control": [float("nan"), 0.8]})
    hist_high = hist.assign(ticket=[0.97, 0.96], control=[float("nan"), 0.95])
    fig = pruning_plots.lottery_plot({"a": hist, "b": hist_high})
    a, b = fig.axes
    assert a.get_shared_y_axes().joined(a, b) and a.get_ylim() == b.get_ylim()


def test_retraining_modes_lineages_budgets_and_masks():
    """Every mode retrains T-k epochs per round at the IMP sparsity; the ticket, its re-initialised
    control and the rewound nets share sparsity; two modes that are the same procedure agree."""
    import functools

    from toolkit import data, models

    train_set, test_set = data.load("digits", seed=0)
    fn = functools.partial(models.MLP, 64, [16], 10)
    table = pruning.retraining_modes(fn, train_set, test_set, lr=0.1, epochs=3, rewind_epoch=1,
                                     rounds=2, rate=0.5, batch_size=128, exclude=("head",),
                                     device="cpu", progress=False)
    assert set(table["mode"]) == {"dense", *pruning.RETRAIN_MODES}
    pruned = table[table["round"] > 0]
    assert (pruned["epochs"] == 2).all()
    for r, grp in pruned.groupby("round"):
        assert np.allclose(grp["sparsity"], 1 - 0.5 ** r, atol=0.01)
    # without a schedule and with finetune_lr = lr, fine-tuning and LR rewinding are the same
    # procedure (same weights, rates, batches): identical nets; rewinding to theta_0 is not
    same = pruning.retraining_modes(fn, train_set, test_set, lr=0.1, epochs=2, rewind_epoch=0,
                                    rounds=2, rate=0.5, schedule=None, finetune_lr=0.1,
                                    batch_size=128, exclude=("head",), device="cpu",
                                    progress=False, modes=("finetune", "lr_rewind", "rewind_0"))
    for _, grp in same[same["round"] > 0].groupby("round"):
        acc = grp.set_index("mode")[["train_acc", "test_acc"]]
        assert (acc.loc["finetune"] == acc.loc["lr_rewind"]).all()
        assert (acc.loc["finetune"] != acc.loc["rewind_0"]).any()
    with pytest.raises(ValueError, match="reinit"):
        pruning.retraining_modes(fn, train_set, test_set, lr=0.1, epochs=2, rewind_epoch=0,
                                 rounds=1, modes=("reinit",))


def test_l1_sampling_is_unbiased_keeps_large_entries_and_exact_sparsity():
    torch.manual_seed(0)
    w = torch.randn(20, 30)
    w[0, :5] = 50.0  # large entries: kept with certainty, unscaled
    means = torch.zeros_like(w)
    for s in range(300):
        layer = nn.Linear(30, 20, bias=False)
        with torch.no_grad():
            layer.weight.copy_(w)
        prune(layer, method="l1_sampling", amount=0.7, seed=s)
        ws = effective_weight(layer).detach()
        assert int((ws == 0).sum()) == round(0.7 * w.numel())
        assert torch.allclose(ws[0, :5], w[0, :5])
        means += ws / 300
    assert float((means - w).abs().mean()) < 0.15 * float(w.abs().mean())


# ------------------------------------------------------------ attention (issue 17)


_TinyViT = TinyViT


_ATTN = [f"encoder.layers.{i}.self_attn.{b}" for i in range(2) for b in ("q", "k", "v")]


def _masked_reference(pruned):
    """A fresh copy of the architecture holding the weights the pruned model should apply."""
    ref = _TinyViT()
    state = {}
    for key, value in pruned.state_dict().items():
        if key.endswith("_mask"):
            continue
        if key.endswith("_orig"):
            key = key[:-5]
            value = value * pruned.state_dict()[key + "_mask"]
        state[key] = value
    ref.load_state_dict(state)
    return ref.eval()


@pytest.mark.parametrize("method", ["magnitude", "random", "l2_sampling", "structured"])
def test_attention_projections_are_pruned_at_requested_sparsity(method):
    model = _TinyViT().eval()
    prune(model, method=method, amount=0.5, scope="layer", seed=0)
    mha = model.encoder.layers[0].self_attn
    assert hasattr(mha, "in_proj_weight_mask") and hasattr(mha, "in_proj_weight_orig")
    s = sparsity(model)
    for name in _ATTN:  # 8 x 8 blocks of in_proj_weight: 32 zeros each (4 of 8 rows if structured)
        assert s[name] == 0.5, (name, s[name])
        block = {"q": 0, "k": 1, "v": 2}[name[-1]]
        w = effective_weight(mha if name.startswith("encoder.layers.0") else
                             model.encoder.layers[1].self_attn, "in_proj_weight")
        assert int((w[8 * block:8 * block + 8] == 0).sum()) == 32
    assert s["encoder.layers.0.self_attn.out_proj"] == 0.5
    n = {m.name: m.weight().numel() for m in pruning.prunable_matrices(model)}
    zeros = sum(s[k] * v for k, v in n.items())
    assert math.isclose(s["global"], zeros / sum(n.values()))
    assert len(n) == 1 + 2 * (3 + 1 + 2) + 1  # embed, per layer q k v out_proj linear1 linear2, head


def test_global_pruning_pools_attention_with_the_other_layers():
    model = _TinyViT()
    prune(model, method="magnitude", amount=0.6)
    mats = pruning.prunable_matrices(model)
    total = sum(m.weight().numel() for m in mats)
    zeros = sum(int((m.weight() == 0).sum()) for m in mats)
    assert zeros == round(0.6 * total)
    # global magnitude: every pruned entry is no larger than every kept one, across q/k/v too
    dense = _TinyViT()
    kept, pruned_vals = [], []
    for m, d in zip(mats, pruning.prunable_matrices(dense)):
        w = d.weight()
        kept.append(w[m.weight() != 0].abs())
        pruned_vals.append(w[m.weight() == 0].abs())
    assert float(torch.cat(pruned_vals).max()) <= float(torch.cat(kept).min())
    assert any(int((m.weight() == 0).sum()) for m in mats if m.name in _ATTN)


def test_pruned_attention_outputs_follow_the_masked_weights_through_training():
    torch.manual_seed(1)
    x = torch.randn(6, 5, 4)
    model = _TinyViT().eval()
    y_dense = model(x).detach()
    prune(model, method="random", amount=0.5, scope="layer", seed=0, exclude=("embed", "head"))
    y = model(x)
    assert (y - y_dense).abs().max() > 1e-3  # the masks act
    assert torch.allclose(y, _masked_reference(model)(x), atol=1e-6)
    # masked q/k/v rows do not affect the output; the kept ones do
    mha = model.encoder.layers[0].self_attn
    mask = mha.in_proj_weight_mask
    with torch.no_grad():
        mha.in_proj_weight_orig.add_(5.0 * (mask == 0))
    assert torch.allclose(model(x), y, atol=1e-6)
    # training: masked entries get no gradient, and after optimiser steps (weight_orig changed
    # in place) attention and out_proj use the current masked weights (out_proj.weight is read
    # by attention without calling out_proj: the refresh hook)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().sum().backward()
        assert float(mha.in_proj_weight_orig.grad[mask == 0].abs().max()) == 0.0
        opt.step()
    model.eval()
    ref = _masked_reference(model)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5)
    assert torch.allclose(model(x), ref(x), atol=1e-5)
    out = model(x).detach()
    make_permanent(model)
    assert not hasattr(mha, "in_proj_weight_mask") and not mha._forward_pre_hooks
    assert isinstance(mha.in_proj_weight, nn.Parameter)
    assert torch.allclose(model(x), out, atol=1e-6)
    assert sparsity(model)["encoder.layers.0.self_attn.q"] == 0.5


def test_spectral_errors_and_lottery_masks_cover_qkv():
    dense = _TinyViT()
    pruned = prune(_TinyViT(), method="magnitude", amount=0.5, scope="layer")
    table = pruning.spectral_errors(dense, pruned, k=2)
    assert set(_ATTN) <= set(table["name"])
    row = table.set_index("name").loc["encoder.layers.1.self_attn.v"]
    w = dense.encoder.layers[1].self_attn.in_proj_weight.detach()[16:24].double()
    ws = effective_weight(pruned.encoder.layers[1].self_attn, "in_proj_weight")[16:24].double()
    assert math.isclose(row["operator"], float(torch.linalg.matrix_norm(w - ws, 2)
                                               / torch.linalg.matrix_norm(w, 2)), rel_tol=1e-9)
    assert row["sparsity"] == 0.5
    fresh = _TinyViT(seed=3)
    pruning._copy_masks(pruned, fresh, ())
    for a, b in zip(pruning.prunable_matrices(pruned), pruning.prunable_matrices(fresh)):
        assert torch.equal(a.weight() == 0, b.weight() == 0), a.name


def test_attention_with_separate_kdim_vdim_projections():
    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True)

        def forward(self, q, k, v):
            return self.attn(q, k, v)[0]

    torch.manual_seed(0)
    model = Cross()
    names = [m.name for m in pruning.prunable_matrices(model)]
    assert names == ["attn.q", "attn.k", "attn.v", "attn.out_proj"]
    prune(model, amount=0.25, scope="layer")
    s = sparsity(model)
    assert all(s[n] == 0.25 for n in names)
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 4, 6), torch.randn(2, 4, 5)
    ref = Cross()
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("_orig"):
            state[key[:-5]] = value * model.state_dict()[key[:-5] + "_mask"]
        elif not key.endswith("_mask"):
            state[key] = value
    ref.load_state_dict(state)
    assert torch.allclose(model(q, k, v), ref(q, k, v), atol=1e-6)


def test_skipped_weight_tensors_are_named_in_one_warning():
    import warnings

    from toolkit.spectra import SkippedParametersWarning, layer_report

    class WithEmbedding(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(10, 6)
            self.pos = nn.Parameter(torch.randn(1, 4, 6))
            self.norm = nn.LayerNorm(6)
            self.fc = nn.Linear(6, 30)

        def forward(self, i):
            return self.fc(self.norm(self.tok(i) + self.pos))

    model = WithEmbedding()
    for call in (lambda: prune(model, amount=0.5), lambda: sparsity(model),
                 lambda: pruning.spectral_errors(WithEmbedding(), model, k=1),
                 lambda: layer_report(model, randomize=False)):
        with pytest.warns(SkippedParametersWarning, match=r"2 weight tensor\(s\).*: pos, tok\.weight\."):
            call()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedParametersWarning)
        prune(_TinyViT(), amount=0.3)  # every matrix covered; biases and norms are not matrices
        layer_report(_TinyViT(), randomize=False)
