r"""Compression-based generalisation bounds for pruned networks: the ingredients and the bound.

What this module computes, and whose it is
------------------------------------------
Guha, Dubey & Huo 2023, "Generalization Bounds for Magnitude-Based Pruning via Sparse Matrix
Sketching" (arXiv 2305.18789) bound the test error of a magnitude-pruned network inside the
compression framework of Arora, Ge, Neyshabur & Zhang 2018 (arXiv 1802.05296). Their abstract
states the structure: (1) an error term from the approximation that pruning induces, (2) a term in
the number of parameters of the compressed model, and (3) sparse-matrix sketching, so that each
pruned matrix is represented by a much smaller dense matrix. **We could not read the paper's full
text** (its exact theorem, constants, its own magnitude-based compression algorithm and its
extension to iterative pruning), so nothing here is "their bound". What is here:

* **Arora et al.'s Theorem 2.1** (the paper's framework; standard): if ``f`` is
  :math:`(\gamma, S)`-compressible via :math:`g_A` — :math:`|f(x)[y] - g_A(x)[y]| \le \gamma` for
  every training input and every class — and :math:`A` has :math:`q` parameters taking at most
  :math:`r` values each, then w.h.p. :math:`L_0(g_A) \le \hat L_\gamma(f) + O(\sqrt{q\log r/m})`
  (:math:`m` training points, :math:`\hat L_\gamma` the fraction with margin
  :math:`f(x)[y] - \max_{j\ne y} f(x)[j] \le \gamma`).
* **Our explicit version** (:func:`compression_bound`): the :math:`O(\cdot)` made explicit by
  Hoeffding's inequality and a union bound over a finite set of :math:`N` compressed models chosen
  before seeing the data: with probability :math:`\ge 1-\delta`,
  :math:`L_0(g) \le \hat L_{2\varepsilon}(f) + \sqrt{(\ln N + \ln(1/\delta))/(2m)}`, where
  :math:`\varepsilon = \max_{x\in S}\|f(x) - g(x)\|_\infty`. The margin is :math:`2\varepsilon`
  (not :math:`\varepsilon`) so that the step :math:`\hat L_0(g) \le \hat L_{2\varepsilon}(f)` holds
  exactly: each logit moves by at most :math:`\varepsilon`, so a margin moves by at most
  :math:`2\varepsilon`. Here :math:`g` is the pruned network itself (its float weights take
  :math:`r = 2^{\text{bits}}` values). Two refinements of ours, both exact: the margin term may
  be taken point by point, :math:`\hat P[\mathrm{margin}_f(x) \le 2\,\mathrm{dev}(x)]`, and the
  deviation may discount a shift common to all logits (which changes no prediction):
  :math:`\mathrm{dev}(x) = \min_c\|f(x) - g(x) - c\mathbf 1\|_\infty` (``center=True``). At toy
  scale, Arora et al.'s uniform :math:`\varepsilon` makes the margin term ≈ 1 at every sparsity > 0.
* **Three ways to count** :math:`\ln N` (:func:`description_lengths`), in nats:

  - ``dense``: every weight of every compressed layer stored, :math:`\ln N = D\ln r` — the
    "dense-parameter compression bound" (pruning buys nothing in the count);
  - ``sparse``: the non-zero values *and where they are*:
    :math:`\sum_l [\,\mathrm{nnz}_l\ln r + \ln\binom{n_l}{\mathrm{nnz}_l}]` (the support must be
    encoded too: counting the non-zeros alone is not a valid :math:`q`);
  - ``sketch``: layer :math:`l`'s pruned :math:`W_s` stored as its sketch
    :math:`Y = A W_s B^\top`, an :math:`m_l\times m_l` dense matrix, with data-independent
    :math:`A, B` fixed in advance (Arora et al.'s "helper string"). The sketch dimension is
    :func:`sketch_dimension`, :math:`m_l = \lceil c\,\sqrt{\mathrm{nnz}_l}\,\ln p_l\rceil`,
    :math:`p_l = \max(d_{out}, d_{in})`: the scaling of Dasarathy, Shah, Bhaskar & Nowak,
    "Sketching sparse matrices, covariances, and graphs via tensor products" (IEEE Trans. Inf.
    Theory 61(3), 2015; preprint 2013), whose abstract gives :math:`m = O(\sqrt{\mathrm{nnz}}\,\log p)`
    for a :math:`p\times p` matrix whose non-zeros are not concentrated in a few rows or columns.
    **That Guha et al. use this result, the constant** :math:`c` **(default 1), the natural log
    and the rectangular** :math:`p_l` **are our assumptions.** A layer whose sketch would have
    more entries than the layer (:math:`m_l^2 \ge n_l`) is stored dense instead.

  Note what the count says: a sketch costs :math:`m_l^2 \approx c^2\,\mathrm{nnz}_l\ln^2 p_l`
  numbers, so it beats the dense count only above sparsity :math:`1 - 1/(c\ln p_l)^2`
  (about 0.96 for :math:`p = 128`), and it never beats the explicit sparse code at :math:`c = 1`.

* **The approximation term** two ways: :func:`output_deviation` measures
  :math:`\varepsilon` (Arora et al.'s definition) on the training inputs; :func:`perturbation_bound`
  bounds :math:`\|f(x) - g(x)\|_2` from the per-layer operator-norm errors
  :math:`\|W_l - W_{s,l}\|_2` by the usual telescoping argument (ours; in the spirit of Neyshabur
  et al., arXiv 1707.09564, Lemma 2, but with the dense activations measured on ``x``):
  for a chain of linear layers and 1-Lipschitz activations,
  :math:`\|f(x)-g(x)\|_2 \le \sum_l \|W_l - W_{s,l}\|_2\,\|h_{l-1}(x)\|_2\prod_{k>l}\|W_{s,k}\|_2`,
  with :math:`h_{l-1}(x)` the dense network's input to layer :math:`l`.

Everything is a pure function of a model (or two copies: dense and pruned), data and masks; nothing
trains, plots or prints. Absolute values of these bounds are vacuous (> 1) at any size we can run
on a laptop; what they teach is the trade-off and the ordering of the counts (notebook 11).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd
import torch
from torch import nn

from ._checks import (
    check_choice,
    check_eval_mode,
    check_fraction,
    check_labels,
    check_module,
    check_positive,
    check_positive_int,
    check_tensor,
)
from .pruning import prunable_layers
from .spectra import effective_weight
from .utils import InputCapture, eval_mode

__all__ = ["ENCODINGS", "DEVIATIONS", "margins", "margin_loss", "sketch_dimension", "layer_table",
           "description_lengths", "output_deviation", "perturbation_bound", "compression_bound",
           "bound_table"]

ENCODINGS = ("dense", "sparse", "sketch")

# Elementwise activations that are 1-Lipschitz (the perturbation bound needs it), and shape-only
# modules; anything else in the chain makes perturbation_bound refuse the model.
_LIPSCHITZ = (nn.ReLU, nn.Tanh, nn.Identity, nn.Flatten, nn.Sigmoid, nn.Hardtanh, nn.ReLU6,
              nn.Softsign)


def _inputs(x, name: str = "x") -> torch.Tensor:
    return check_tensor(x, name, min_ndim=2)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    check_eval_mode(model, "margins are per-input quantities")
    with eval_mode(model), torch.no_grad():
        out = model(x.to(next(model.parameters()).device))
    return out.detach().to(torch.float64).cpu()


def margins(model: nn.Module, x, y) -> torch.Tensor:
    r"""The classification margin of every input: :math:`f(x)[y] - \max_{j\ne y} f(x)[j]`.

    Positive exactly when ``model`` classifies ``x`` correctly (ties count as errors). One float64
    value per row of ``x``; ``y`` holds integer labels. The training margins enter the bound
    through :func:`margin_loss` (Arora et al. 2018, arXiv 1802.05296, §2).
    """
    check_module(model)
    x = _inputs(x)
    logits = _logits(model, x)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"model must output (N, classes ≥ 2) logits, got {tuple(logits.shape)}.")
    y = check_labels(y, len(x), logits.shape[1], "y").cpu()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], -math.inf).amax(1)
    return true - others


def margin_loss(margin_values, gamma: float) -> float:
    r""":math:`\hat L_\gamma`: the fraction of margins :math:`\le \gamma` (:math:`\gamma = 0`: the
    training error, ties counted as errors)."""
    m = check_tensor(margin_values, "margin_values", ndim=1)
    gamma = check_positive(gamma, "gamma", allow_zero=True)
    return float((m <= gamma).to(torch.float64).mean())


def sketch_dimension(nnz: int, shape: tuple[int, int], *, c: float = 1.0) -> int:
    r"""Side :math:`m` of the square sketch :math:`Y = A W_s B^\top` of a sparse matrix.

    :math:`m = \lceil c\sqrt{\mathrm{nnz}}\,\ln p\rceil` with :math:`p = \max(d_{out}, d_{in})`:
    the scaling :math:`m = O(\sqrt{\mathrm{nnz}}\log p)` of Dasarathy, Shah, Bhaskar & Nowak
    (IEEE Trans. Inf. Theory 2015), who recover a :math:`p\times p` sparse matrix whose non-zeros are spread
    over rows and columns from such a sketch by a convex program. The constant ``c``, the natural
    log and the rectangular :math:`p` are **our** choices (that paper states an :math:`O(\cdot)`),
    and so is the assumption that Guha et al. (arXiv 2305.18789) use this result. ``nnz = 0``
    gives 0. Not capped: compare :math:`m^2` with the matrix's size yourself (see
    :func:`description_lengths`).
    """
    nnz = check_positive_int(nnz, "nnz", allow_zero=True)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (rows, columns) ≥ 1, got {shape!r}.")
    c = check_positive(c, "c")
    if nnz > shape[0] * shape[1]:
        raise ValueError(f"nnz={nnz} exceeds the matrix's {shape[0] * shape[1]} entries.")
    p = max(shape)
    return 0 if nnz == 0 else math.ceil(c * math.sqrt(nnz) * math.log(max(p, 2)))


def _pairs(dense: nn.Module, pruned: nn.Module, exclude: Iterable[str]):
    dense_layers = dict(prunable_layers(dense, exclude))
    for name, module in prunable_layers(pruned, exclude):
        if name not in dense_layers:
            raise ValueError(f"layer {name!r} of pruned is not in dense; pass two copies of the "
                             "same architecture (e.g. pruning.prune(copy.deepcopy(dense), ...)).")
        w = effective_weight(dense_layers[name]).to(torch.float64).cpu()
        ws = effective_weight(module).to(torch.float64).cpu()
        if w.shape != ws.shape:
            raise ValueError(f"layer {name!r} has shape {tuple(w.shape)} in dense but "
                             f"{tuple(ws.shape)} in pruned.")
        yield name, w.reshape(w.shape[0], -1), ws.reshape(ws.shape[0], -1)


def layer_table(dense: nn.Module, pruned: nn.Module, *, exclude: Iterable[str] = (),
                c: float = 1.0) -> pd.DataFrame:
    r"""The per-layer ingredients of the bound, one row per prunable layer (matched by name).

    Columns: ``name``, ``rows``, ``cols``, ``params`` (:math:`n_l`), ``nnz`` (non-zeros of the
    pruned :math:`W_s`), ``sparsity``, ``op_error`` (:math:`\|W - W_s\|_2`, absolute),
    ``rel_op_error`` (:math:`/\|W\|_2`), ``op_norm`` (:math:`\|W\|_2`), ``op_norm_pruned``
    (:math:`\|W_s\|_2`) and ``sketch_dim`` (:func:`sketch_dimension` with constant ``c``). Conv
    weights are read as ``(out, in·k·k)`` matrices. Layers named in ``exclude`` are left out (a
    layer that is not pruned has ``op_error = 0`` and ``nnz = params``; leaving it in only adds its
    parameters to every count).
    """
    check_module(dense, "dense")
    check_module(pruned, "pruned")
    rows = []
    for name, w, ws in _pairs(dense, pruned, exclude):
        nnz = int((ws != 0).sum())
        norm = float(torch.linalg.matrix_norm(w, ord=2))
        err = float(torch.linalg.matrix_norm(w - ws, ord=2))
        rows.append({"name": name, "rows": w.shape[0], "cols": w.shape[1], "params": w.numel(),
                     "nnz": nnz, "sparsity": 1 - nnz / w.numel(), "op_error": err,
                     "rel_op_error": err / norm if norm > 0 else math.nan, "op_norm": norm,
                     "op_norm_pruned": float(torch.linalg.matrix_norm(ws, ord=2)),
                     "sketch_dim": sketch_dimension(nnz, tuple(w.shape), c=c)})
    return pd.DataFrame(rows)


def description_lengths(layers: pd.DataFrame, *, bits: int = 32) -> dict:
    r""":math:`\ln N` (nats) of the three encodings of the compressed layers, and their counts.

    ``layers``: the table of :func:`layer_table`. With :math:`r = 2^{\text{bits}}` values per
    stored number (``bits=32``: the float32 weights as they are, no discretisation):

    * ``dense``: :math:`q = \sum_l n_l`, :math:`\ln N = q\ln r`;
    * ``sparse``: :math:`q = \sum_l \mathrm{nnz}_l`,
      :math:`\ln N = q\ln r + \sum_l\ln\binom{n_l}{\mathrm{nnz}_l}` (the positions);
    * ``sketch``: :math:`q = \sum_l \min(m_l^2, n_l)` (a layer whose sketch is not smaller than
      itself is stored dense), :math:`\ln N = q\ln r`.

    Returns ``{"q_dense", "q_sparse", "q_sketch", "dense", "sparse", "sketch"}`` (the last three
    in nats). Whose formula is whose: see the module docstring.
    """
    if not isinstance(layers, pd.DataFrame) or not {"params", "nnz", "sketch_dim"} <= set(layers):
        raise ValueError("layers must be the DataFrame of pruning_bounds.layer_table (columns "
                         "params, nnz, sketch_dim).")
    bits = check_positive_int(bits, "bits")
    log_r = bits * math.log(2)
    n = layers["params"].astype(int)
    nnz = layers["nnz"].astype(int)
    m = layers["sketch_dim"].astype(int)
    support = sum(math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)
                  for a, b in zip(n, nnz))
    q_dense, q_sparse = int(n.sum()), int(nnz.sum())
    q_sketch = int(sum(min(mi * mi, ni) for mi, ni in zip(m, n)))
    return {"q_dense": q_dense, "q_sparse": q_sparse, "q_sketch": q_sketch,
            "dense": q_dense * log_r, "sparse": q_sparse * log_r + support,
            "sketch": q_sketch * log_r}


def output_deviation(dense: nn.Module, pruned: nn.Module, x, *, center: bool = False
                     ) -> torch.Tensor:
    r"""How far pruning moved the logits, for every input (float64, one per row of ``x``).

    ``center=False``: :math:`\|f(x) - g(x)\|_\infty`; its maximum over the training set is
    Arora et al.'s compression error :math:`\varepsilon` (Definition 1 of arXiv 1802.05296).
    ``center=True``: :math:`\min_c\|f(x) - g(x) - c\mathbf 1\|_\infty = (\max_j d_j -
    \min_j d_j)/2` with :math:`d = f(x) - g(x)`. Adding the same number to every logit changes no
    prediction, so :math:`g` can only misclassify :math:`x` when the dense margin is
    :math:`\le 2\times` this value too (our refinement; it discounts the common shift of all
    logits that pruning causes).
    """
    check_module(dense, "dense")
    check_module(pruned, "pruned")
    x = _inputs(x)
    d = _logits(dense, x) - _logits(pruned, x)
    return (d.amax(1) - d.amin(1)) / 2 if center else d.abs().amax(1)


def _chain(model: nn.Module) -> list[nn.Module]:
    leaves = [m for m in model.modules() if not list(m.children())]
    weighted = {id(mod) for _, mod in prunable_layers(model)}
    for m in leaves:
        ok = id(m) in weighted
        if not ok and not isinstance(m, _LIPSCHITZ):
            if isinstance(m, nn.LeakyReLU) and m.negative_slope <= 1:
                continue
            raise ValueError(f"perturbation_bound needs a chain of Linear layers and 1-Lipschitz "
                             f"elementwise activations (an MLP without normalisation), but "
                             f"{type(model).__name__} contains {type(m).__name__}.")
        if ok and not isinstance(m, nn.Linear):
            raise ValueError(f"perturbation_bound handles Linear layers only, got "
                             f"{type(m).__name__}.")
    return leaves


def perturbation_bound(dense: nn.Module, pruned: nn.Module, x) -> torch.Tensor:
    r"""An upper bound on :math:`\|f(x) - g(x)\|_2` for every input, from per-layer operator norms.

    For a chain :math:`h_l = \phi(W_l h_{l-1} + b_l)` with 1-Lipschitz :math:`\phi` (a
    :class:`toolkit.models.MLP` without normalisation; the modules are taken in the order they are
    registered, which is their forward order in such an MLP) and its pruned copy (same biases,
    weights :math:`W_{s,l}`), the difference after layer :math:`l` satisfies
    :math:`\delta_l \le \|W_l - W_{s,l}\|_2\|h_{l-1}(x)\|_2 + \|W_{s,l}\|_2\,\delta_{l-1}`, so

    .. math:: \|f(x) - g(x)\|_2 \le \sum_l \|W_l - W_{s,l}\|_2\,\|h_{l-1}(x)\|_2
              \prod_{k>l}\|W_{s,k}\|_2 ,

    with the dense inputs :math:`h_{l-1}(x)` measured on ``x``. A standard telescoping argument
    (ours, as used for Neyshabur et al.'s perturbation lemma, arXiv 1707.09564): it turns the
    per-layer :math:`\|W - W_s\|_2` — the quantity a spectrum-preserving pruning keeps small —
    into the compression error of the network. Every layer counts, pruned or not.
    """
    check_module(dense, "dense")
    check_module(pruned, "pruned")
    x = _inputs(x)
    chain = _chain(dense)
    in_chain = {id(m) for m in chain}
    linears = [(n, m) for n, m in dense.named_modules()
               if id(m) in in_chain and isinstance(m, nn.Linear)]
    pairs = {name: (w, ws) for name, w, ws in _pairs(dense, pruned, ())}
    check_eval_mode(dense, "the perturbation bound is per input")
    with InputCapture({n: m for n, m in linears}) as cap, eval_mode(dense), torch.no_grad():
        dense(x.to(next(dense.parameters()).device))
        norms = {n: cap.pop(n).to(torch.float64).cpu().norm(dim=1) for n, _ in linears}
    errors = {n: float(torch.linalg.matrix_norm(w - ws, ord=2)) for n, (w, ws) in pairs.items()}
    pruned_norms = {n: float(torch.linalg.matrix_norm(ws, ord=2)) for n, (w, ws) in pairs.items()}
    total = torch.zeros(len(x), dtype=torch.float64)
    names = [n for n, _ in linears]
    for i, name in enumerate(names):
        tail = math.prod(pruned_norms[k] for k in names[i + 1:])
        total += errors[name] * norms[name] * tail
    return total


def compression_bound(train_margins, deviation, log_n: float, *, delta: float = 0.05) -> dict:
    r"""Our explicit form of Arora et al.'s Theorem 2.1 (arXiv 1802.05296) for a pruned net.

    With probability :math:`\ge 1-\delta` over the :math:`m` training points, every compressed
    model :math:`g` in a set of :math:`N` fixed in advance satisfies
    :math:`L_0(g) \le \hat L_0(g) + \sqrt{(\ln N + \ln(1/\delta))/(2m)}` (Hoeffding + union
    bound). And :math:`g` can only misclassify a training point :math:`x` on which the dense
    :math:`f` has margin :math:`\le 2\|f(x) - g(x)\|_\infty` (each logit moved by at most that
    much), so :math:`\hat L_0(g) \le \hat P[\,\mathrm{margin}_f(x) \le 2\,\mathrm{dev}(x)]`.

    ``train_margins``: :func:`margins` of the *dense* ``f`` on the training set. ``deviation``:
    either one number :math:`\varepsilon \ge \max_x\|f(x)-g(x)\|_\infty` — Arora et al.'s
    uniform compression error, the margin term is then :math:`\hat L_{2\varepsilon}(f)` — or one
    value per training point (:func:`output_deviation`, or the per-input
    :func:`perturbation_bound`), our pointwise refinement. ``log_n``: one of
    :func:`description_lengths`' values.

    Returns ``{"margin_loss", "complexity", "bound"}``: the two terms and their sum. Arora et al.
    write :math:`\hat L_\gamma(f)` with compression error :math:`\gamma` and an unspecified
    constant in :math:`O(\cdot)`; the factor 2, the pointwise form and the Hoeffding constant are
    ours.
    """
    m = check_tensor(train_margins, "train_margins", ndim=1)
    dev = torch.as_tensor(deviation, dtype=torch.float64)
    if dev.ndim == 0:
        check_positive(float(dev), "deviation", allow_zero=True)
    elif dev.shape != m.shape:
        raise ValueError(f"deviation must be one number or one value per training point "
                         f"({len(m)}), got shape {tuple(dev.shape)}.")
    elif bool((dev < 0).any()) or not bool(torch.isfinite(dev).all()):
        raise ValueError("deviation must be finite and >= 0 (a norm of f(x) - g(x)).")
    log_n = check_positive(log_n, "log_n", allow_zero=True)
    delta = check_fraction(delta, "delta")
    if delta == 0:
        raise ValueError("delta must be in (0, 1), got 0.")
    loss = float((m.to(torch.float64) <= 2 * dev).to(torch.float64).mean())
    complexity = math.sqrt((log_n + math.log(1 / delta)) / (2 * len(m)))
    return {"margin_loss": loss, "complexity": complexity, "bound": loss + complexity}


DEVIATIONS = ("measured", "uniform", "norms")


def bound_table(dense: nn.Module, pruned: nn.Module, train, *, exclude: Iterable[str] = (),
                c: float = 1.0, bits: int = 32, delta: float = 0.05,
                deviation: str = "measured") -> pd.DataFrame:
    r"""The bound for one pruned model under the three encodings, one row each.

    ``train``: the training set (a ``TensorDataset`` or ``(x, y)``). ``deviation`` chooses the
    approximation term of :func:`compression_bound`: ``"measured"`` — the pointwise, centred
    :func:`output_deviation` (``center=True``); ``"uniform"`` — the maximum over the training set
    of the uncentred one (Arora et al.'s :math:`\varepsilon`, the loosest); ``"norms"`` — the
    pointwise :func:`perturbation_bound`, built from the per-layer :math:`\|W - W_s\|_2` (needs
    an MLP chain). Columns: ``encoding``, ``q``, ``log_n``, ``epsilon`` (the largest deviation
    used), ``margin_loss``, ``complexity``, ``bound``, and the pruned model's own
    ``train_error`` (:math:`\hat L_0(g) \le` ``margin_loss``).
    """
    check_choice(deviation, "deviation", DEVIATIONS)
    x, y = (train.tensors if hasattr(train, "tensors") else train)[:2]
    train_margins = margins(dense, x, y)
    if deviation == "norms":
        dev = perturbation_bound(dense, pruned, x)
    elif deviation == "uniform":
        dev = output_deviation(dense, pruned, x).max()
    else:
        dev = output_deviation(dense, pruned, x, center=True)
    lengths = description_lengths(layer_table(dense, pruned, exclude=exclude, c=c), bits=bits)
    train_error = margin_loss(margins(pruned, x, y), 0.0)
    rows = []
    for enc in ENCODINGS:
        terms = compression_bound(train_margins, dev, lengths[enc], delta=delta)
        rows.append({"encoding": enc, "q": lengths[f"q_{enc}"], "log_n": lengths[enc],
                     "epsilon": float(dev.max()), **terms, "train_error": train_error})
    return pd.DataFrame(rows)
