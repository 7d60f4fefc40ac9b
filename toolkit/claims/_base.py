"""The result of a claim's predicate."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Verdict", "panel_drawn"]


@dataclass(frozen=True)
class Verdict:
    """Whether a claim holds, and the measured numbers behind the decision.

    Truthy exactly when the claim holds, so ``self_check(verdict, message)`` works;
    ``verdict.values`` holds the quantities the predicate compared (for the message and for tests),
    ``verdict["slope"]`` reads one of them.
    """

    passed: bool
    values: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.passed)

    def __getitem__(self, key: str):
        return self.values[key]

    def __str__(self) -> str:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in self.values.items())
        return f"{'holds' if self.passed else 'fails'} ({shown})"


def panel_drawn(panel, *, n_axes: int | None = None, min_axes: int = 1) -> Verdict:
    """A :class:`~toolkit.widgets.Panel` drew its figure headless: its draw function ran, the
    figure has exactly ``n_axes`` axes (or at least ``min_axes``), and every axes shows data
    (``Axes.has_data``: a line, collection, image or patch).

    Every notebook's panel self-check uses this one rule, so an executed notebook (or its HTML)
    without the figure fails its run. A draw function that raises never yields a panel; one that
    draws nothing, the wrong layout or empty axes fails here (``tests/test_claims_tour.py``).

    Values: ``n_draws``, ``axes``, ``empty_axes``.
    """
    axes = list(panel.figure.axes)
    empty = sum(not ax.has_data() for ax in axes)
    layout_ok = len(axes) == n_axes if n_axes is not None else len(axes) >= min_axes
    passed = panel.n_draws >= 1 and layout_ok and empty == 0
    return Verdict(passed, {"n_draws": int(panel.n_draws), "axes": len(axes), "empty_axes": empty})


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else repr(value)
