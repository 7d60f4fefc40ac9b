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
