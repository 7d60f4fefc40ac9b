r"""Weight spectra: empirical spectral densities, power-law tails and random-matrix baselines.

Heavy-tailed self-regularisation (Martin & Mahoney 2018, arXiv 1810.01075): the eigenvalues of
:math:`W^\top W` of a trained layer develop a power-law tail :math:`p(\lambda)\propto\lambda^{-\alpha}`
while a random layer's eigenvalues fill the Marchenko–Pastur bulk; a smaller tail exponent
:math:`\alpha` goes with a better-trained layer. This module computes

* :func:`esd` — the eigenvalues of :math:`W^\top W` of a Linear or Conv layer (two conventions for
  convolutions);
* :func:`powerlaw_alpha` — Clauset, Shalizi & Newman's power-law fit (arXiv 0706.1062), vectorised
  over every candidate :math:`x_{\min}` at once, identical (α and xmin) to
  ``powerlaw.Fit(ev, parameter_ranges={"alpha": [1, 50]})`` but without its per-candidate loop;
* :func:`marchenko_pastur_edges` / :func:`marchenko_pastur_density` — the random-matrix bulk;
* :func:`layer_report` — one row of spectral diagnostics per weight matrix, and
  :func:`shuffle_weights` — the same model with every layer's entries shuffled (the control).

Analysis only: nothing here plots or prints (see :mod:`toolkit.plotting.spectra`).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_module, check_positive, check_positive_int
from ._deprecated import moved
from ._matrices import (
    _LAYER_TYPES,
    SkippedParametersWarning,
    WeightMatrix,
    _deepcopy,
    effective_weight,
    skipped_parameters,
    warn_skipped,
    weight_layer,
    weight_layers,
    weight_matrices,
)
from .utils import progress as _progress

__all__ = ["PowerLawFit", "esd", "powerlaw_alpha", "marchenko_pastur_edges",
           "marchenko_pastur_density", "esd_matrix_shape", "effective_weight", "weight_layers",
           "weight_layer", "layer_report", "shuffle_weights", "stable_rank", "effective_rank",
           "path_norm", "rescale_neurons", "operator_norm_product", "PathNormCallback",
           "WeightMatrix", "weight_matrices", "skipped_parameters", "warn_skipped",
           "SkippedParametersWarning"]

CONV_CONVENTIONS = ("slices", "reshape")


def _as_matrices(weight: torch.Tensor, conv: str) -> torch.Tensor:
    """A batch ``(k, rows, cols)`` of the matrices whose spectra make up the ESD."""
    check_choice(conv, "conv", CONV_CONVENTIONS)
    if weight.ndim < 2:
        raise ValueError(f"weight must have at least 2 dimensions (a Linear or Conv weight), got "
                         f"shape {tuple(weight.shape)}; biases and norm layers have no ESD.")
    if weight.ndim == 2:
        return weight.unsqueeze(0)
    out_c, in_c = weight.shape[:2]
    if conv == "reshape":
        return weight.reshape(1, out_c, -1)
    # WeightWatcher's convention: one (out, in) matrix per kernel position.
    return weight.reshape(out_c, in_c, -1).permute(2, 0, 1)


def esd(weight: torch.Tensor | nn.Module, *, conv: str = "slices") -> torch.Tensor:
    r"""Empirical spectral density: the eigenvalues of :math:`W^\top W`, sorted ascending (float64).

    Unnormalised, as WeightWatcher (Martin & Mahoney, arXiv 1810.01075): the eigenvalues are the
    squared singular values :math:`\lambda_i = \sigma_i(W)^2`. Only the :math:`\min(\text{out},
    \text{in})` singular values are returned; the remaining :math:`|\text{in}-\text{out}|` eigenvalues
    of the larger Gram matrix are exactly zero and carry no information.

    ``weight``: a tensor or a layer (its :func:`effective_weight` is used).

    * Linear, ``W`` of shape ``(out, in)``: :math:`\min(\text{out},\text{in})` eigenvalues.
    * Conv, ``W`` of shape ``(out, in, k_1, ..., k_d)``:

      - ``conv="slices"`` (default, WeightWatcher's choice): the ESDs of the
        :math:`K = k_1\cdots k_d` matrices :math:`W[:, :, i, j]` of shape ``(out, in)`` pooled
        together, :math:`K\cdot\min(\text{out},\text{in})` eigenvalues. Each slice is the layer's
        map between channels at one kernel offset; pooling keeps every slice's spectrum visible.
      - ``conv="reshape"``: the single ``(out, in·K)`` matrix that ``F.conv2d`` multiplies
        unfolded patches by (im2col), :math:`\min(\text{out}, \text{in}\cdot K)` eigenvalues.

    No rescaling is applied to conv slices (power-law exponents are scale invariant).
    """
    w = effective_weight(weight) if isinstance(weight, nn.Module) else weight
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"weight must be a tensor or an nn.Linear / nn.Conv layer, got "
                        f"{type(weight).__name__}.")
    mats = _as_matrices(w.detach(), conv).to(torch.float64)
    return torch.sort(_svdvals(mats).reshape(-1).square()).values


def _svdvals(mats: torch.Tensor) -> torch.Tensor:
    """Singular values of a batch of matrices: on the CPU, LAPACK's divide-and-conquer ``gesdd``
    through SciPy, one matrix at a time (as fast as ``torch.linalg.svdvals`` on an idle machine,
    and far less slowed down on a busy shared one in our measurements); elsewhere
    ``torch.linalg.svdvals`` on the tensor's device."""
    if mats.device.type != "cpu":
        return torch.linalg.svdvals(mats)
    from scipy.linalg import svdvals

    arr = mats.numpy()
    return torch.from_numpy(np.stack([svdvals(m, check_finite=False) for m in arr]))


# ---------------------------------------------------------------------------------- power laws


@dataclass(frozen=True)
class PowerLawFit:
    r"""Result of :func:`powerlaw_alpha`.

    ``alpha``: MLE exponent of :math:`p(\lambda)\propto\lambda^{-\alpha}` for :math:`\lambda\ge x_{\min}`;
    ``xmin``: start of the tail; ``ks``: Kolmogorov–Smirnov distance of the tail fit; ``n_tail``:
    number of eigenvalues :math:`\ge x_{\min}`; ``sigma``: standard error
    :math:`(\alpha-1)/\sqrt{n_{tail}}`; ``valid``: False when no candidate had an exponent inside
    ``alpha_range`` (then the overall KS minimiser is returned, as ``powerlaw`` does).
    ``candidates`` (with ``keep_candidates=True`` only): one row per candidate xmin (``xmin``,
    ``alpha``, ``ks``, ``n_tail``, ``valid``), for plots of the KS distance against xmin.
    """

    alpha: float
    xmin: float
    ks: float
    n_tail: int
    sigma: float
    valid: bool = True
    candidates: pd.DataFrame | None = field(default=None, repr=False, compare=False)


def _clean_eigenvalues(eigenvalues) -> np.ndarray:
    if isinstance(eigenvalues, torch.Tensor):
        eigenvalues = eigenvalues.detach().cpu().double().numpy()
    try:
        x = np.asarray(eigenvalues, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"eigenvalues must be a 1-D array of numbers, got "
                        f"{type(eigenvalues).__name__}.") from err
    if x.ndim != 1:
        raise ValueError(f"eigenvalues must be 1-D, got shape {x.shape}; pass esd(weight) or "
                         "flatten first.")
    if not np.all(np.isfinite(x)):
        raise ValueError("eigenvalues contain NaN or inf; check the weights.")
    return np.sort(x[x > 0])  # zeros (rank deficiency, pruned rows) are dropped, as powerlaw does


def _check_alpha_range(alpha_range) -> tuple[float, float]:
    try:
        lo, hi = (float(a) for a in alpha_range)
    except (TypeError, ValueError) as err:
        raise TypeError(f"alpha_range must be a pair (low, high), got {alpha_range!r}.") from err
    if not hi > lo:
        raise ValueError(f"alpha_range must satisfy low < high, got {alpha_range!r}.")
    return lo, hi


def _valid_alpha(alpha: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Which fits ``powerlaw`` 2.x keeps in its xmin search.

    A continuous fit whose closed-form MLE lies in (1.5, 3] is accepted as is (only the open range
    check applies); otherwise it is refined by a bounded Nelder–Mead (which returns the closed-form
    MLE, the exact optimum) and rejected when within 0.01 of a bound of ``alpha_range``.
    """
    in_range = (alpha > lo) & (alpha < hi)
    closed_form = (alpha > 1.5) & (alpha <= 3.0)
    away_from_bounds = (alpha >= lo + 0.01) & (alpha <= hi - 0.01)
    return in_range & (closed_form | away_from_bounds)


def _alpha_all(logu: np.ndarray, n_above: np.ndarray, n_cand: int) -> np.ndarray:
    r"""Closed-form MLE :math:`\hat\alpha_i = 1 + m_i / S_i` for every candidate in :math:`O(K)`.

    :math:`S_i = \sum_{x \ge u_i} \ln(x/u_i)` obeys :math:`S_i = S_{i+1} + m_{i+1}\ln(u_{i+1}/u_i)`,
    a suffix sum of positive terms (no cancellation), with :math:`m_i` values :math:`\ge u_i`.
    """
    steps = n_above[1:] * np.diff(logu)                       # m_{k+1} ln(u_{k+1}/u_k) >= 0
    suffix = np.cumsum(steps[::-1])[::-1]                     # S_k for k = 0..K-2
    return 1.0 + n_above[:n_cand] / suffix[:n_cand]


def _ks_on(logu, below, n_above, rows, alpha, cols) -> np.ndarray:
    r"""KS distance of candidates ``rows`` (exponents ``alpha``) measured on the distinct values
    ``cols`` only: :math:`\max_{k \in cols, k \ge i} |1 - e^{(1-\alpha_i)\ln(u_k/u_i)} - (b_k-b_i)/m_i|`.
    With every value ``>= rows[0]`` in ``cols`` this is the exact distance; on a subset, a lower
    bound of it."""
    upper = cols[None, :] >= rows[:, None]
    ell = np.where(upper, logu[None, cols] - logu[rows, None], 0.0)
    model_cdf = -np.expm1((1.0 - alpha)[:, None] * ell)
    data_cdf = (below[None, cols] - below[rows, None]) / n_above[rows, None]
    return np.where(upper, np.abs(model_cdf - data_cdf), 0.0).max(axis=1)


def _ks_blocked(logu, below, n_above, rows, alpha, cols, max_block) -> np.ndarray:
    """:func:`_ks_on` in blocks of rows so that no temporary exceeds ``max_block`` entries."""
    out = np.empty(len(rows))
    for start in range(0, len(rows), max(1, max_block // max(len(cols), 1))):
        sl = slice(start, start + max(1, max_block // max(len(cols), 1)))
        r = rows[sl]
        c = cols[cols >= r[0]] if len(r) else cols
        out[sl] = _ks_on(logu, below, n_above, r, alpha[sl], c)
    return out


def _fit_at(x: np.ndarray, xmin: float) -> tuple[float, float, int]:
    """α (closed-form MLE), KS distance and tail size for a fixed ``xmin`` (``x`` sorted)."""
    tail = x[x >= xmin]
    m = len(tail)
    alpha = 1.0 + m / float(np.sum(np.log(tail / xmin)))
    t_uniq, t_first = np.unique(tail, return_index=True)
    model_cdf = -np.expm1((1.0 - alpha) * np.log(t_uniq / xmin))
    return alpha, float(np.max(np.abs(model_cdf - t_first / m))), m


def powerlaw_alpha(eigenvalues, *, xmin: float | None = None,
                   alpha_range: tuple[float, float] = (1.0, 50.0),
                   keep_candidates: bool = False, max_block: int = 2**21) -> PowerLawFit:
    r"""Fit a power-law tail :math:`p(\lambda) \propto \lambda^{-\alpha}, \lambda \ge x_{\min}`.

    The method of Clauset, Shalizi & Newman (2009, arXiv 0706.1062), as WeightWatcher reports it
    (Martin & Mahoney, arXiv 1810.01075). For a candidate :math:`x_{\min}` with tail
    :math:`\lambda_1..\lambda_m \ge x_{\min}`, the continuous maximum-likelihood exponent is

    .. math:: \hat\alpha = 1 + m \Big/ \sum_{i=1}^m \ln(\lambda_i / x_{\min}),

    and the fit's Kolmogorov–Smirnov distance is
    :math:`D = \max_{x} |P(x) - S(x)|` with the model CDF :math:`P(x) = 1-(x/x_{\min})^{1-\hat\alpha}`
    and :math:`S(x)` the fraction of the tail strictly below :math:`x`, evaluated at the tail's
    distinct values (the convention of the ``powerlaw`` package 2.x). Without ``xmin``, the
    :math:`x_{\min}` with the smallest :math:`D` is chosen among the candidates whose
    :math:`\hat\alpha` is acceptable in ``alpha_range`` (first minimum on ties).

    **Candidates.** Every distinct positive value except the two largest: that is what ``powerlaw``
    2.x does (it keeps values strictly below the maximum, then drops the last one); a two-point
    tail always has :math:`D = 1/2 - e^{-2}` and a one-point tail has no fit, so nothing is lost.

    **Vectorised.** :math:`\hat\alpha` for all :math:`K` candidates comes from one suffix sum
    (:math:`O(K)`). The KS distances are computed on a (candidates × distinct values) grid with
    NumPy, never a Python loop over candidates: first a lower bound for every candidate on a
    subset of the values, then the exact distance only for the candidates whose bound does not
    already exceed the best exact distance found — the result is exactly the full search's
    (``keep_candidates=True`` computes every distance and returns them in ``candidates``).
    ``powerlaw.Fit`` instead builds a distribution object and runs a fit per candidate.

    **Agreement with** ``powerlaw`` **(a caveat for users).** The result equals
    ``powerlaw.Fit(ev, parameter_ranges={"alpha": [1, 50]})`` (its ``alpha``, ``xmin``, ``D``),
    the textbook method. ``powerlaw`` 2.x's *default* range for a power law is α ∈ [0, 3]: a
    candidate whose MLE exceeds 3 is refitted numerically inside [0, 3], ends on the bound, is
    flagged as noise and is **skipped** by the xmin search — so ``powerlaw.Fit(ev)`` silently
    prefers tails with α ≤ 3 (and reports α ≤ 3) for layers whose true tail is thinner.
    ``powerlaw_alpha(ev, alpha_range=(0, 3))`` reproduces that default. Fits are continuous
    (``discrete=False``, as WeightWatcher); non-positive values (e.g. the zero eigenvalues of
    rank-deficient or pruned layers) are dropped, as ``powerlaw`` does.

    ``xmin`` fixes the tail start (any positive number; the tail is every value ``>= xmin``) and
    returns the closed-form MLE above.
    """
    x = _clean_eigenvalues(eigenvalues)
    lo, hi = _check_alpha_range(alpha_range)
    n = len(x)

    if xmin is not None:
        xmin = float(xmin)
        if not xmin > 0 or not math.isfinite(xmin):
            raise ValueError(f"xmin must be a positive number, got {xmin!r}.")
        if len(np.unique(x[x >= xmin])) < 2:
            raise ValueError(f"xmin={xmin:.4g} leaves fewer than 2 distinct values in the tail "
                             f"(largest value {x[-1] if n else float('nan'):.4g}); lower xmin.")
        alpha, ks, m = _fit_at(x, xmin)
        return PowerLawFit(alpha=alpha, xmin=xmin, ks=ks, n_tail=m,
                           sigma=(alpha - 1.0) / math.sqrt(m),
                           valid=bool(_valid_alpha(np.array([alpha]), lo, hi)[0]))

    uniq, below = np.unique(x, return_index=True)  # x sorted: first index = count strictly below
    n_uniq = len(uniq)
    n_cand = n_uniq - 2
    if n_cand < 2:
        raise ValueError(f"powerlaw_alpha needs at least 4 distinct positive eigenvalues, got "
                         f"{n_uniq}; the layer is too small (or too degenerate) for a tail fit.")
    logu = np.log(uniq)
    n_above = (n - below).astype(np.float64)
    alphas = _alpha_all(logu, n_above, n_cand)
    valid = _valid_alpha(alphas, lo, hi)
    any_valid = bool(valid.any())
    if not any_valid:
        warnings.warn(f"powerlaw_alpha: no candidate xmin gave an exponent inside alpha_range="
                      f"{(lo, hi)}; returning the smallest KS distance overall (valid=False).",
                      stacklevel=2)
    pool = np.flatnonzero(valid) if any_valid else np.arange(n_cand)
    all_cols = np.arange(n_uniq)

    dists = np.full(n_cand, np.nan)
    if keep_candidates or n_uniq <= 256:
        rows = np.arange(n_cand) if keep_candidates else pool
        dists[rows] = _ks_blocked(logu, below, n_above, rows, alphas[rows], all_cols, max_block)
        search = pool
    else:
        # Lower bounds on a coarse subset of the values (dense near the top, where tails are
        # short), then exact distances where the bound leaves a chance of being the minimum.
        stride = max(1, n_uniq // 64)
        cols = np.union1d(np.arange(0, n_uniq, stride), np.arange(n_uniq - 64, n_uniq))
        bound = _ks_blocked(logu, below, n_above, pool, alphas[pool], cols, max_block)
        first = pool[[int(np.argmin(bound))]]
        best_exact = _ks_on(logu, below, n_above, first, alphas[first], all_cols[first[0]:])[0]
        search = pool[bound <= best_exact + 1e-9]  # exact D >= bound: the rest cannot win
        dists[search] = _ks_blocked(logu, below, n_above, search, alphas[search], all_cols,
                                    max_block)
    best = int(search[np.argmin(dists[search])])
    alpha, ks, m = _fit_at(x, float(uniq[best]))
    candidates = None
    if keep_candidates:
        candidates = pd.DataFrame({"xmin": uniq[:n_cand], "alpha": alphas, "ks": dists,
                                   "n_tail": n_above[:n_cand].astype(int), "valid": valid})
    return PowerLawFit(alpha=alpha, xmin=float(uniq[best]), ks=ks, n_tail=m,
                       sigma=(alpha - 1.0) / math.sqrt(m), valid=any_valid, candidates=candidates)


# --------------------------------------------------------------------------- random matrices


def marchenko_pastur_edges(n_rows: int, n_cols: int, sigma2: float) -> tuple[float, float]:
    r"""Edges :math:`(\lambda_-, \lambda_+)` of the Marchenko–Pastur bulk of :math:`W^\top W`.

    For an ``n_rows × n_cols`` matrix with i.i.d. entries of variance :math:`\sigma^2`, the nonzero
    eigenvalues of the unnormalised :math:`W^\top W` fill, as both sizes grow at a fixed ratio,

    .. math:: [\sigma^2(\sqrt{N}-\sqrt{M})^2,\ \sigma^2(\sqrt{N}+\sqrt{M})^2]

    (Marchenko & Pastur 1967; the random baseline in Martin & Mahoney, arXiv 1810.01075).
    Eigenvalues above :math:`\lambda_+` are spikes: structure that training put into the layer.
    """
    check_positive_int(n_rows, "n_rows")
    check_positive_int(n_cols, "n_cols")
    check_positive(sigma2, "sigma2", allow_zero=True)
    a, b = math.sqrt(n_rows), math.sqrt(n_cols)
    return sigma2 * (a - b) ** 2, sigma2 * (a + b) ** 2


def marchenko_pastur_density(x, n_rows: int, n_cols: int, sigma2: float) -> np.ndarray:
    r"""Marchenko–Pastur density of the :math:`\min(N, M)` nonzero eigenvalues of :math:`W^\top W`.

    With :math:`y = \min(N,M)/\max(N,M)` and :math:`\lambda = \max(N,M)\,t`,

    .. math:: p(\lambda) = \frac{\sqrt{(\lambda_+-\lambda)(\lambda-\lambda_-)}}
                                {2\pi\sigma^2\, y\, \max(N,M)\,\lambda}
              \quad \text{on } [\lambda_-, \lambda_+],

    which integrates to one (the histogram of :func:`esd` of a random layer, ``density=True``).
    """
    lam_lo, lam_hi = marchenko_pastur_edges(n_rows, n_cols, sigma2)
    big, small = max(n_rows, n_cols), min(n_rows, n_cols)
    y = small / big
    x = np.asarray(x, dtype=np.float64)
    inside = (x > lam_lo) & (x < lam_hi)
    out = np.zeros_like(x)
    xi = x[inside]
    out[inside] = np.sqrt((lam_hi - xi) * (xi - lam_lo)) / (2 * np.pi * sigma2 * y * big * xi)
    return out


# ------------------------------------------------------------------------------------ reports


def stable_rank(eigenvalues: torch.Tensor) -> float:
    r"""Stable rank :math:`\sum_i \lambda_i / \lambda_{\max} = \|W\|_F^2 / \|W\|_2^2` (≤ rank)."""
    ev = torch.as_tensor(eigenvalues, dtype=torch.float64)
    top = float(ev.max()) if ev.numel() else 0.0
    return float(ev.sum()) / top if top > 0 else 0.0


def effective_rank(eigenvalues: torch.Tensor) -> float:
    r"""Entropy-based effective rank (Roy & Vetterli 2007, "The effective rank: a measure of
    effective dimensionality"): :math:`\exp H(p)` with :math:`p_i = \sigma_i / \sum_j \sigma_j`
    over the singular values :math:`\sigma_i = \sqrt{\lambda_i}`; between 1 and the rank."""
    sv = torch.as_tensor(eigenvalues, dtype=torch.float64).clamp_min(0).sqrt()
    total = float(sv.sum())
    if total <= 0:
        return 0.0
    p = sv[sv > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def esd_matrix_shape(weight: torch.Tensor, conv: str = "slices") -> tuple[int, int]:
    """``(rows, cols)`` of the matrices whose spectra make up :func:`esd` (for the MP law)."""
    mats = _as_matrices(weight, conv)
    return int(mats.shape[1]), int(mats.shape[2])


def _safe_fit(ev: torch.Tensor, alpha_range) -> PowerLawFit | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return powerlaw_alpha(ev, alpha_range=alpha_range)
    except ValueError:
        return None  # too few distinct eigenvalues (e.g. a 10-class head): reported as NaN


def _shuffle_(tensors: list[torch.Tensor], generator: torch.Generator) -> None:
    """Apply the same random permutation of entries to every tensor (in place)."""
    n = tensors[0].numel()
    perm = torch.randperm(n, generator=generator)
    for t in tensors:
        t.copy_(t.detach().reshape(-1)[perm.to(t.device)].reshape(t.shape))


def shuffle_weights(model: nn.Module, *, seed: int = 0) -> nn.Module:
    r"""A copy of ``model`` whose every weight matrix (:func:`weight_matrices`: Linear/Conv weights,
    attention q/k/v blocks) has its entries randomly permuted, each matrix on its own.

    Shuffling keeps each layer's entry distribution (so its Marchenko–Pastur bulk, which depends on
    the entry variance only) and destroys the correlations training created; the spectrum of the
    copy is the null model of heavy-tailed self-regularisation (Martin & Mahoney, arXiv
    1810.01075): tails and spikes that survive shuffling come from the entries' distribution, not
    from learned structure. Pruned layers shuffle ``weight_orig`` and ``weight_mask`` together.
    Biases and other parameters are kept. The input model is not modified.
    """
    check_positive_int(seed, "seed", allow_zero=True)
    clone = _deepcopy(model)
    gen = torch.Generator().manual_seed(int(seed))
    matrices = weight_matrices(clone)
    if not matrices:
        raise ValueError(f"{type(model).__name__} has no nn.Linear / nn.Conv / "
                         "nn.MultiheadAttention weights to shuffle.")
    warn_skipped(clone, "shuffle_weights", matrices)
    with torch.no_grad():
        for mat in matrices:
            module, param, rows = mat.module, mat.param, mat.rows or slice(None)
            if hasattr(module, param + "_orig") and hasattr(module, param + "_mask"):
                orig, mask = getattr(module, param + "_orig"), getattr(module, param + "_mask")
                _shuffle_([orig[rows], mask[rows]], gen)
                setattr(module, param, orig * mask)
            else:
                _shuffle_([getattr(module, param)[rows]], gen)
    return clone


def layer_report(model: nn.Module, *, conv: str = "slices", randomize: bool = True,
                 seed: int = 0, alpha_range: tuple[float, float] = (1.0, 50.0),
                 progress: bool = False) -> pd.DataFrame:
    r"""One row of spectral diagnostics per weight matrix, as WeightWatcher: every Linear / Conv
    layer and the query, key and value projections of every ``nn.MultiheadAttention`` (rows
    ``"<name>.q"``, ``".k"``, ``".v"``: the three blocks of ``in_proj_weight``; ``out_proj`` is a
    Linear row). Other weight tensors (embeddings, ...) are skipped with one
    :class:`SkippedParametersWarning` naming them (:func:`skipped_parameters`).

    Columns: ``name``, ``type``, ``shape`` (the weight's), ``n_eigs``; the tail fit of
    :func:`powerlaw_alpha` — ``alpha``, ``xmin``, ``ks``, ``n_tail`` (NaN for layers with fewer
    than 4 distinct eigenvalues); ``spectral_norm`` :math:`\lambda_{\max} = \|W\|_2^2`;
    ``stable_rank`` :math:`\sum\lambda/\lambda_{\max}`; ``frobenius`` :math:`\sum\lambda =
    \|W\|_F^2` (the squared Frobenius norm); ``effective_rank`` (:func:`effective_rank`);
    ``mp_edge`` :math:`\lambda_+` of the Marchenko–Pastur bulk for the layer's entry variance
    (:func:`marchenko_pastur_edges`; per slice for ``conv="slices"``); ``n_spikes``: eigenvalues
    above ``mp_edge``. With ``randomize=True`` also ``alpha_random`` and ``n_spikes_random``: the same
    for the layer with its entries shuffled (:func:`shuffle_weights`); a trained layer has spikes and a
    smaller α, its shuffled copy has (almost) none — the edge is an asymptotic, so a random copy
    may show one or two eigenvalues just above it (Tracy–Widom fluctuations, or a nonzero mean).

    Martin & Mahoney 2018 (arXiv 1810.01075); Clauset et al. 2009 (arXiv 0706.1062).
    """
    check_choice(conv, "conv", CONV_CONVENTIONS)
    matrices = weight_matrices(model)
    if not matrices:
        raise ValueError(f"{type(model).__name__} has no nn.Linear / nn.Conv / "
                         "nn.MultiheadAttention weights to report on.")
    warn_skipped(model, "layer_report", matrices)
    gen = torch.Generator().manual_seed(int(seed))
    rows = []
    for mat in _progress(matrices, enabled=progress, desc="layer report"):
        w = mat.weight().to(torch.float64)
        ev = esd(w, conv=conv)
        n_rows, n_cols = esd_matrix_shape(w, conv)
        sigma2 = float(w.var(unbiased=False))
        edge = marchenko_pastur_edges(n_rows, n_cols, sigma2)[1]
        fit = _safe_fit(ev, alpha_range)
        row = {
            "name": mat.name, "type": mat.kind, "shape": tuple(w.shape),
            "n_eigs": int(ev.numel()),
            "alpha": fit.alpha if fit else math.nan, "xmin": fit.xmin if fit else math.nan,
            "ks": fit.ks if fit else math.nan, "n_tail": fit.n_tail if fit else 0,
            "spectral_norm": float(ev.max()), "stable_rank": stable_rank(ev),
            "frobenius": float(ev.sum()), "effective_rank": effective_rank(ev),
            "mp_edge": edge, "n_spikes": int((ev > edge).sum()),
        }
        if randomize:
            w_rand = w.reshape(-1)[torch.randperm(w.numel(), generator=gen).to(w.device)]
            ev_rand = esd(w_rand.reshape(w.shape), conv=conv)
            fit_rand = _safe_fit(ev_rand, alpha_range)
            row["alpha_random"] = fit_rand.alpha if fit_rand else math.nan
            row["n_spikes_random"] = int((ev_rand > edge).sum())
        rows.append(row)
    return pd.DataFrame(rows)


# ``randomized`` was renamed to a verb that says what it does; the old name works for one release.
__getattr__ = moved(__name__, {"randomized": "toolkit.spectra:shuffle_weights"})


# ------------------------------------------------------------------------------ path-norms

_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_ALLOWED_NONLINEAR = ("relu", "relu_")
_REJECTED = ("gelu", "tanh", "sigmoid", "elu", "selu", "silu", "softplus", "leaky_relu", "erf",
             "softmax", "log_softmax", "hardtanh", "mish", "layer_norm", "group_norm",
             "instance_norm", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
             "sub", "rsub", "neg", "abs", "max", "min", "exp", "log")


def _pool_args(args, kwargs) -> dict:
    out = {"kernel_size": None, "stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
           "return_indices": False}
    out.update(zip(_POOL_ARGS, args[1:]))
    out.update({k: v for k, v in kwargs.items() if k in out})
    return out


def _n_tuple(v, d: int) -> tuple:
    return tuple(v) if isinstance(v, list | tuple) else (v,) * d


class _PathNormMode(torch.overrides.TorchFunctionMode):
    r"""Runs a forward pass of Gonon et al.'s transformed network: ReLU ↦ identity, max-pooling ↦
    sum over the pooling window, average pooling (edge weights 1/k) ↦ weights (1/k)^p, batch norm
    (eval: the per-channel affine map a·x + c) ↦ |a|^p·x + |c|^p. Linear/conv weights are
    transformed on a copy of the model beforehand; everything else passes through, except the
    operations listed in ``_REJECTED`` (not a DAG-ReLU network), which raise."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        p = self.p
        if name in _ALLOWED_NONLINEAR:
            return args[0]
        if name in ("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
                    "avg_pool3d"):
            d = int(name[-2])
            a = _pool_args(args, kwargs)
            if name.startswith("avg") and not kwargs.get("count_include_pad", True):
                raise ValueError("path_norm: avg-pooling with count_include_pad=False has "
                                 "input-dependent weights; use count_include_pad=True.")
            if any(x != 1 for x in _n_tuple(a["dilation"] if name.startswith("max") else 1, d)):
                raise ValueError("path_norm does not support dilated max-pooling.")
            if a["return_indices"]:
                raise ValueError("path_norm does not support max-pooling with return_indices.")
            k = _n_tuple(a["kernel_size"], d)
            size = math.prod(k)
            pool = getattr(F, f"avg_pool{d}d")
            # max-pool: every window entry is an edge of weight 1, paths through it add up (sum);
            # avg-pool: weight 1/size per edge, so the transformed edge weight is size^-p.
            factor = size if name.startswith("max") else size ** (1.0 - p)
            out = pool(args[0], k, a["stride"] or k, a["padding"], a["ceil_mode"], True)
            return out * factor
        if name.startswith("adaptive_avg_pool"):
            x, out_size = args[0], _n_tuple(args[1] if len(args) > 1 else kwargs["output_size"],
                                            int(name[-2]))
            in_size = x.shape[-len(out_size):]
            if any(o is not None and i % o for i, o in zip(in_size, out_size)):
                raise ValueError("path_norm: adaptive average pooling is supported when the input "
                                 "size is a multiple of the output size.")
            size = math.prod(i // (o or i) for i, o in zip(in_size, out_size))
            return func(*args, **kwargs) * size ** (1.0 - p)
        if name == "batch_norm":
            x, mean, var = args[0], args[1], args[2]
            names = ("weight", "bias", "training", "momentum", "eps")
            a = dict(zip(names, args[3:]))
            a.update({k: v for k, v in kwargs.items() if k in names})
            if a.get("training", False) or mean is None:
                raise ValueError("path_norm needs batch norm in eval mode (running statistics): "
                                 "its layer is then a fixed affine map.")
            scale = (var + a.get("eps", 1e-5)).rsqrt()
            if a.get("weight") is not None:
                scale = scale * a["weight"]
            shift = -mean * scale + (a["bias"] if a.get("bias") is not None else 0.0)
            shape = (1, -1) + (1,) * (x.ndim - 2)
            return x * scale.abs().pow(p).view(shape) + shift.abs().pow(p).view(shape)
        if name in _REJECTED:
            raise ValueError(f"path_norm is defined for DAG ReLU networks (Linear/Conv, ReLU, "
                             f"identity, max/avg-pooling, eval batch norm, skip additions); the "
                             f"model calls {name!r}.")
        return func(*args, **kwargs)


def _fold_batch_norms_(model: nn.Module) -> None:
    """Fold every eval-mode batch norm that directly follows a Linear/Conv inside an
    ``nn.Sequential`` into that layer (``W <- a W``, ``b <- a (b - mu) + beta``) and replace it by
    the identity. The network function is unchanged; the path-norm is that of the folded layer."""
    bn_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for prev, cur in zip(names, names[1:]):
            layer, bn = seq._modules[prev], seq._modules[cur]
            if not (isinstance(layer, _LAYER_TYPES) and isinstance(bn, bn_types)
                    and bn.running_mean is not None and getattr(layer, "weight_scale", None) is None):
                continue
            with torch.no_grad():
                a = (bn.running_var + bn.eps).rsqrt()
                if bn.weight is not None:
                    a = a * bn.weight
                shift = (bn.bias if bn.bias is not None else 0.0) - a * bn.running_mean
                bias = layer.bias if layer.bias is not None else torch.zeros_like(a)
                new_bias = a * bias + shift
                layer.weight.mul_(a.view(-1, *([1] * (layer.weight.ndim - 1))))
                layer.bias = nn.Parameter(new_bias.to(layer.weight.dtype))
            seq._modules[cur] = nn.Identity()


def _transformed_copy(model: nn.Module, p: float) -> nn.Module:
    """A copy with every Linear/Conv weight and bias replaced by its entry-wise |.|^p (pruning
    masks applied first; NTK-parameterisation scales raised to the power p as well)."""
    out = _deepcopy(model).eval()
    for module in out.modules():
        if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
            torch.nn.utils.prune.remove(module, "weight")
    _fold_batch_norms_(out)
    with torch.no_grad():
        for _, module in weight_layers(out):
            module.weight.copy_(module.weight.abs().pow(p))
            if module.bias is not None:
                module.bias.copy_(module.bias.abs().pow(p))
            for attr in ("weight_scale", "bias_scale"):
                if isinstance(getattr(module, attr, None), int | float):
                    setattr(module, attr, abs(getattr(module, attr)) ** p)
    return out


def path_norm(model: nn.Module, input_shape: tuple[int, ...], *, p: float = 1.0,
              dtype: torch.dtype = torch.float64) -> float:
    r"""The :math:`L^p` path-norm :math:`\|\Phi(\theta)\|_p` of a DAG ReLU network, in one forward pass.

    Gonon, Brisebarre, Riccietti & Gribonval (ICLR 2024, arXiv 2310.01225): the path-lifting
    :math:`\Phi(\theta)` has one coordinate per path of the network's graph — from an input or
    from a hidden/output neuron's bias (the bias is then the path's first factor) to an output —
    equal to the product of the weights along it (max-pooling and skip edges weigh 1, average
    pooling 1/k). An eval-mode batch norm is an affine map: one that directly follows a
    Linear/Conv in an ``nn.Sequential`` is folded into that layer first (the network function is
    unchanged; the path-norm is the folded layer's), any other one counts as a layer of
    per-neuron affine maps :math:`a\,x + c` (weight :math:`a`, bias :math:`c`). Then

    .. math:: \|\Phi(\theta)\|_p^p = \big\| R_{|\theta|^p}(\mathbf 1) \big\|_1 ,

    the output of the network with every weight and bias replaced by :math:`|\cdot|^p`, ReLUs by
    the identity and each max-pooling neuron by the sum of its window (paths through a max-pool
    neuron go through every input of its window), fed the all-ones input of ``input_shape``
    (without the batch dimension). Every term is non-negative, so the pass is exact.

    Properties (tested): invariant under the network's rescaling symmetry (a hidden ReLU neuron's
    incoming weights and bias times :math:`\lambda>0`, its outgoing weights over :math:`\lambda`);
    :math:`\|R_\theta(x)\|_1 \le \|\Phi(\theta)\|_1 \max(\|x\|_\infty, 1)`; for a layered net
    :math:`\|\Phi\|_1 \le d_{out}\prod_\ell \|W_\ell\|_{\infty\to\infty}` and, without biases,
    :math:`\|\Phi\|_2 \le \prod_\ell \|W_\ell\|_F`. Operations outside the paper's class (GELU,
    tanh, layer norm, products of activations, ...) raise. Runs on a copy in ``dtype`` (float64:
    the sum over exponentially many paths overflows float32 in deep nets less soon).
    """
    check_module(model)
    check_positive(p, "p")
    if not isinstance(input_shape, tuple | list | torch.Size) or not all(
            isinstance(s, int) and s > 0 for s in input_shape):
        raise ValueError(f"input_shape must be the shape of one input without the batch "
                         f"dimension, e.g. (64,) or (1, 8, 8); got {input_shape!r}.")
    net = _transformed_copy(model, float(p)).to(dtype=dtype, device="cpu")
    with torch.no_grad(), _PathNormMode(float(p)):
        out = net(torch.ones(1, *input_shape, dtype=dtype))
    total = float(out.sum())
    if not math.isfinite(total) or float(out.min()) < 0:
        raise ValueError("path_norm: the transformed forward pass gave a negative or non-finite "
                         "value; the model uses an operation outside DAG ReLU networks.")
    return total ** (1.0 / p)


def rescale_neurons(model: nn.Module, layer: str, scales) -> nn.Module:
    r"""A copy of ``model`` with hidden neuron :math:`j` of the Linear layer ``layer`` rescaled:
    its incoming weights and bias times ``scales[j]`` > 0, its outgoing weights (the columns of the
    next Linear layer in ``weight_layers`` order) divided by it. For a ReLU between the two layers
    the function is unchanged (:math:`\mathrm{relu}(\lambda z) = \lambda\,\mathrm{relu}(z)`); the
    path-norm is unchanged; per-layer norms are not. This is the neuron-wise symmetry that
    :func:`toolkit.landscape.balanced_rescale` (one α per layer) is the uniform case of."""
    out = copy.deepcopy(model)
    layers = list(weight_layers(out))
    names = [n for n, _ in layers]
    if layer not in names or names.index(layer) == len(names) - 1:
        raise ValueError(f"layer must name a weight layer followed by another; got {layer!r}, "
                         f"layers are {names}.")
    i = names.index(layer)
    first, second = layers[i][1], layers[i + 1][1]
    if not isinstance(first, nn.Linear) or not isinstance(second, nn.Linear):
        raise TypeError("rescale_neurons handles consecutive nn.Linear layers.")
    s = torch.as_tensor(scales, dtype=first.weight.dtype)
    if s.shape != (first.out_features,) or bool((s <= 0).any()):
        raise ValueError(f"scales must be {first.out_features} positive numbers.")
    with torch.no_grad():
        first.weight.mul_(s[:, None])
        if first.bias is not None:
            first.bias.mul_(s)
        second.weight.div_(s[None, :])
    return out


def operator_norm_product(model: nn.Module) -> float:
    r""":math:`\prod_\ell \|W_\ell\|_2` over the weight layers (conv weights as ``(out, in·k)``
    matrices): the layer-wise capacity term that the path-norm refines (not rescaling-invariant)."""
    return math.prod(float(torch.linalg.matrix_norm(
        effective_weight(m).reshape(effective_weight(m).shape[0], -1).double(), 2))
        for _, m in weight_layers(model))


class PathNormCallback:
    """A :func:`toolkit.train.fit` callback recording ``path_norm_<p>`` for each ``p`` and
    ``operator_product`` (:func:`operator_norm_product`) at every call."""

    def __init__(self, input_shape: tuple[int, ...], ps=(1.0, 2.0)):
        self.input_shape, self.ps = tuple(input_shape), tuple(ps)

    def __call__(self, epoch, model, history) -> dict:
        out = {f"path_norm_{p:g}": path_norm(model, self.input_shape, p=p) for p in self.ps}
        out["operator_product"] = operator_norm_product(model)
        return out
