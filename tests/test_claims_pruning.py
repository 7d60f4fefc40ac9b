"""Negative controls for the claims of notebook 04 (toolkit.claims.pruning).

Every predicate the notebook's self-checks call runs here on the notebook's own toy procedure
(digits MLP 64-128-128-10, 12 epochs; the same one-shot sweep; IMP at the two learning rates), on
seeds 0, 1 and 2, and asserts that it holds; and on a negative control in which the phenomenon is
absent, asserting that it fails. Training is shared per seed (module-scoped cache).
"""

import copy

import numpy as np
import pytest
import torch

import toolkit
from toolkit import claims, data, models, presets, pruning, spectra, train

pytestmark = pytest.mark.control

SEEDS = (0, 1, 2)
PRESET = presets.get_preset("pruning", "toy")
HIDDEN = ["features.1", "features.3"]


@pytest.fixture(scope="module")
def runs():
    """``runs(seed)``: the notebook's §1–§3 quantities for one seed, computed once."""
    cache = {}

    def get(seed):
        if seed not in cache:
            cache[seed] = _run(seed)
        return cache[seed]

    return get


def _run(seed):
    p = PRESET
    toolkit.seed_everything(seed)
    train_set, test_set = data.load(p.dataset, seed=seed)
    in_dim, n_classes = train_set.tensors[0].shape[1], data.n_classes(train_set)
    model = models.MLP(in_dim, p.widths, n_classes)
    init = copy.deepcopy(model)
    hist = train.fit(model, train_set, test=test_set, epochs=p.epochs, batch_size=p.batch_size,
                     lr=p.lr, momentum=p.momentum, seed=seed, progress=False)
    out = {"model": model, "test": test_set, "dense_acc": float(hist["test_acc"].iloc[-1]),
           "report_init": spectra.layer_report(init, seed=seed),
           "report": spectra.layer_report(model, seed=seed),
           "report_shuffled": spectra.layer_report(spectra.shuffle_weights(model, seed=seed),
                                                   seed=seed)}
    out["sweep"] = pruning.sparsity_sweep(model, test_set, amounts=p.amounts, scope=p.scope,
                                          exclude=p.exclude, seed=seed, alphas=False,
                                          progress=False)
    out["random_other_seed"] = pruning.sparsity_sweep(
        model, test_set, methods=["random"], amounts=p.amounts, scope=p.scope, exclude=p.exclude,
        seed=seed + 100, alphas=False, progress=False)
    out["lottery"] = {}
    for lr in p.lottery_lrs:
        def model_fn():
            return models.MLP(in_dim, p.lottery_widths, n_classes)

        def train_fn(net, epochs, lr=lr):
            train.fit(net, train_set, epochs=epochs, batch_size=p.lottery_batch_size, lr=lr,
                      seed=seed, progress=False)
            return train.evaluate(net, test_set)["acc"]

        out["lottery"][lr] = pruning.lottery_ticket(
            model_fn, train_fn, rounds=p.lottery_rounds, rate=p.lottery_rate,
            epochs=p.lottery_epochs, rewind_epoch=p.rewind_epoch, exclude=p.exclude, seed=seed,
            progress=False).history
    return out


# ----------------------------------------------------------------------------- §1 spectra


@pytest.mark.parametrize("seed", SEEDS)
def test_mp_bulk_holds_at_init_and_fails_on_the_trained_net(runs, seed):
    r = runs(seed)
    assert claims.pruning.mp_bulk_at_init(r["report_init"], HIDDEN)
    control = claims.pruning.mp_bulk_at_init(r["report"], HIDDEN)  # trained: spikes escape
    assert not control, control


@pytest.mark.parametrize("seed", SEEDS)
def test_spikes_above_shuffled_holds_after_training_and_fails_untrained_or_shuffled(runs, seed):
    r = runs(seed)
    assert claims.pruning.spikes_above_shuffled(r["report"], HIDDEN)
    assert not claims.pruning.spikes_above_shuffled(r["report_init"], HIDDEN)
    assert not claims.pruning.spikes_above_shuffled(r["report_shuffled"], HIDDEN)


# ----------------------------------------------------------------------------- §2 pruning


@pytest.mark.parametrize("seed", SEEDS)
def test_magnitude_keeps_accuracy_at_half_sparsity_random_does_not(runs, seed):
    r = runs(seed)
    acc = r["sweep"].pivot(index="amount", columns="method", values="acc")
    assert claims.pruning.keeps_accuracy(acc.loc[0.5, "magnitude"], r["dense_acc"])
    assert not claims.pruning.keeps_accuracy(acc.loc[0.5, "random"], r["dense_acc"])


@pytest.mark.parametrize("seed", SEEDS)
def test_random_error_exceeds_magnitude_but_not_random_with_another_seed(runs, seed):
    r = runs(seed)
    err = r["sweep"].pivot(index="amount", columns="method", values="operator")
    other = r["random_other_seed"].set_index("amount")["operator"]
    assert claims.pruning.error_exceeds(err["random"], err["magnitude"])
    control = claims.pruning.error_exceeds(err["random"], other)  # the same method twice
    assert not control, control


@pytest.mark.parametrize("seed", SEEDS)
def test_angle_ranks_methods_within_sparsity_an_error_that_only_tracks_sparsity_does_not(runs,
                                                                                         seed):
    sweep = runs(seed)["sweep"]
    assert claims.pruning.ranks_within_sparsity(sweep, "angle")
    # Control: an "error" that grows with sparsity but is independent of the method within a
    # level. The old pooled check (Spearman < -0.6 over all points) passes on it; the
    # within-sparsity predicate does not.
    rng = np.random.default_rng(seed)
    fake = sweep.assign(fake=sweep["amount"] + 0.01 * rng.random(len(sweep)))
    assert fake["acc"].corr(fake["fake"], method="spearman") < -0.6
    control = claims.pruning.ranks_within_sparsity(fake, "fake")
    assert not control, control


@pytest.mark.parametrize("seed", SEEDS)
def test_l2_sampling_misorders_the_operator_error_magnitude_does_not(runs, seed):
    sweep = runs(seed)["sweep"]
    assert claims.pruning.error_misorders(sweep, "l2_sampling", "random")
    assert not claims.pruning.error_misorders(sweep, "magnitude", "random")


# ---------------------------------------------------------------------- §3 lottery tickets


@pytest.mark.parametrize("seed", SEEDS)
def test_winning_ticket_at_the_small_learning_rate_not_at_the_large_one(runs, seed):
    small, large = (runs(seed)["lottery"][lr] for lr in PRESET.lottery_lrs)
    assert claims.pruning.winning_ticket(small)
    control = claims.pruning.winning_ticket(large)
    assert not control, control


@pytest.mark.parametrize("seed", SEEDS)
def test_advantage_shrinks_with_the_learning_rate_not_between_seeds(runs, seed):
    small_lr, large_lr = PRESET.lottery_lrs
    here = runs(seed)["lottery"]
    assert claims.pruning.advantage_shrinks(here[small_lr], here[large_lr])
    other = runs(SEEDS[(SEEDS.index(seed) + 1) % len(SEEDS)])["lottery"][small_lr]
    control = claims.pruning.advantage_shrinks(here[small_lr], other)  # same rate, another seed
    assert not control, control


# ------------------------------------------------------------------------------- §4 panel


def test_panel_drew_on_the_sparsity_panel_and_fails_on_empty_panels(runs):
    import ipywidgets as widgets

    from toolkit.widgets import pruning as pruning_widgets
    from toolkit.widgets.panel import panel

    r = runs(SEEDS[0])
    real = pruning_widgets.sparsity_panel(r["model"], r["test"], layer=PRESET.panel_layer,
                                          sweep=r["sweep"], scope=PRESET.scope,
                                          exclude=PRESET.exclude, seed=0, sparsity=0.75)
    assert claims.panel_drawn(real, n_axes=3)

    def no_axes(fig, x):
        pass

    def empty_axes(fig, x):
        fig.subplots(1, 3)

    for draw in (no_axes, empty_axes):
        control = panel(draw, x=widgets.IntSlider(value=1, min=0, max=2))
        assert not claims.panel_drawn(control, n_axes=3), draw.__name__


# ------------------------------------------------------- notebook 08: path-norm invariance


@pytest.mark.parametrize("seed", (0, 1, 2))
def test_path_norm_invariant_real_case_and_controls(seed):
    P8 = presets.get_preset("pruning_theory", "toy")
    torch.manual_seed(seed)
    model = models.MLP(64, list(P8.widths), 10)
    first = next(iter(spectra.weight_layers(model)))[0]
    g = torch.Generator().manual_seed(seed)
    r = P8.rescale_range
    scales = 10 ** (2 * r * torch.rand(P8.widths[0], generator=g) - r)
    cb = spectra.PathNormCallback((64,))
    before = cb(0, model, [])
    assert claims.pruning.path_norm_invariant(before, cb(0, spectra.rescale_neurons(
        model, first, scales), []))
    # control 1: not a symmetry -- rows scaled, the next layer's columns left alone
    broken = copy.deepcopy(model)
    layer = dict(spectra.weight_layers(broken))[first]
    with torch.no_grad():
        layer.weight.mul_(scales[:, None])
        layer.bias.mul_(scales)
    assert not claims.pruning.path_norm_invariant(before, cb(0, broken, []))
    # control 2: a symmetric rescaling too mild to move the operator-norm product
    mild = spectra.rescale_neurons(model, first, 1 + 0.01 * torch.rand(P8.widths[0], generator=g))
    assert not claims.pruning.path_norm_invariant(before, cb(0, mild, []))


def test_panel_drawn_on_the_path_norm_panel():
    """Notebook 08's panel: both axes drawn; the norms it shows are the pruned copy's (dense ratio
    1 at sparsity 0, below 1 for the L1 path-norm after magnitude pruning)."""
    from toolkit.widgets import pruning as pruning_widgets

    P8 = presets.get_preset("pruning_theory", "toy")
    train_set, test_set = data.load(P8.dataset, seed=0)
    torch.manual_seed(0)
    model = models.MLP(64, list(P8.widths), 10)
    train.fit(model, train_set, epochs=3, batch_size=P8.batch_size, lr=P8.lr,
              momentum=P8.momentum, progress=False)
    p = pruning_widgets.path_norm_panel(model, train_set, test_set, input_shape=(64,),
                                        sparsity=0.0)
    assert claims.panel_drawn(p, n_axes=2)
    heights = [bar.get_height() for bar in p.figure.axes[0].patches]
    assert np.allclose(heights, 1.0)
    p.controls["sparsity"].value = 0.8
    assert claims.panel_drawn(p, n_axes=2)
    assert p.figure.axes[0].patches[0].get_height() < 1.0


# ------------------------------------------ notebook 08: rewinding vs fine-tuning (Renda et al.)


def _retrain(seed, lr, **kw):
    import functools

    P8 = presets.get_preset("pruning_theory", "toy")
    train_set, test_set = data.load(P8.dataset, seed=seed)
    args = dict(lr=lr, epochs=P8.rt_epochs, rewind_epoch=P8.rt_rewind_epoch, rounds=P8.rt_rounds,
                rate=P8.rt_rate, schedule=P8.rt_schedule, finetune_lr=P8.rt_finetune_factor * lr,
                batch_size=P8.rt_batch_size, exclude=("head",), seed=seed, device="cpu",
                progress=False)
    args.update(kw)
    return pruning.retraining_modes(functools.partial(models.MLP, 64, list(P8.rt_widths), 10),
                                    train_set, test_set, **args)


@pytest.mark.parametrize("seed", SEEDS)
def test_ticket_advantage_vanishes_and_retraining_matches_it_real_case_and_controls(seed):
    P8 = presets.get_preset("pruning_theory", "toy")
    small, large = (_retrain(seed, lr) for lr in P8.rt_lrs)
    assert claims.pruning.ticket_advantage_vanishes(small, large)
    assert claims.pruning.retraining_matches_ticket(large)
    # control 1: both tables at the small rate (another seed's batches and re-init as "large")
    other = _retrain(seed + 10, P8.rt_lrs[0])
    assert not claims.pruning.ticket_advantage_vanishes(small, other)
    # control 2: fine-tuning at the schedule's final rate (0.01 x peak) stays behind the ticket
    final_rate = _retrain(seed, P8.rt_lrs[1], finetune_lr=0.01 * P8.rt_lrs[1],
                          modes=("rewind_0", "finetune"))
    verdict = claims.pruning.retraining_matches_ticket(final_rate, modes=("finetune",))
    assert not verdict, verdict


@pytest.mark.parametrize("seed", SEEDS)
def test_beats_at_every_sparsity_real_case_and_controls(seed):
    P8 = presets.get_preset("pruning_theory", "toy")
    train_set, test_set = data.load(P8.dataset, seed=seed)
    torch.manual_seed(seed)
    model = models.MLP(64, list(P8.widths), 10)
    train.fit(model, train_set, epochs=P8.epochs, batch_size=P8.batch_size, lr=P8.lr,
              momentum=P8.momentum, seed=seed, progress=False)
    sweep = pruning.sparsity_sweep(model, test_set, methods=P8.sp_methods, amounts=P8.sp_amounts,
                                   scope="layer", exclude=("head",), seed=seed, alphas=False,
                                   progress=False)
    assert claims.pruning.beats_at_every_sparsity(sweep, "magnitude", "random", metric="acc",
                                                  higher_is_better=True)
    beats = claims.pruning.beats_at_every_sparsity
    for w, lo, metric, hi in [("l1_sampling", "l2_sampling", "operator", False),
                              ("l1_sampling", "random", "acc", True),
                              ("magnitude", "l1_sampling", "operator", False),
                              ("magnitude", "l1_sampling", "acc", True)]:
        assert beats(sweep, w, lo, metric=metric, higher_is_better=hi)
        assert not beats(sweep, lo, w, metric=metric, higher_is_better=hi)  # control: swapped
    # control: a comparison that is false at high sparsity (random has the lower operator error)
    assert not beats(sweep, "l1_sampling", "random", metric="operator")
