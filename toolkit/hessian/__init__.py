r"""Curvature of the training loss: Hessian-vector products, extreme eigenvalues, trace,
spectral density, per-class Hessians and sharpness.

The object of study is the Hessian of the *data-set mean* loss with respect to the parameters,

.. math::  H = ∇²_θ L(θ),\qquad L(θ) = \frac1N \sum_{i=1}^N ℓ(f(x_i; θ), y_i),

never formed: everything is built on Hessian-vector products Hv, accumulated over data batches as
per-batch *sums* Σ_b n_b H_b v (so a sharded run all-reduces the sums and the counts) and divided
by N at the end. Two products are implemented: forward-over-reverse, ``jvp(grad(L))`` with
:mod:`torch.func`, and reverse-over-reverse, ``autograd.grad`` twice (Pearlmutter's trick);
``benchmarks/bench_hessian.py`` times both and :data:`DEFAULT_HVP` picks the faster per device.
On in-memory data the first-order graph is kept and reused (``_graph``), and for chains of
``nn.Linear`` layers and elementwise activations ``method="auto"`` takes Pearlmutter's
R-operator on a cached forward and backward pass instead (``_chain``).

References: Ghorbani, Krishnan, Xiao 2019 (arXiv 1901.10159) and Yao et al. 2020 — PyHessian
(arXiv 1912.07145) for Lanczos, Hutchinson and stochastic Lanczos quadrature on networks;
Papyan 2020 (arXiv 2008.11865) for the bulk-plus-outliers spectrum; Foret et al. 2021
(arXiv 2010.01412) and Kwon et al. 2021 (arXiv 2102.11600) for (adaptive) sharpness;
Cohen et al. 2021 (arXiv 2103.00065) for the edge of stability; Rangwani et al. 2022
(arXiv 2212.13827) for per-class Hessians under class imbalance.

Modules: :mod:`~toolkit.hessian.operator` (``HessianOperator``, ``hvp``; the first-order graph in
``_graph``, the chains' R-operator in ``_chain``), :mod:`~toolkit.hessian.eigen`
(``top_eigenvalues``), :mod:`~toolkit.hessian.trace`,
:mod:`~toolkit.hessian.density` (SLQ), :mod:`~toolkit.hessian.per_class` (``class_hessian``,
``sharpness``), :mod:`~toolkit.hessian.callbacks` (``LambdaMaxTracker``) and
:mod:`~toolkit.hessian.rank` (``numerical_rank`` and the Hessian's rank, Singh et al. 2023) and
:mod:`~toolkit.hessian.layers` (``layer_table``: λ_max and trace of each layer's Hessian block).

Any model: ``params=`` takes names, module names or glob patterns (``"blocks.1.*"``,
:func:`select_params`); forward passes run with the math attention kernel and without the fused
eval-mode transformer fast path, so products go through ``nn.MultiheadAttention`` /
``F.scaled_dot_product_attention`` (``_autodiff``); an operation with no second derivative raises
:class:`NotTwiceDifferentiableError`.
"""

from .._deprecated import moved
from ._autodiff import NotTwiceDifferentiableError
from .callbacks import LambdaMaxTracker
from .density import SpectralDensity, lanczos, spectral_density
from .eigen import Eigenpairs, top_eigenvalues
from .layers import layer_table, parameter_groups
from .operator import DEFAULT_HVP, HVP_METHODS, HessianOperator, hvp, loss_function, select_params
from .per_class import Sharpness, class_hessian, class_subset, minority_majority, sharpness
from .rank import Rank, hessian_matrix, hessian_rank, linear_gn_rank, numerical_rank
from .trace import TraceEstimate, estimate_trace, trace

__all__ = ["HVP_METHODS", "DEFAULT_HVP", "HessianOperator", "hvp", "Eigenpairs", "top_eigenvalues",
           "TraceEstimate", "trace", "lanczos", "SpectralDensity", "spectral_density",
           "class_subset", "class_hessian", "minority_majority", "Sharpness", "sharpness",
           "LambdaMaxTracker", "Rank", "numerical_rank", "hessian_matrix", "hessian_rank",
           "linear_gn_rank", "select_params", "loss_function", "NotTwiceDifferentiableError",
           "parameter_groups", "layer_table", "estimate_trace"]

# ``Eigen`` was renamed to say it is a result (eigenvalues with their eigenvectors); the old name
# works for one release.
__getattr__ = moved(__name__, {"Eigen": "toolkit.hessian:Eigenpairs"})
