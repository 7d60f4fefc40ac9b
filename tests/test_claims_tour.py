"""Negative controls for the claims of notebook 00 (toolkit.claims.tour).

The tour's self-checks run on the notebook's own training (toy preset) on seeds 0, 1, 2, and on
controls in which nothing is learned: an untrained net, shuffled labels, a step too small to move,
and panels that draw nothing.
"""

import pytest
import torch
from torch.utils.data import TensorDataset

from toolkit import claims, data, models, presets, train
from toolkit.widgets import tour
from toolkit.widgets.panel import panel

pytestmark = pytest.mark.control

P = presets.get_preset("tour", "toy")
SEEDS = (0, 1, 2)


def _fit(seed, *, epochs=P.epochs, lr=P.lr, shuffle_labels=False):
    train_set, test_set = data.load(P.dataset, seed=seed)
    if shuffle_labels:
        x, y = train_set.tensors
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        train_set = TensorDataset(x, y[perm])
    torch.manual_seed(seed)
    model = models.MLP(train_set.tensors[0].shape[1], P.widths, data.n_classes(train_set))
    return train.fit(model, train_set, test=test_set, epochs=epochs, batch_size=P.batch_size,
                     lr=lr, momentum=P.momentum, device="cpu", seed=seed, progress=False)


@pytest.fixture(scope="module", params=SEEDS)
def history(request):
    return _fit(request.param)


def test_accuracy_reached_real(history):
    verdict = claims.tour.accuracy_reached(history)
    assert verdict, verdict


def test_loss_fell_real(history):
    verdict = claims.tour.loss_fell(history)
    assert verdict, verdict


def test_accuracy_fails_untrained():
    verdict = claims.tour.accuracy_reached(_fit(0, epochs=0))
    assert not verdict and verdict["test_acc"] < 0.3


def test_accuracy_fails_on_shuffled_labels():
    history = _fit(0, shuffle_labels=True)
    verdict = claims.tour.accuracy_reached(history)
    assert not verdict and verdict["test_acc"] < 0.3
    # the net starts to memorise the shuffled labels, but within 30 epochs its loss falls ~3x only
    fell = claims.tour.loss_fell(history)
    assert not fell and fell["drop"] > 1.5


def test_loss_fell_fails_for_a_step_too_small():
    verdict = claims.tour.loss_fell(_fit(0, lr=1e-5))
    assert not verdict and verdict["drop"] < 2


def test_loss_fell_fails_untrained():
    assert not claims.tour.loss_fell(_fit(0, epochs=0))


# ------------------------------------------------------------------------------------ panels


def _slider():
    import ipywidgets as widgets
    return widgets.IntSlider(value=1, min=1, max=3, description="k")


def test_panel_drawn_real():
    train_set, test_set = data.load(P.dataset, seed=0)
    verdict = claims.panel_drawn(
        tour.training_panel(train_set, test_set, epochs=2, seed=0), n_axes=2)
    assert verdict, verdict


def test_panel_drawn_fails_for_a_panel_that_draws_nothing():
    verdict = claims.panel_drawn(panel(lambda fig, k: None, k=_slider()), n_axes=2)
    assert not verdict and verdict["axes"] == 0


def test_panel_drawn_fails_for_empty_axes():
    verdict = claims.panel_drawn(panel(lambda fig, k: fig.subplots(1, 2), k=_slider()),
                                      n_axes=2)
    assert not verdict and verdict["empty_axes"] == 2


def test_panel_drawn_fails_for_the_wrong_layout():
    def one_axis(fig, k):
        fig.subplots().plot([0, k])
    assert not claims.panel_drawn(panel(one_axis, k=_slider()), n_axes=2)


def test_a_panel_whose_draw_raises_never_exists():
    def broken(fig, k):
        raise RuntimeError("broken draw")
    with pytest.raises(RuntimeError, match="broken draw"):
        panel(broken, k=_slider())
