"""Negative controls for the claims of notebook 04 (toolkit.claims.pruning).

Every predicate the notebook's self-checks call runs here on the notebook's own toy procedure
(digits MLP 64-128-128-10, 12 epochs; the same one-shot sweep; IMP at the two learning rates), on
seeds 0, 1 and 2, and asserts that it holds; and on a negative control in which the phenomenon is
absent, asserting that it fails. Training is shared per seed (module-scoped cache).
"""

import copy

import numpy as np
import pytest

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
