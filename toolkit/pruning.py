r"""Pruning as matrix sparsification: four pruning rules on ``torch.nn.utils.prune``, sparsity
bookkeeping, spectral errors of the pruned weights, and lottery tickets.

The seed paper, Yao, Yu & Koutis 2023, "Neural Network Pruning as Spectrum Preserving Process"
(arXiv 2307.08982), argues that pruning a dense or convolutional layer is a matrix sparsification
problem: a good pruned weight :math:`W_s` keeps the spectrum (singular values and top singular
subspaces) of :math:`W`. The rules here:

* ``"magnitude"`` — zero the smallest :math:`|w_{ij}|` (the classic baseline);
* ``"random"`` — zero uniformly random entries (the control every comparison needs, Blalock et
  al. 2020, arXiv 2003.03033);
* ``"l2_sampling"`` — classical element-wise L2 sampling: keep an entry with probability
  :math:`\propto w_{ij}^2` and rescale the kept entries so that :math:`\mathbb E[W_s] = W`
  (Achlioptas & McSherry, "Fast computation of low-rank matrix approximations", 2001/2007;
  Drineas & Zouzias, arXiv 1006.0407), the textbook sparsifier with an operator-norm guarantee.
  It is *not* the algorithm of Yao, Yu & Koutis (arXiv 2307.08982). This rule was called
  ``"spectral"`` before; that name is still accepted for one release, with a
  ``DeprecationWarning``;
* ``"structured"`` — zero whole output rows / channels with the smallest L2 norm.

Masks are installed with ``torch.nn.utils.prune.custom_from_mask`` (forward pre-hooks computing
``weight = weight_orig * weight_mask``) and removed with ``prune.remove`` (:func:`make_permanent`).
They are computed here, not by torch's ``L1Unstructured``/``RandomUnstructured``, so that all four
rules share one meaning of ``amount`` (the exact final sparsity), compose with earlier masks, and
take a ``seed``.

Lottery tickets: :func:`lottery_ticket` runs iterative magnitude pruning with rewinding (Frankle
& Carbin 2019, arXiv 1803.03635; Frankle et al. 2020, arXiv 1912.05671) beside the
random-reinitialisation control.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ._checks import check_choice, check_module, check_positive_int
from ._deprecated import warn_renamed
from ._sampling import inclusion_probabilities, systematic_sample
from .spectra import (
    WeightMatrix,
    effective_weight,
    esd,
    powerlaw_alpha,
    warn_skipped,
    weight_layers,
    weight_matrices,
)
from .utils import progress as _progress

__all__ = ["METHODS", "ALL_METHODS", "SCOPES", "prunable_layers", "prunable_matrices", "prune",
           "sparsity", "make_permanent",
           "spectral_error", "spectral_errors", "sparsity_sweep", "lottery_ticket",
           "LotteryResult", "inclusion_probabilities", "systematic_sample", "RETRAIN_MODES",
           "retraining_modes"]

METHODS = ("magnitude", "random", "l2_sampling", "structured")
# Rules outside METHODS (so that sweeps over METHODS, e.g. notebook 04's, are unchanged).
ALL_METHODS = (*METHODS, "l1_sampling")
SCOPES = ("global", "layer")
# Old method names kept for one release (old -> new); ``"spectral"`` was classical element-wise L2
# sampling, not the spectrum-preserving algorithm of arXiv 2307.08982.
_RENAMED_METHODS = {"spectral": "l2_sampling"}


def _method(method) -> str:
    """``method`` checked against :data:`METHODS`, an old name mapped (with a warning) to its new one."""
    if isinstance(method, str) and method in _RENAMED_METHODS:
        new = _RENAMED_METHODS[method]
        warn_renamed(f'method="{method}"', f'method="{new}" (classical element-wise L2 sampling)')
        return new
    return check_choice(method, "method", ALL_METHODS)


# ------------------------------------------------------------------------------------- layers


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in patterns)


def prunable_layers(model: nn.Module, exclude: Iterable[str] = ()) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs of the ``nn.Linear`` / ``nn.Conv*`` layers :func:`prune` acts
    on, except modules named in ``exclude`` (a name also excludes its submodules, e.g.
    ``"head"``). :func:`prune` also prunes the query/key/value projections of
    ``nn.MultiheadAttention``, which are not layers of their own: :func:`prunable_matrices` lists
    everything it acts on."""
    if isinstance(exclude, str):
        exclude = (exclude,)
    exclude = tuple(exclude)
    layers = [(n, m) for n, m in weight_layers(model) if not _matches(n, exclude)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no prunable layers (nn.Linear / nn.Conv) "
                         f"left after exclude={exclude!r}; pass a model with such layers.")
    return layers


def prunable_matrices(model: nn.Module, exclude: Iterable[str] = ()) -> list[WeightMatrix]:
    """The weight matrices :func:`prune`, :func:`sparsity` and :func:`spectral_errors` act on
    (:func:`toolkit.spectra.weight_matrices`): every ``nn.Linear`` / ``nn.Conv*`` weight and the
    query, key and value blocks of every ``nn.MultiheadAttention`` (``"<name>.q"``, ``".k"``,
    ``".v"``; ``"<name>.out_proj"`` is a Linear), except those named in ``exclude`` (a module
    name also excludes everything under it: ``"enc.layers.0.self_attn"`` leaves q, k, v and
    out_proj dense, ``"enc.layers.0.self_attn.q"`` only q)."""
    if isinstance(exclude, str):
        exclude = (exclude,)
    exclude = tuple(exclude)
    mats = [m for m in weight_matrices(model) if not _matches(m.name, exclude)]
    if not mats:
        raise ValueError(f"{type(model).__name__} has no prunable layers (nn.Linear / nn.Conv / "
                         f"nn.MultiheadAttention) left after exclude={exclude!r}; pass a model "
                         "with such layers.")
    return mats


def _pruned_params(module: nn.Module) -> list[str]:
    """Names of the module's own parameters that carry a ``torch.nn.utils.prune`` mask."""
    return [b[:-5] for b, _ in module.named_buffers(recurse=False)
            if b.endswith("_mask") and hasattr(module, b[:-5] + "_orig")]


def _is_pruned(module: nn.Module, param: str = "weight") -> bool:
    return hasattr(module, param + "_orig") and hasattr(module, param + "_mask")


def _install(module: nn.Module, factor: torch.Tensor, param: str = "weight") -> None:
    """Multiply the mask of ``module.<param>`` by ``factor`` (0 = prune, 1 = keep, 1/π = keep and
    rescale).

    ``prune.custom_from_mask`` installs the mask and hook on first use; on an already pruned
    parameter it stacks a ``PruningContainer`` whose combined mask is ``old_mask * factor``. It
    works on any named parameter, e.g. an ``nn.MultiheadAttention``'s bare ``in_proj_weight``
    (the attention's own forward pre-hook recomputes it from ``in_proj_weight_orig``).
    """
    torch_prune.custom_from_mask(module, param, factor.to(getattr(module, param).dtype))


def _install_matrices(mats: list[WeightMatrix], factors: list[torch.Tensor]) -> None:
    """Install one mask factor per matrix; q/k/v blocks of one ``in_proj_weight`` are assembled
    into one mask for that parameter (rows of blocks not in ``mats`` keep factor 1)."""
    groups: dict = {}
    for mat, factor in zip(mats, factors):
        key = (id(mat.module), mat.param)
        if key not in groups:
            shape = getattr(mat.module, mat.param).shape
            groups[key] = [mat.module, mat.param, torch.ones(shape, dtype=factor.dtype,
                                                             device=factor.device)]
        if mat.rows is None:
            groups[key][2] = factor
        else:
            groups[key][2][mat.rows] = factor
    for module, param, factor in groups.values():
        _install(module, factor, param)


def _refresh_out_proj(mha: nn.Module, args) -> None:
    """Forward pre-hook of an ``nn.MultiheadAttention`` whose ``out_proj`` is pruned: attention
    reads ``out_proj.weight`` without calling ``out_proj``, so the pruning hook of ``out_proj``
    never runs and its ``weight`` would go stale once ``weight_orig`` is trained; this runs it."""
    for hook in list(mha.out_proj._forward_pre_hooks.values()):
        if isinstance(hook, torch_prune.BasePruningMethod):
            hook(mha.out_proj, args)


def _attach_refresh_hooks(model: nn.Module) -> None:
    for module in model.modules():
        if (isinstance(module, nn.MultiheadAttention) and _is_pruned(module.out_proj)
                and _refresh_out_proj not in module._forward_pre_hooks.values()):
            module.register_forward_pre_hook(_refresh_out_proj)


def _copy_masks(source: nn.Module, target: nn.Module, exclude: Iterable[str]) -> None:
    """Install on ``target`` the kept/pruned pattern (0/1) of ``source``'s masks, matrix by matrix."""
    sources = {m.name: m for m in prunable_matrices(source, exclude)}
    mats, factors = [], []
    for mat in prunable_matrices(target, exclude):
        src = sources[mat.name]
        if not _is_pruned(src.module, src.param):
            continue
        mask = getattr(src.module, src.param + "_mask")
        mask = mask if src.rows is None else mask[src.rows]
        mats.append(mat)
        factors.append((mask != 0).to(mat.weight().device, torch.float64))
    _install_matrices(mats, factors)
    _attach_refresh_hooks(target)


# ---------------------------------------------------------------------------------- pruning


def _check_amount(amount) -> float:
    if isinstance(amount, bool) or not isinstance(amount, int | float | np.floating | np.integer):
        raise TypeError(f"amount must be a number in [0, 1) (the target sparsity), got "
                        f"{type(amount).__name__}.")
    amount = float(amount)
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1): the fraction of prunable weights that are "
                         f"zero afterwards; got {amount}. (amount=1 would remove every weight.)")
    return amount


def _select_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` smallest scores (exactly ``k``, ties broken by position)."""
    out = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        out[torch.topk(scores, k, largest=False, sorted=False).indices] = True
    return out


def _prune_entries(weights: list[torch.Tensor], k_new: int, method: str,
                   generator: torch.Generator | None) -> list[torch.Tensor]:
    """Mask factors (0 / 1 / 1/π) for unstructured pruning of ``k_new`` more entries of a pool of
    layers; entries that are already zero stay zero and are not counted again."""
    flat = torch.cat([w.reshape(-1).to(torch.float64).cpu() for w in weights])
    alive = flat != 0
    idx = torch.nonzero(alive).flatten()
    values = flat[idx]
    factor = torch.zeros_like(flat)
    if method in ("l2_sampling", "l1_sampling"):
        q = values.square() if method == "l2_sampling" else values.abs()
        pi = inclusion_probabilities(q, len(idx) - k_new)
        keep = systematic_sample(pi, generator)
        factor[idx[keep]] = 1.0 / pi[keep]
    else:
        if method == "magnitude":
            scores = values.abs()
        else:  # random
            scores = torch.rand(len(idx), generator=generator, dtype=torch.float64)
        drop = _select_smallest(scores, k_new)
        factor[idx[~drop]] = 1.0
    out, start = [], 0
    for w in weights:
        out.append(factor[start:start + w.numel()].reshape(w.shape).to(w.device))
        start += w.numel()
    return out


def _prune_rows(weights: list[torch.Tensor], target_zeros: list[int] | int,
                scope: str) -> list[torch.Tensor]:
    """Mask factors zeroing whole output rows (dim 0) with the smallest L2 norm.

    ``scope="layer"``: ``target_zeros[l]`` is the number of rows of layer ``l`` that must be zero.
    ``scope="global"``: rows of all layers are ranked by RMS norm (L2 norm / sqrt(row size), so that
    layers of different fan-in compare) and zeroed until at least ``target_zeros`` weights are zero.
    """
    rows = [w.reshape(w.shape[0], -1).to(torch.float64).cpu() for w in weights]
    factors = [torch.ones_like(r) for r in rows]
    if scope == "layer":
        for r, f, k in zip(rows, factors, target_zeros):
            norms = r.norm(dim=1)
            already = int((norms == 0).sum())
            drop = _select_smallest(norms, max(k, already))
            f[drop] = 0.0
    else:
        rms = torch.cat([r.norm(dim=1) / math.sqrt(r.shape[1]) for r in rows])
        nonzero_in_row = torch.cat([(r != 0).sum(dim=1) for r in rows])
        need = target_zeros - sum(int((r == 0).sum()) for r in rows)
        dropped = rms == 0
        if need > 0:
            order = torch.argsort(rms, stable=True)
            gain = torch.cumsum(nonzero_in_row[order], 0)  # zeros added by dropping rows in order
            n_rows = int(torch.searchsorted(gain, torch.tensor(need, dtype=gain.dtype))) + 1
            dropped[order[:n_rows]] = True
        start = 0
        for f in factors:
            f[dropped[start:start + f.shape[0]]] = 0.0
            start += f.shape[0]
    return [f.reshape(w.shape).to(w.device) for f, w in zip(factors, weights)]


def prune(model: nn.Module, *, method: str = "magnitude", amount: float,
          scope: str = "global", seed: int | None = None,
          exclude: Iterable[str] = ()) -> nn.Module:
    r"""Prune every weight matrix of ``model`` in place (masks + hooks of ``torch.nn.utils.prune``).

    The matrices are those of :func:`prunable_matrices`: every Linear/Conv weight and the query,
    key and value projections of every ``nn.MultiheadAttention`` (three matrices, the blocks of
    its bare ``in_proj_weight`` Parameter, masked with ``prune.custom_from_mask(attention,
    "in_proj_weight", mask)``; ``out_proj`` as the Linear it is, with a forward pre-hook on the
    attention that recomputes ``out_proj.weight``, which attention reads without calling
    ``out_proj``). Any other weight tensor of two or more dimensions (embeddings, ...) is left
    dense and named in one :class:`toolkit.spectra.SkippedParametersWarning`; 1-D parameters
    (biases, norm scales) are never pruned.

    ``amount`` is the **target sparsity**: afterwards exactly ``round(amount * n)`` of the ``n``
    prunable weights are zero — over all matrices together (``scope="global"``) or in every
    matrix (``scope="layer"``; q, k and v each count as one). Pruning an already pruned model
    continues from its current zeros, so iterating ``amount = 1 - 0.8**r`` gives the
    lottery-ticket schedule; asking for less sparsity than the model already has is an error.
    ``exclude`` names modules (or matrices, ``"attn.q"``) to leave dense (e.g. ``("head",)``).

    Methods (scores use the effective weight :math:`W`, see :func:`toolkit.spectra.effective_weight`):

    * ``"magnitude"``: zero the smallest :math:`|w_{ij}|`.
    * ``"random"``: zero uniformly random entries (``seed``).
    * ``"l2_sampling"`` (formerly ``"spectral"``, still accepted with a ``DeprecationWarning``):
      classical element-wise L2 sampling. Keep entry :math:`ij` with probability
      :math:`\pi_{ij} = \min(1, c\,w_{ij}^2)`, :math:`\sum\pi = ` the number kept
      (:func:`inclusion_probabilities`, sampled with exactly that many survivors by
      :func:`systematic_sample`), and rescale survivors to :math:`w_{ij}/\pi_{ij}`, so
      :math:`\mathbb E[W_s] = W`: the sparsifier is an unbiased estimate of the layer, and
      :math:`\|W_s - W\|_2` is controlled by matrix concentration (Achlioptas & McSherry 2007;
      Drineas & Zouzias, arXiv 1006.0407). It illustrates the "spectrum preserving" view of Yao,
      Yu & Koutis (arXiv 2307.08982) but is not their algorithm. Unbiased is not small: at high
      sparsity its operator-norm error exceeds random pruning's (notebook 04, §2).
      *Where the rescaling lives*: in the mask, whose kept entries hold
      :math:`1/\pi_{ij}` instead of 1. The forward hook multiplies ``weight_orig`` by it, so the
      layer computes with :math:`W_s`; :func:`make_permanent` (``prune.remove``) writes
      ``weight_orig * weight_mask`` into ``weight``, so the rescaling survives it; and
      ``weight_orig`` still holds the unpruned trained weights for comparisons and rewinding.
      Caveats: ``torch.nn.utils.prune``'s own functions treat only mask entries equal to 1 as
      unpruned, so re-prune such a model with this function (it treats every nonzero weight as
      alive), and gradients through a rescaled mask are multiplied by :math:`1/\pi`; call
      :func:`make_permanent` before fine-tuning if plain SGD on :math:`W_s` is wanted.
    * ``"l1_sampling"`` (in :data:`ALL_METHODS`, not :data:`METHODS`): the same with
      :math:`\pi_{ij} = \min(1, c\,|w_{ij}|)`. The water-filling makes it a *hybrid*: the largest
      entries (:math:`c|w_{ij}| \ge 1`) are kept deterministically and unscaled, as magnitude
      pruning would, and the rest are sampled in proportion to :math:`|w_{ij}|` and rescaled by
      :math:`1/\pi_{ij}` — the "deterministic large entries + :math:`\ell_1` sampling of the
      small ones" kind of sparsifier studied by Achlioptas & McSherry, Drineas & Zouzias and
      Kundu & Drineas. It is **not** the algorithm of Yao, Yu & Koutis (arXiv 2307.08982), whose
      exact procedure we could not check; that paper's method is not implemented here.
    * ``"structured"``: zero whole output rows / channels (``weight[i]``) with the smallest L2
      norm. Per layer, ``round(amount * rows)`` rows (exact in rows). Globally, rows are ranked by
      RMS norm and zeroed until at least ``round(amount * n)`` weights are zero (the nearest
      achievable sparsity at or above ``amount``).

    Returns ``model`` (pruned in place). Compare methods fairly — same sparsity, same layers,
    several seeds, with and without fine-tuning (Blalock et al. 2020, arXiv 2003.03033).
    """
    check_module(model)
    method = _method(method)
    check_choice(scope, "scope", SCOPES)
    amount = _check_amount(amount)
    if seed is not None:
        check_positive_int(seed, "seed (or None)", allow_zero=True)
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    mats = prunable_matrices(model, exclude)
    weights = [m.weight() for m in mats]
    names = [m.name for m in mats]
    sizes = [w.numel() for w in weights]
    zeros = [int((w == 0).sum()) for w in weights]

    def too_sparse(where, have, n):
        raise ValueError(f"{where} already has sparsity {have / n:.4f} > amount={amount}; pruning "
                         "cannot restore weights. Pass amount >= the current sparsity.")

    if method == "structured":
        if scope == "layer":
            targets = [round(amount * w.shape[0]) for w in weights]
            for name, w, k in zip(names, weights, targets):
                zero_rows = int((w.reshape(w.shape[0], -1).abs().sum(1) == 0).sum())
                if zero_rows > k:
                    too_sparse(f"layer {name!r}", zero_rows, w.shape[0])
            factors = _prune_rows(weights, targets, "layer")
        else:
            target = round(amount * sum(sizes))
            if sum(zeros) > target:
                too_sparse("the model", sum(zeros), sum(sizes))
            factors = _prune_rows(weights, target, "global")
    elif scope == "layer":
        factors = []
        for name, w, n, z in zip(names, weights, sizes, zeros):
            k = round(amount * n)
            if z > k:
                too_sparse(f"layer {name!r}", z, n)
            factors += _prune_entries([w], k - z, method, generator)
    else:
        k = round(amount * sum(sizes))
        if sum(zeros) > k:
            too_sparse("the model", sum(zeros), sum(sizes))
        factors = _prune_entries(weights, k - sum(zeros), method, generator)

    _install_matrices(mats, factors)
    _attach_refresh_hooks(model)
    warn_skipped(model, "prune")
    return model


def sparsity(model: nn.Module, exclude: Iterable[str] = ()) -> pd.Series:
    """Fraction of zero weights per prunable matrix (:func:`prunable_matrices`: layers, and
    ``"<attention>.q"``/``".k"``/``".v"``) and over all of them (index ``"global"``). Weight tensors
    it does not count are named in one :class:`toolkit.spectra.SkippedParametersWarning`.

    Counts zeros of the effective weights, so it reads the same before and after
    :func:`make_permanent`. ``sparsity(model)["global"]`` is the number to report.
    """
    mats = prunable_matrices(model, exclude)
    warn_skipped(model, "sparsity")
    values, zeros, total = {}, 0, 0
    for mat in mats:
        w = mat.weight()
        z = int((w == 0).sum())
        values[mat.name] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    values["global"] = zeros / total
    return pd.Series(values, name="sparsity")


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove the pruning reparametrisation (``prune.remove``): ``weight`` becomes the plain
    parameter ``weight_orig * weight_mask`` (rescaling included) and the hooks are gone. The
    model's function is unchanged. Returns ``model``."""
    check_module(model)
    for module in model.modules():
        for param in _pruned_params(module):
            torch_prune.remove(module, param)
        hooks = module._forward_pre_hooks
        for key in [k for k, h in hooks.items() if h is _refresh_out_proj]:
            del hooks[key]
    return model


# --------------------------------------------------------------------------- spectral errors


def _as_matrix(w: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(w, nn.Module):
        w = effective_weight(w)
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or a layer, got {type(w).__name__}.")
    if w.ndim < 2:
        raise ValueError(f"{name} must be a weight matrix (>= 2 dims), got shape {tuple(w.shape)}.")
    return w.detach().reshape(w.shape[0], -1).to(torch.float64).cpu()


def _largest_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest principal angle (degrees) between the column spans of orthonormal ``a`` and ``b``."""
    cos = torch.linalg.svdvals(a.T @ b).clamp(max=1.0)
    return math.degrees(math.acos(float(cos.min())))


def spectral_error(w: torch.Tensor, w_pruned: torch.Tensor, *, k: int = 5) -> dict:
    r"""How much of a layer's spectrum survives pruning.

    For :math:`W` and its pruned :math:`W_s` (conv weights are read as ``(out, in·k·k)`` matrices):

    * ``operator``: :math:`\|W - W_s\|_2 / \|W\|_2`, the relative operator-norm error that matrix
      sparsification bounds (Achlioptas & McSherry 2007; Drineas & Zouzias, arXiv 1006.0407);
    * ``frobenius``: :math:`\|W - W_s\|_F / \|W\|_F`;
    * ``sv_drift``: :math:`\|\sigma(W) - \sigma(W_s)\|_2 / \|\sigma(W)\|_2` over the sorted singular
      values (≤ ``frobenius`` by Mirsky's inequality), and ``sv_drift_max``:
      :math:`\max_i |\sigma_i(W) - \sigma_i(W_s)| / \sigma_1(W)` (≤ ``operator`` by Weyl's);
    * ``angle_left`` / ``angle_right``: the largest principal angle (degrees) between the top-``k``
      left / right singular subspaces of :math:`W` and :math:`W_s`; ``angle`` is the larger.

    Yao, Yu & Koutis (arXiv 2307.08982) read pruning quality off these quantities.
    """
    a, b = _as_matrix(w, "w"), _as_matrix(w_pruned, "w_pruned")
    if a.shape != b.shape:
        raise ValueError(f"w and w_pruned must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}.")
    if not isinstance(k, int) or not 1 <= k <= min(a.shape):
        raise ValueError(f"k must be an integer in [1, {min(a.shape)}], got {k!r}.")
    ua, sa, vha = torch.linalg.svd(a, full_matrices=False)
    ub, sb, vhb = torch.linalg.svd(b, full_matrices=False)
    norm2, normf = float(sa[0]), float(sa.norm())
    if norm2 == 0:
        raise ValueError("w is all zeros; its spectrum is empty.")
    angle_left = _largest_angle(ua[:, :k], ub[:, :k])
    angle_right = _largest_angle(vha[:k].T, vhb[:k].T)
    return {
        "operator": float(torch.linalg.matrix_norm(a - b, ord=2)) / norm2,
        "frobenius": float(torch.linalg.matrix_norm(a - b)) / normf,
        "sv_drift": float((sa - sb).norm()) / normf,
        "sv_drift_max": float((sa - sb).abs().max()) / norm2,
        "angle_left": angle_left, "angle_right": angle_right,
        "angle": max(angle_left, angle_right),
    }


def spectral_errors(dense: nn.Module, pruned: nn.Module, *, k: int = 5,
                    exclude: Iterable[str] = ()) -> pd.DataFrame:
    """:func:`spectral_error` for every prunable matrix (:func:`prunable_matrices`, attention
    q/k/v blocks included) of two copies of a model (matched by name), plus each pruned matrix's
    sparsity. One row per matrix; skipped weight tensors are named in one
    :class:`toolkit.spectra.SkippedParametersWarning`."""
    dense_mats = {m.name: m for m in prunable_matrices(dense, exclude)}
    warn_skipped(pruned, "spectral_errors")
    rows = []
    for mat in prunable_matrices(pruned, exclude):
        name = mat.name
        if name not in dense_mats:
            raise ValueError(f"layer {name!r} of the pruned model is not in the dense model; pass "
                             "two copies of the same architecture.")
        w, ws = dense_mats[name].weight(), mat.weight()
        kk = min(k, min(w.shape[0], w[0].numel()))
        rows.append({"name": name, "sparsity": float((ws == 0).float().mean()),
                     **spectral_error(w, ws, k=kk)})
    return pd.DataFrame(rows)


def _layer_alpha(module: nn.Module | torch.Tensor) -> float:
    try:
        return powerlaw_alpha(esd(module)).alpha
    except ValueError:
        return math.nan


def sparsity_sweep(model: nn.Module, data, *, methods: Iterable[str] = METHODS,
                   amounts: Iterable[float] = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95),
                   scope: str = "global", seed: int = 0, exclude: Iterable[str] = (),
                   k: int = 5, alphas: bool = True,
                   finetune: Callable[[nn.Module], object] | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """One-shot pruning of copies of a trained ``model`` at each sparsity with each method.

    Returns one row per (method, amount): ``sparsity`` (measured), ``acc`` and ``loss`` on ``data``
    (:func:`toolkit.train.evaluate`), the mean over layers of the :func:`spectral_error` columns
    (``operator``, ``frobenius``, ``sv_drift``, ``angle``), the worst layer's operator-norm error
    ``operator_max`` (a chain of layers is as good as its most damaged one) and, with
    ``alphas=True``, the power-law exponent of every layer (``alpha:<layer>``).
    ``finetune(model)`` is called on each pruned copy before evaluation if given (Blalock et al.,
    arXiv 2003.03033: report both). The input model is not modified.
    """
    from .train import evaluate  # the training core sits upstream of the analysis modules

    methods = [_method(m) for m in methods]
    amounts = [_check_amount(a) for a in amounts]
    grid = [(m, a) for m in methods for a in amounts]
    rows = []
    for method, amount in _progress(grid, enabled=progress, desc="pruning sweep"):
        pruned = copy.deepcopy(model)
        prune(pruned, method=method, amount=amount, scope=scope, seed=seed, exclude=exclude)
        if finetune is not None:
            finetune(pruned)
        errors = spectral_errors(model, pruned, k=k, exclude=exclude)
        row = {"method": method, "amount": amount,
               "sparsity": float(sparsity(pruned, exclude)["global"]),
               **evaluate(pruned, data),
               **errors[["operator", "frobenius", "sv_drift", "angle"]].mean().to_dict(),
               "operator_max": float(errors["operator"].max())}
        if alphas:
            for mat in prunable_matrices(pruned, exclude):
                row[f"alpha:{mat.name}"] = _layer_alpha(mat.weight())
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- lottery tickets


@dataclass
class LotteryResult:
    """Output of :func:`lottery_ticket`: ``history`` (one row per round), the final ``masks``
    (layer name → boolean tensor, True = kept) and the final trained ticket ``model``."""

    history: pd.DataFrame
    masks: dict = field(default_factory=dict)
    model: nn.Module | None = None


def _snapshot(model: nn.Module) -> dict:
    """Parameters and buffers by their unpruned names (``weight_orig`` is stored as ``weight``)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("_mask"):
            continue
        out[key[:-5] if key.endswith("_orig") else key] = value.detach().clone()
    return out


def _rewind_(model: nn.Module, snapshot: dict) -> None:
    """Load ``snapshot`` into ``model`` keeping its masks (pruned weights go to ``weight_orig``)."""
    with torch.no_grad():
        for key, value in model.state_dict(keep_vars=True).items():
            if key.endswith("_mask"):
                continue
            src = snapshot[key[:-5] if key.endswith("_orig") else key]
            value.copy_(src.to(value.device))
        for module in model.modules():
            for param in _pruned_params(module):
                setattr(module, param, getattr(module, param + "_orig")
                        * getattr(module, param + "_mask"))


def _metrics(result) -> dict:
    if isinstance(result, Mapping):
        return {str(k): float(v) for k, v in result.items()}
    try:
        return {"": float(result)}
    except (TypeError, ValueError) as err:
        raise TypeError("train_fn must return a number (e.g. test accuracy) or a dict of numbers, "
                        f"got {type(result).__name__}.") from err


def _columns(prefix: str, metrics: dict) -> dict:
    return {(prefix if k == "" else f"{prefix}_{k}"): v for k, v in metrics.items()}


def lottery_ticket(model_fn: Callable[[], nn.Module],
                   train_fn: Callable[[nn.Module, int], object], *, rounds: int,
                   rate: float = 0.2, rewind_epoch: int = 0, epochs: int,
                   scope: str = "global", exclude: Iterable[str] = (), control: bool = True,
                   seed: int = 0, progress: bool = True) -> LotteryResult:
    r"""Iterative magnitude pruning (IMP) with rewinding, and the random-reinitialisation control.

    Frankle & Carbin 2019 (arXiv 1803.03635): train, prune the smallest-magnitude fraction
    ``rate`` of the surviving weights, reset the survivors to their initial values
    :math:`\theta_0`, retrain; repeat. After round :math:`r` the sparsity is
    :math:`1-(1-\text{rate})^r`. A *winning ticket* trains to the dense accuracy, while the same
    mask with a fresh random initialisation (the ``control``) does worse. Frankle et al. 2020
    (arXiv 1912.05671): for larger nets / learning rates, rewind to the weights
    :math:`\theta_k` of epoch ``rewind_epoch`` = k instead of :math:`\theta_0` (linear mode
    connectivity makes IMP stable); Frankle & Carbin already note that at larger learning rates
    resetting to :math:`\theta_0` stops finding winning tickets.

    ``model_fn()`` builds a fresh model (its initialisation is drawn after
    ``torch.manual_seed(seed)``; the controls after other seeds). ``train_fn(model, epochs)``
    trains ``model`` in place for ``epochs`` epochs and returns a number (e.g. test accuracy) or a
    dict of numbers; with ``toolkit.train.fit``::

        def train_fn(model, epochs):
            hist = toolkit.train.fit(model, train, test=test, epochs=epochs, progress=False)
            return hist["test_acc"].iloc[-1]

    The dense run trains ``rewind_epoch`` epochs, takes the rewinding snapshot, then trains the
    remaining ``epochs - rewind_epoch``; every ticket and control trains ``epochs - rewind_epoch``
    epochs. Pruning is global magnitude pruning over the layers not in ``exclude`` (``scope``).

    Returns a :class:`LotteryResult` whose ``history`` has one row per round (0 = dense):
    ``round``, ``sparsity``, ``ticket`` (or ``ticket_<key>`` for dict results) and ``control``.
    """
    if not callable(model_fn) or not callable(train_fn):
        raise TypeError("model_fn and train_fn must be callables: model_fn() -> nn.Module, "
                        "train_fn(model, epochs) -> float | dict.")
    check_positive_int(rounds, "rounds")
    if not isinstance(rate, int | float) or not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1) (fraction of surviving weights pruned per "
                         f"round), got {rate!r}.")
    check_positive_int(epochs, "epochs")
    if not isinstance(rewind_epoch, int) or not 0 <= rewind_epoch < epochs:
        raise ValueError(f"rewind_epoch must be an integer in [0, epochs={epochs}), got "
                         f"{rewind_epoch!r}.")
    check_choice(scope, "scope", SCOPES)
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)

    torch.manual_seed(seed)
    model = model_fn()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_fn must return an nn.Module, got {type(model).__name__}.")
    prunable_matrices(model, exclude)  # fail early when there is nothing to prune
    if rewind_epoch > 0:
        train_fn(model, rewind_epoch)
    rewind_point = _snapshot(model)
    dense = _metrics(train_fn(model, epochs - rewind_epoch))
    history = [{"round": 0, "sparsity": 0.0, **_columns("ticket", dense)}]

    bar = _progress(range(1, rounds + 1), enabled=progress, desc="lottery rounds")
    for r in bar:
        target = 1.0 - (1.0 - rate) ** r
        prune(model, method="magnitude", amount=target, scope=scope, exclude=exclude)
        _rewind_(model, rewind_point)
        row = {"round": r, "sparsity": float(sparsity(model, exclude)["global"]),
               **_columns("ticket", _metrics(train_fn(model, epochs - rewind_epoch)))}
        if control:
            torch.manual_seed(seed + 1000 + r)
            fresh = model_fn()
            _copy_masks(model, fresh, exclude)
            row.update(_columns("control", _metrics(train_fn(fresh, epochs - rewind_epoch))))
        history.append(row)
    masks = {}
    for mat in prunable_matrices(model, exclude):
        if _is_pruned(mat.module, mat.param):
            mask = getattr(mat.module, mat.param + "_mask")
            masks[mat.name] = (mask if mat.rows is None else mask[mat.rows]).detach().cpu() != 0
    return LotteryResult(history=pd.DataFrame(history), masks=masks, model=model)


# ------------------------------------------------ rewinding vs fine-tuning (Renda et al. 2020)

RETRAIN_MODES = ("rewind_0", "rewind_k", "reinit", "finetune", "lr_rewind")


def retraining_modes(model_fn: Callable[[], nn.Module], train, test, *, lr: float, epochs: int,
                     rewind_epoch: int, rounds: int, rate: float = 0.2, schedule="step",
                     finetune_lr: float | None = None, modes: Iterable[str] = RETRAIN_MODES,
                     batch_size: int | None = None, momentum: float = 0.0,
                     scope: str = "global", exclude: Iterable[str] = (), seed: int = 0,
                     device="auto", progress: bool = True) -> pd.DataFrame:
    r"""Iterative magnitude pruning with five ways to retrain after each pruning step, at equal
    retraining epochs (Renda, Frankle & Carbin 2020, "Comparing Rewinding and Fine-tuning in
    Neural Network Pruning", arXiv 2003.02389; Frankle & Carbin 2019, arXiv 1803.03635).

    The original training runs ``epochs`` = :math:`T` epochs of SGD at ``lr`` times the schedule
    factor (``schedule`` as in :func:`toolkit.train.fit`; ``"step"``: ×0.1 at 50 % and 75 %),
    keeping :math:`\theta_0` and :math:`\theta_k` (epoch ``rewind_epoch`` = :math:`k`). Each mode
    then has its own lineage: start from the trained dense net; every round prunes the lineage's
    current weights by global magnitude to sparsity :math:`1-(1-\text{rate})^r` and retrains it
    for :math:`t = T-k` epochs:

    * ``"rewind_0"`` — the lottery ticket: survivors reset to :math:`\theta_0`;
    * ``"rewind_k"`` — weight rewinding: survivors reset to :math:`\theta_k` (Renda et al.'s
      "weight rewinding", Frankle et al. 2020's late rewinding);
    * ``"reinit"`` — the control: the mask of ``rewind_0`` at this round on a fresh
      initialisation (``torch.manual_seed(seed + 1000 + r)``);
    * ``"finetune"`` — keep the trained survivors and train them at the constant small rate
      ``finetune_lr`` (default: the schedule's last rate, Renda et al.'s fine-tuning);
    * ``"lr_rewind"`` — learning-rate rewinding: keep the trained survivors, replay the schedule's
      learning rates of epochs :math:`k..T-1` (Renda et al.'s proposal).

    Every mode but ``finetune`` trains with the learning rates of epochs :math:`k..T-1`, so the
    three weight-rewinding modes differ only in where the weights start, ``rewind_k`` and
    ``lr_rewind`` only in the weights, and ``finetune`` and ``lr_rewind`` only in the learning
    rates: every comparison changes one thing. (Frankle & Carbin's ticket trains the full :math:`T`
    epochs from :math:`\theta_0`; here it gets the same :math:`T-k` as the others — with
    :math:`k \ll T` the difference is small, and it keeps the budget equal.)

    Returns one row per (mode, round): ``mode``, ``round`` (0 = the dense net, mode ``"dense"``),
    ``sparsity``, ``train_acc``, ``test_acc``, ``epochs`` (retraining epochs), ``lr``.
    """
    from .train import evaluate, fit, lr_factor

    modes = [check_choice(m, "mode", RETRAIN_MODES) for m in modes]
    if "reinit" in modes and "rewind_0" not in modes:
        raise ValueError("mode 'reinit' re-initialises the mask of 'rewind_0'; include both.")
    check_positive_int(rounds, "rounds")
    check_positive_int(epochs, "epochs")
    if not isinstance(rate, int | float) or not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate!r}.")
    if not isinstance(rewind_epoch, int) or not 0 <= rewind_epoch < epochs:
        raise ValueError(f"rewind_epoch must be an integer in [0, epochs={epochs}), got "
                         f"{rewind_epoch!r}.")
    check_choice(scope, "scope", SCOPES)
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    lr_factor(schedule, 0, epochs)  # validate
    k, t = rewind_epoch, epochs - rewind_epoch
    small_lr = finetune_lr if finetune_lr is not None else lr * lr_factor(schedule, epochs - 1,
                                                                          epochs)

    def run(net, n, start, rate_lr=lr, sched=schedule):
        replay = None if sched is None else (lambda e: lr_factor(sched, start + e, epochs))
        fit(net, train, epochs=n, batch_size=batch_size, lr=rate_lr, momentum=momentum,
            schedule=replay, device=device, seed=seed, progress=False, metrics=("loss",))

    def row(net, mode, r):
        return {"lr": lr, "mode": mode, "round": r,
                "sparsity": float(sparsity(net, exclude)["global"]) if r else 0.0,
                "train_acc": evaluate(net, train)["acc"], "test_acc": evaluate(net, test)["acc"],
                "epochs": epochs if r == 0 else t}

    torch.manual_seed(seed)
    dense = model_fn()
    prunable_matrices(dense, exclude)
    theta0 = _snapshot(dense)
    if k > 0:
        run(dense, k, 0)
    theta_k = _snapshot(dense)
    run(dense, t, k)
    rows = [row(dense, "dense", 0)]
    lineages = {m: copy.deepcopy(dense) for m in modes if m != "reinit"}
    bar = _progress(range(1, rounds + 1), enabled=progress, desc="pruning rounds")
    for r in bar:
        target = 1.0 - (1.0 - rate) ** r
        for mode, net in lineages.items():
            prune(net, method="magnitude", amount=target, scope=scope, exclude=exclude)
            if mode in ("rewind_0", "rewind_k"):
                _rewind_(net, theta0 if mode == "rewind_0" else theta_k)
            if mode == "finetune":
                run(net, t, 0, rate_lr=small_lr, sched=None)
            else:
                run(net, t, k)
            rows.append(row(net, mode, r))
        if "reinit" in modes:
            torch.manual_seed(seed + 1000 + r)
            fresh = model_fn()
            _copy_masks(lineages["rewind_0"], fresh, exclude)
            run(fresh, t, k)
            rows.append(row(fresh, "reinit", r))
    return pd.DataFrame(rows)
