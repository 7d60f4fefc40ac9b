import ipywidgets as widgets
import pytest

from toolkit.widgets import panel


def _draw(fig, slope):
    ax = fig.subplots()
    ax.plot([0, 1], [0, slope])
    ax.set_ylim(-5, 5)


def test_panel_redraws_on_slider_change():
    slider = widgets.FloatSlider(value=1.0, min=-3, max=3)
    p = panel(_draw, slope=slider)
    first = p.png()
    assert p.n_draws == 1 and slider.description == "slope"
    assert slider.continuous_update is False
    slider.value = -2.0
    assert p.n_draws == 2
    line = p.figure.axes[0].lines[0]
    assert list(line.get_ydata()) == [0, -2.0]
    assert p.png() != first


def test_panel_bundle_has_widget_and_static_png():
    p = panel(_draw, slope=widgets.FloatSlider(value=1.0))
    bundle = p._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "image/png" in bundle


def test_panel_errors():
    with pytest.raises(ValueError, match="at least one control"):
        panel(_draw)
    with pytest.raises(TypeError, match="slope"):
        panel(_draw, slope=3)


# Old names of figures and panels that moved (kept one release): each warns, naming the new place,
# and is the very object the new place holds.
_MOVED = [
    ("toolkit.plotting.base", "training_panel", "toolkit.widgets.tour", "training_panel"),
    ("toolkit.plotting.landscape", "surface_panel", "toolkit.widgets.landscape", "surface_panel"),
    ("toolkit.plotting.spectra", "sparsity_panel", "toolkit.widgets.pruning", "sparsity_panel"),
    ("toolkit.plotting.landscape", "esd", "toolkit.plotting.hessian", "hessian_density"),
    *[("toolkit.plotting.landscape", n, "toolkit.plotting.hessian", n)
      for n in ("top_eigenvalue_gaps", "lambda_max_curve", "class_curvature")],
    *[("toolkit.plotting.spectra", n, "toolkit.plotting.pruning", n)
      for n in ("singular_values_plot", "pruning_curves", "alpha_curves", "lottery_plot")],
]


@pytest.mark.parametrize(("old_module", "old", "new_module", "new"), _MOVED,
                         ids=[f"{m.rsplit('.', 1)[1]}.{o}" for m, o, _, _ in _MOVED])
def test_moved_names_warn_and_resolve_to_the_new_place(old_module, old, new_module, new):
    import importlib

    with pytest.warns(DeprecationWarning, match=f"{new_module}.{new}"):
        obj = getattr(importlib.import_module(old_module), old)
    assert obj is getattr(importlib.import_module(new_module), new)


def test_hessian_density_draws_a_normalised_density_with_markers():
    import numpy as np

    from toolkit.hessian import SpectralDensity
    from toolkit.plotting.hessian import hessian_density

    grid = np.linspace(-1, 3, 200)
    dens = np.exp(-0.5 * (grid - 1) ** 2) / np.sqrt(2 * np.pi)
    sd = SpectralDensity(grid=grid, density=dens, nodes=[], weights=[], sigma=0.1, n_params=10,
                         n_hvp=0)
    ax = hessian_density(sd, eigenvalues=[2.0, 2.5])
    assert ax.get_yscale() == "log"
    assert [ln.get_xdata()[0] for ln in ax.get_lines()[1:]] == [2.0, 2.5]


def test_training_panel_retrains_headless():
    import torch
    from torch.utils.data import TensorDataset

    from toolkit.widgets.tour import training_panel

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, generator=gen), torch.randint(0, 2, (40,), generator=gen)
    p = training_panel(TensorDataset(x, y), TensorDataset(x, y), epochs=2, batch_size=20, width=4)
    assert p.n_draws == 1 and len(p.figure.axes) == 2
    p.controls["width"].value = 6
    assert p.n_draws == 2 and "width 6" in p.figure.axes[0].get_title()
