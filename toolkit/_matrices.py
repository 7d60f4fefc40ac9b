r"""The weight matrices of a model, as the spectra and pruning code sees them (re-exported by
:mod:`toolkit.spectra`, which documents them).

* :func:`effective_weight` — the weight a layer applies (pruning masks, NTK scales);
* :func:`weight_layers` / :func:`weight_layer` — the Linear/Conv layers;
* :func:`weight_matrices` — every weight matrix, the query/key/value blocks of each
  ``nn.MultiheadAttention`` included (:class:`WeightMatrix`);
* :func:`skipped_parameters` / :func:`warn_skipped` — the one rule for weight tensors a function
  does not handle: one :class:`SkippedParametersWarning` naming them.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ._checks import check_module

__all__ = ["effective_weight", "weight_layers", "weight_layer", "WeightMatrix", "weight_matrices",
           "SkippedParametersWarning", "skipped_parameters", "warn_skipped"]

_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def effective_weight(module: nn.Module, param: str = "weight") -> torch.Tensor:
    r"""The weight a layer actually applies, detached.

    * pruned layers (``torch.nn.utils.prune``): ``weight_orig * weight_mask`` — recomputed here, so
      it is current even when ``weight_orig`` changed since the last forward pass;
    * :class:`toolkit.models.NTKLinear`: ``weight_scale * weight`` (the NTK parameterisation's
      :math:`\sigma_w/\sqrt{n_{in}}` factor), so spectral norms compare across parameterisations.

    ``param`` names another weight of the module, e.g. ``"in_proj_weight"`` of an
    ``nn.MultiheadAttention`` (pruned or not); the scale factor applies to ``"weight"`` only.
    """
    if not isinstance(param, str) or not param:
        raise TypeError(f"param must be the name of a weight of the module, got {param!r}.")
    pruned = hasattr(module, param + "_orig") and hasattr(module, param + "_mask")
    if not isinstance(module, nn.Module) or not (
            pruned or isinstance(getattr(module, param, None), torch.Tensor)):
        raise TypeError(f"expected a layer with a `{param}` tensor (nn.Linear / nn.Conv*, or an "
                        f"nn.MultiheadAttention's projection), got {type(module).__name__}.")
    if pruned:
        orig = getattr(module, param + "_orig")
        w = orig * getattr(module, param + "_mask").to(orig.dtype)
    else:
        w = getattr(module, param)
    w = w.detach()
    scale = getattr(module, "weight_scale", None) if param == "weight" else None
    if scale is not None:
        w = w * scale
    return w


def weight_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` for every ``nn.Linear`` / ``nn.Conv1d/2d/3d`` (and subclasses) of a model."""
    check_module(model)
    for name, module in model.named_modules():
        if isinstance(module, _LAYER_TYPES):
            yield name, module


def weight_layer(model: nn.Module, name: str) -> nn.Module:
    """The weight layer called ``name`` (a name from :func:`weight_layers`)."""
    layers = dict(weight_layers(model))
    if name not in layers:
        raise ValueError(f"layer {name!r} not found; the model's weight layers are {list(layers)}.")
    return layers[name]


_ATTENTION_BLOCKS = ("q", "k", "v")


@dataclass(frozen=True)
class WeightMatrix:
    """One weight matrix of a model, as :func:`weight_matrices` lists it.

    ``name``: the layer's module name, or ``"<attention>.q"`` / ``".k"`` / ``".v"`` for the
    query/key/value projections of an ``nn.MultiheadAttention`` (its ``out_proj`` is the
    ``nn.Linear`` it is, listed under its own name); ``module`` and ``param``: where the weight
    lives (``"weight"``, ``"in_proj_weight"``, ``"q_proj_weight"``, ...); ``rows``: the block of
    rows of that parameter (``in_proj_weight`` stacks q, k, v), or ``None`` for all of it.
    """

    name: str
    module: nn.Module = field(repr=False, compare=False)
    param: str
    rows: slice | None = None

    @property
    def kind(self) -> str:
        """The owning module's class name (``"Linear"``, ``"Conv2d"``, ``"MultiheadAttention"``)."""
        return type(self.module).__name__

    def weight(self) -> torch.Tensor:
        """The matrix the layer applies (:func:`effective_weight`, the block for q/k/v), detached."""
        w = effective_weight(self.module, self.param)
        return w if self.rows is None else w[self.rows]


def _attention_matrices(name: str, mha: nn.MultiheadAttention) -> list[WeightMatrix]:
    prefix = f"{name}." if name else ""
    if mha._qkv_same_embed_dim:
        e = mha.embed_dim
        return [WeightMatrix(prefix + b, mha, "in_proj_weight", slice(i * e, (i + 1) * e))
                for i, b in enumerate(_ATTENTION_BLOCKS)]
    return [WeightMatrix(prefix + b, mha, f"{b}_proj_weight") for b in _ATTENTION_BLOCKS]


def weight_matrices(model: nn.Module) -> list[WeightMatrix]:
    """Every weight matrix of ``model`` (:class:`WeightMatrix`), in module order: the weight of
    each ``nn.Linear`` / ``nn.Conv1d/2d/3d`` (and subclasses) and the query, key and value
    projections of each ``nn.MultiheadAttention`` (rows ``"<name>.q"``, ``".k"``, ``".v"``; its
    ``out_proj`` is a Linear). Parameters of any other kind are not matrices here; see
    :func:`skipped_parameters`."""
    check_module(model)
    out = []
    for name, module in model.named_modules():
        if isinstance(module, _LAYER_TYPES):
            out.append(WeightMatrix(name, module, "weight"))
        elif isinstance(module, nn.MultiheadAttention):
            out += _attention_matrices(name, module)
    return out


class SkippedParametersWarning(UserWarning):
    """Weight tensors of a model that a spectra/pruning function does not handle (one line)."""


def skipped_parameters(model: nn.Module, matrices: list[WeightMatrix] | None = None) -> list[str]:
    """Names of the parameters with two or more dimensions (biases aside) that are not in
    ``matrices`` (default :func:`weight_matrices`): embeddings, positional embeddings, bilinear
    or recurrent weights... The one rule of :mod:`toolkit.spectra` and :mod:`toolkit.pruning`:
    a function that handles weight matrices warns (:class:`SkippedParametersWarning`, one line)
    with this list when it is not empty. 1-D parameters (biases, norm scales) and parameters
    named ``*bias*`` are never weight matrices and are not listed."""
    matrices = weight_matrices(model) if matrices is None else matrices
    covered = {(id(m.module), m.param) for m in matrices}
    out = []
    for mod_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            base = pname[:-5] if pname.endswith("_orig") and hasattr(
                module, pname[:-5] + "_mask") else pname
            if p.ndim < 2 or "bias" in base or (id(module), base) in covered:
                continue
            out.append(f"{mod_name}.{base}" if mod_name else base)
    return out


def warn_skipped(model: nn.Module, where: str, matrices: list[WeightMatrix] | None = None) -> None:
    """Issue the one-line :class:`SkippedParametersWarning` of :func:`skipped_parameters`."""
    skipped = skipped_parameters(model, matrices)
    if skipped:
        shown = ", ".join(skipped[:6]) + (f", ... ({len(skipped)} in all)" if len(skipped) > 6
                                          else "")
        warnings.warn(f"{where} skips {len(skipped)} weight tensor(s) that are not Linear/Conv/"
                      f"attention matrices: {shown}.", SkippedParametersWarning, stacklevel=3)


def _deepcopy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also copies pruned models: a pruned parameter's attribute
    (``weight = weight_orig * weight_mask``) is a non-leaf tensor that deepcopy refuses, so its
    detached value is copied instead (the pruning hook recomputes it at the next forward)."""
    memo = {}
    for module in model.modules():
        for b, _ in module.named_buffers(recurse=False):
            value = getattr(module, b[:-5], None) if b.endswith("_mask") else None
            if isinstance(value, torch.Tensor) and hasattr(module, b[:-5] + "_orig"):
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)
