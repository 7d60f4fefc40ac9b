r"""Neural tangent kernels for any PyTorch ``nn.Module``.

The empirical NTK of a network :math:`f(\theta, x) \in \mathbb{R}^O` is

.. math::  \Theta_\theta(x, x')_{o q} = \sum_p \partial_{\theta_p} f_o(\theta, x)\,
           \partial_{\theta_p} f_q(\theta, x') = [J(x) J(x')^\top]_{o q},

the Gram matrix of per-sample Jacobians (Jacot, Gabriel, Hongler 2018, arXiv 1806.07572).
Gradient descent on a wide network moves its outputs by kernel gradient descent with
:math:`\Theta`, and in the infinite-width limit (NTK parameterisation) :math:`\Theta` is
deterministic and constant, so the network evolves as its linearisation (Lee et al. 2019,
arXiv 1902.06720).

Modules (every public name is re-exported here):

* :mod:`~toolkit.ntk.empirical` -- :func:`empirical_ntk` by three methods (``"jacobian"``,
  ``"ntk_vp"``, ``"structured"``; ``"auto"`` picks by a FLOP estimate), in blocks that can be
  split across ranks, optionally w.r.t. a subset of the parameters (``params="head.*"``);
  :func:`structured_coverage` (which modules the structured engine covers, and why not);
  :func:`check_ntk_ready`.
* :mod:`~toolkit.ntk.structured` -- the structured-derivative engine of Novak, Sohl-Dickstein,
  Schoenholz 2022 (arXiv 2206.08720): layer plans, features, Gram products.
* :mod:`~toolkit.ntk.analytic` -- :func:`analytic_ntk`, the infinite-width NTK/NNGP of an MLP.
* :mod:`~toolkit.ntk.predict` -- :func:`kernel_regression` (the linearised network at time t),
  :func:`gd_kernel_lr`, :func:`stable_lr` and :func:`residual_modes` (spectral bias).
* :mod:`~toolkit.ntk.linearize` -- :func:`linearize`, the first-order Taylor model.
* :mod:`~toolkit.ntk.callbacks` -- :class:`KernelDrift`, :class:`OutputRecorder`,
  :func:`relative_change`, training callbacks for ``toolkit.train.fit``.
* :mod:`~toolkit.ntk.surrogates` -- :class:`GatedReLUMLP` and :func:`to_relu` (Noy et al. 2021,
  arXiv 2101.04243), :class:`OutputScale` (lazy vs mean-field output scale).

The experiments of ``notebooks/01_ntk_equivalence`` (width sweeps, lazy training, the
equivalence with kernel regression) are cells of that notebook built on these primitives.
Analysis code only: nothing here plots, prints or trains.
"""

from toolkit._deprecated import moved

from .analytic import analytic_ntk
from .callbacks import KernelDrift, OutputRecorder, kernel_drift, relative_change
from .empirical import (
    METHODS,
    MODES,
    Coverage,
    check_ntk_ready,
    empirical_ntk,
    structured_coverage,
)
from .linearize import LinearizedModel, linearize
from .predict import gd_kernel_lr, kernel_regression, residual_modes, stable_lr
from .surrogates import GatedReLUMLP, OutputScale, required_margin, to_relu

__all__ = [
    "METHODS",
    "MODES",
    "Coverage",
    "GatedReLUMLP",
    "KernelDrift",
    "LinearizedModel",
    "OutputRecorder",
    "OutputScale",
    "analytic_ntk",
    "check_ntk_ready",
    "empirical_ntk",
    "gd_kernel_lr",
    "kernel_drift",
    "kernel_regression",
    "linearize",
    "relative_change",
    "residual_modes",
    "stable_lr",
    "structured_coverage",
    "to_relu",
    "required_margin",
]

# Old public names, kept for one release (they warn and point to the new place).
__getattr__ = moved(__name__, {
    "block_schedule": "toolkit.ntk.empirical:_block_schedule",
    "default_memory_budget": "toolkit.ntk.empirical:_default_memory_budget",
    "loglog_slope": "toolkit.utils:loglog_slope",
})
