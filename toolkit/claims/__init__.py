"""The notebooks' claims as named, falsifiable predicates.

Each notebook's self-check calls a predicate from here, e.g.
``self_check(claims.landscape.edge_of_stability(...), "...")``, and ``tests/test_claims_*.py``
(marker ``control``) runs the *same* predicate on a negative control in which the phenomenon is
absent (a learning rate too small, balanced classes, shuffled labels, random directions, an
untrained net) and asserts that it fails, and on the real case that it passes. A predicate returns
a :class:`Verdict`: true or false, with the measured numbers the message reports. Every notebook's
panel check is the one :func:`panel_drawn`.

One module per notebook topic (``tour``, ``ntk``, ``landscape``, ``collapse``, ``pruning``),
imported on first use.
"""

import importlib

from ._base import Verdict, panel_drawn

_TOPICS = ("tour", "ntk", "landscape", "collapse", "pruning", "features", "curvature", "convergence",
           "sharpness", "pruning_bounds")

__all__ = ["Verdict", "panel_drawn", *_TOPICS]


def __getattr__(name):
    if name in _TOPICS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
