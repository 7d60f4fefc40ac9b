"""Neural collapse: NC1-NC4, CDNV, a streaming accumulator, the unconstrained-features model,
the supervised contrastive loss and per-layer collapse of deep linear networks.

Conventions (every function in this module uses them; they are the ones of Papyan, Han & Donoho
2020, arXiv:2008.08186, made explicit where the literature disagrees)
-------------------------------------------------------------------------------------------
* ``h_i`` in R^d is the feature of sample i (a row of ``features``, shape (N, d)), ``y_i`` in
  {0, ..., C-1} its label, ``n_c`` the number of samples of class c, N = sum_c n_c.
* Class means ``mu_c = (1/n_c) sum_{y_i = c} h_i``.
* Global mean ``mu_G``: ``global_mean="class_means"`` (default) uses the mean of the class means,
  ``(1/C) sum_c mu_c``; ``global_mean="samples"`` uses the sample mean ``(1/N) sum_i h_i`` as written
  in Papyan et al. The two coincide on balanced data. Under imbalance the sample mean is pulled
  towards the majority classes, so the centred means of minority classes look longer; the mean of
  class means keeps every class on the same footing, which is the reference the ETF target
  ``I - 11^T/C`` assumes (each class weighs 1/C). Both are offered; the choice is recorded.
* ``M`` is the (C, d) matrix whose rows are the centred class means ``mu_c - mu_G`` (the papers
  write its transpose, a d x C matrix ``M~``; we keep rows = classes like ``nn.Linear.weight``).
* Within-class covariance over **all N samples**:
  ``Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T`` (classes weighted by size).
* Between-class covariance over **classes**: ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T
  = M^T M / C`` (each class weighs 1/C, whatever its size).
* NC1 ``= Tr(Sigma_W Sigma_B^+) / C`` with the Moore-Penrose pseudo-inverse. Since
  ``Sigma_B^+ = C (M^T M)^+ = C M^+ (M^+)^T``, with R the (N, d) matrix of residuals
  ``h_i - mu_{y_i}``, ``Tr(Sigma_W Sigma_B^+) = (C/N) ||R M^+||_F^2``: only the projection of the
  residuals on the (rank <= C-1) span of the class means matters. We compute ``M^+`` from a thin
  SVD of M (never from the squared, worse-conditioned Sigma_B), drop singular values below
  ``rtol * max(s_max, ||[mu_1 ... mu_C]||_F)`` with ``rtol = max(C, d) * eps`` (the null
  direction created by centring is rounding noise of size ~eps times the *uncentred* means, which
  dominates for features far from the origin), and never form the d x d matrix Sigma_W. The
  classifier's logits for NC4 come from the same residuals (``h W^T + b = r W^T + mu_y W^T + b``),
  so one product ``R [M^+ | W^T]`` serves both. Cost O(N d C) instead of O(N d^2), memory O(C d)
  instead of O(d^2 + N d). (Pseudo-inverting the d x d Sigma_B instead
  needs a rank cut too: its d - C + 1 null eigenvalues are pure rounding noise, and NumPy's
  default cut ``rcond=1e-15`` sits at the rounding level of a product of such matrices.)
* Weights ``W`` are the (C, d) weight of the last ``nn.Linear`` (rows ``w_c``), ``b`` its bias.

References: Papyan, Han & Donoho 2020 (2008.08186) for NC1-NC4; Fang, He, Long & Su 2021
(2101.12699) for the layer-peeled/unconstrained-features model and minority collapse; Galanti,
Gyorgy & Hutter 2022 (2112.15121) for the CDNV; Dang et al. 2023 (2301.00437) for deep linear
networks; Kini et al. 2023 (2306.07960) for supervised contrastive loss, ReLU and orthogonal frames;
Khosla et al. 2020 (2004.11362) for the SupCon loss; Zhou et al. 2025 (2502.15798) for MaxSup;
Pan & Cao 2023 (2309.04644) for batch norm and weight decay speeding collapse up.

Layout (every public name is re-exported here, ``from toolkit.collapse import nc_metrics``):

* ``metrics`` -- :func:`nc_metrics`, :class:`CollapseMetrics`, :func:`class_means`,
  :func:`simplex_etf`, :func:`mean_geometry`, :func:`layerwise_metrics`, :func:`terminal_phase`,
  :func:`minority_collapse`;
* ``accumulator`` -- the streaming two-pass :class:`CollapseAccumulator`;
* ``features`` -- :func:`extract_features`, :func:`layer_inputs`, :func:`collapse_metrics`,
  :class:`CollapseCallback`;
* ``ufm`` -- the unconstrained-features model :func:`ufm`, :func:`ufm_mse_closed_form`;
* ``supcon`` -- :func:`supcon_loss`, :class:`SupConLoss` (train with ``toolkit.train.fit``),
  :func:`ufm_supcon` (the loss on free embeddings, Kini et al.'s setting);
* ``sampler`` -- :class:`BatchBindingSampler`, Kini et al.'s batch-binding for mini-batch SCL
  (``toolkit.train.fit(..., batch_sampler=...)``).

Analysis only: nothing here plots or prints (see ``toolkit.plotting.collapse``).
"""

from ._base import GLOBAL_MEANS, CollapseMetrics

# deprecated, kept for one release (not in __all__)
from ._legacy import bn_mlp as bn_mlp
from ._legacy import train_supcon as train_supcon
from .accumulator import CollapseAccumulator
from .features import CollapseCallback, collapse_metrics, extract_features, layer_inputs
from .metrics import (
                      MeanGeometry,
                      class_means,
                      layerwise_metrics,
                      mean_geometry,
                      minority_collapse,
                      nc_metrics,
                      simplex_etf,
                      terminal_phase,
)
from .sampler import BatchBindingSampler
from .supcon import SupConLoss, SupConUFMResult, supcon_loss, ufm_supcon
from .ufm import UFMResult, ufm, ufm_mse_closed_form

__all__ = [
    "GLOBAL_MEANS",
    "CollapseMetrics",
    "CollapseAccumulator",
    "nc_metrics",
    "class_means",
    "simplex_etf",
    "extract_features",
    "layer_inputs",
    "collapse_metrics",
    "CollapseCallback",
    "terminal_phase",
    "MeanGeometry",
    "mean_geometry",
    "layerwise_metrics",
    "UFMResult",
    "ufm",
    "ufm_mse_closed_form",
    "minority_collapse",
    "supcon_loss",
    "SupConLoss",
    "SupConUFMResult",
    "ufm_supcon",
    "BatchBindingSampler",
]
