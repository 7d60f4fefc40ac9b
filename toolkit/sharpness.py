r"""Flatness and generalisation of two-layer ReLU networks on Boolean data (notebook 10).

Wen, Li & Ma (NeurIPS 2023, arXiv 2307.11007) measure sharpness as the trace of the Hessian of the
training loss, tr(H), and describe three scenarios for two-layer ReLU networks: (1) flatness
provably implies generalisation; (2) there are non-generalising flattest models and sharpness
minimisation fails to generalise; (3) there are non-generalising flattest models, yet sharpness
minimisation still generalises. Which scenario holds depends on the data and on the architecture
(a small change such as adding biases switches it). *We could not read the paper's full text*: its
exact data distributions, constructions and bounds are not reproduced here. What this module holds
is our own, checkable material in the spirit of scenario (3):

- :func:`sparse_parity`: distinct points of the hypercube {±1}^d labelled by the product of their
  first ``k`` coordinates, and unseen test points;
- :func:`memorising_interpolator`: *a memorising interpolator built by hand in the spirit of the
  paper's scenario (3)* (not the paper's own construction): one neuron per training point that
  fires on that point only, so it fits the training set exactly and outputs 0 (chance) on every
  unseen point of the hypercube;
- :func:`lookup_interpolator`: the same recipe on the ``k`` relevant coordinates: one neuron per
  pattern of those coordinates, a generalising interpolator with exactly the same tr(H);
- :func:`trace_lower_bound`, :func:`optimal_scale`, :func:`interpolator_trace`: closed forms
  (derived below) showing both hand-built nets, at the right rescaling, are *flattest*
  interpolators;
- :func:`gauss_newton_trace` (exact tr(H) for these nets), :func:`firing_pattern`,
  :func:`sign_accuracy` and :func:`measure` (train loss, tr(H) with :func:`toolkit.hessian.trace`,
  test accuracy).
- :func:`flatness_penalty` (the same trace as a differentiable function of the parameters) and
  :func:`minimise_sharpness`, a search for approximately flattest interpolators by continuation
  (our own procedure, not an algorithm of the paper), and :func:`bias_free_parity_interpolator`,
  a bias-free net of four neurons on x₁ ± x₂ at the bias-free bound 4√d (at the kink: see there).

**The closed forms.** The net is ``models.MLP(d, [m], 1)``: f(x) = Σ_j a_j σ(w_j·x + b_j) + c, under
the mean squared loss L = (1/n) Σ_i (f(x_i) − y_i)². Its Hessian is
H = (2/n) Σ_i ∇f_i ∇f_iᵀ + (2/n) Σ_i (f_i − y_i) ∇²f_i, and the second term has zero *trace*
wherever no pre-activation sits exactly at the kink: f is linear in each a_j, c and (piecewise)
in each w_j, b_j, so every diagonal second derivative vanishes. Hence, almost everywhere,

.. math::  \mathrm{tr}(H) = \frac2n \sum_i \|∇_θ f(x_i)\|^2, \qquad
           \|∇_θ f(x)\|^2 = 1 + \sum_{j\ \mathrm{active}} \big(σ_j^2 + a_j^2(\|x\|^2 + 1)\big)

(the 1 is c, the +1 is b_j; without biases both go and ‖x‖² + 1 becomes ‖x‖²). On the hypercube
‖x‖² = d. By AM–GM, σ_j² + a_j²(d+1) ≥ 2√(d+1) |a_j σ_j|, and by the triangle inequality
Σ_j |a_j σ_j| ≥ |f(x) − c|. At an interpolator with c = 0 and labels ±1 this gives
tr(H) ≥ 2(2√(d+1) + 1) = 4√(d+1) + 2 (with biases; 4√d without), with equality exactly when, at
every training point, the active neurons' contributions share the label's sign and each is
balanced, σ_j = √(d+1)|a_j|. (For an output bias c ≠ 0 the same steps give
2 + (4√(d+1)/n) Σ_i |y_i − c|, at least 2 + 8√(d+1) min(p₊, p₋) for label fractions p₊, p₋:
:func:`trace_lower_bound` with ``labels``.) Both hand-built nets have one active neuron per point with
pre-activation α and output weight y/α, so their trace is 2(α² + (d+1)/α²) + 2, minimised at
α* = (d+1)^{1/4}, where it equals the bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from . import hessian
from ._checks import check_choice, check_module, check_positive, check_positive_int, check_tensor
from .models import MLP
from .train import evaluate
from .utils import as_tensors, eval_mode, get_device, model_device

__all__ = ["sparse_parity", "hypercube", "memorising_interpolator", "lookup_interpolator",
           "optimal_scale", "interpolator_trace", "trace_lower_bound", "gauss_newton_trace",
           "firing_pattern", "sign_accuracy", "FlatnessReport", "measure", "flatness_penalty",
           "minimise_sharpness", "bias_free_parity_interpolator"]

MAX_CUBE_DIM = 16  # hypercube() enumerates at most 2**16 points


# --------------------------------------------------------------------------------------- data


def _codes_to_points(codes: torch.Tensor, d: int) -> torch.Tensor:
    bits = (codes.unsqueeze(1) >> torch.arange(d, dtype=torch.long)) & 1
    return bits.float() * 2 - 1


def hypercube(d: int) -> torch.Tensor:
    """All 2^d points of {±1}^d, shape (2^d, d), in binary order (``d`` ≤ 16)."""
    d = check_positive_int(d, "d")
    if d > MAX_CUBE_DIM:
        raise ValueError(f"d={d} would enumerate 2^{d} points; use d <= {MAX_CUBE_DIM} or sample "
                         "points with sparse_parity.")
    return _codes_to_points(torch.arange(2**d), d)


def _parity(x: torch.Tensor, k: int) -> torch.Tensor:
    return x[:, :k].prod(dim=1, keepdim=True)


def sparse_parity(n: int, d: int, k: int, *, seed: int = 0, n_test: int | None = None):
    r"""The k-sparse parity on the Boolean hypercube: x uniform on {±1}^d, y = x_1 x_2 ⋯ x_k.

    Returns ``(x_train, y_train), (x_test, y_test)``: ``n`` *distinct* training points and
    ``n_test`` distinct points that are not in the training set (default: every other point of the
    cube when d ≤ 16, else 4096), x float of shape (·, d), y float ±1 of shape (·, 1) (for
    ``loss="mse"``). Because the test points are all unseen, a net that only memorises scores
    chance (½) on them. Sparse parities on the hypercube are the Boolean data the brief attributes
    to Wen, Li & Ma (arXiv 2307.11007); the paper's exact sizes are not reproduced here.
    """
    n, d, k = check_positive_int(n, "n"), check_positive_int(d, "d"), check_positive_int(k, "k")
    if k > d:
        raise ValueError(f"k must be at most d (the parity reads k of the d coordinates), got "
                         f"k={k}, d={d}.")
    if d > 62:
        raise ValueError(f"d must be at most 62 (points are drawn as 64-bit codes), got {d}.")
    total = 2**d
    if n_test is None:
        n_test = total - n if d <= MAX_CUBE_DIM else 4096
    n_test = check_positive_int(n_test, "n_test")
    if n + n_test > total:
        raise ValueError(f"n + n_test = {n + n_test} exceeds the {total} points of the "
                         f"{d}-cube; lower n or n_test.")
    gen = torch.Generator().manual_seed(seed)
    if d <= 20:
        codes = torch.randperm(total, generator=gen)[:n + n_test]
    else:  # rejection sampling of distinct codes, in draw order
        seen: dict[int, None] = {}
        while len(seen) < n + n_test:
            draw = torch.randint(0, total, (2 * (n + n_test),), generator=gen)
            for c in draw.tolist():
                seen.setdefault(c, None)
        codes = torch.tensor(list(seen)[:n + n_test])
    x = _codes_to_points(codes, d)
    y = _parity(x, k)
    return (x[:n], y[:n]), (x[n:], y[n:])


# -------------------------------------------------------------------------- hand-built nets


def optimal_scale(d: int) -> float:
    r"""α* = (d + 1)^{1/4}: the input/output split of ReLU's rescaling symmetry
    (w, b, a) → (αw, αb, a/α) that minimises the trace 2(α² + (d+1)/α²) + 2 of the hand-built
    interpolators (module docstring)."""
    return float(check_positive_int(d, "d") + 1) ** 0.25


def interpolator_trace(scale, d: int):
    r"""Closed-form tr(H) of :func:`memorising_interpolator` / :func:`lookup_interpolator` at
    pre-activation ``scale`` α on the points it fits: 2(α² + (d+1)/α²) + 2 (the output weight's
    α², the input weights' and bias's (d+1)/α², the output bias's 1, each times 2 for the squared
    loss). Works elementwise on arrays and tensors."""
    d = check_positive_int(d, "d")
    return 2 * (scale**2 + (d + 1) / scale**2) + 2


def trace_lower_bound(d: int, *, bias: bool = True, labels=None) -> float:
    r"""The least tr(H) of an interpolator of ±1 labels on {±1}^d by ``models.MLP(d, [m], 1)``
    under the mean squared loss, wherever the loss is twice differentiable (AM–GM and the
    triangle inequality, module docstring).

    Without ``labels``: 4√(d+1) + 2 with biases and a zero output bias (the hand-built nets),
    4√d without biases (there is no output bias then). With ``labels`` (and biases) the bound for
    *any* output bias c: 2 + (4√(d+1)/n) min_c Σ_i |y_i − c| = 2 + 8√(d+1) min(p₊, p₋), p₊ and p₋
    the fractions of +1 and −1 labels (the same as without labels when they are balanced)."""
    d = check_positive_int(d, "d")
    if not bias:
        return 4 * math.sqrt(d)
    if labels is None:
        return 4 * math.sqrt(d + 1) + 2
    y = check_tensor(labels, "labels", floating=True).reshape(-1)
    _check_pm1(y, "labels")
    p_plus = float((y > 0).double().mean())
    return 2 + 8 * math.sqrt(d + 1) * min(p_plus, 1 - p_plus)


def _check_pm1(t: torch.Tensor, name: str) -> None:
    if not bool((t.abs() == 1).all()):
        raise ValueError(f"{name} must hold only ±1 values (Boolean inputs or parity labels).")


def _new_net(d: int, width: int, bias: bool) -> MLP:
    net = MLP(d, [width], 1, bias=bias)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        if bias:
            net.features[1].bias.fill_(-1.0)  # unused neurons never fire
    return net.eval()


def memorising_interpolator(x_train, y_train, *, width: int | None = None,
                            scale: float | None = None, bias: bool = True) -> MLP:
    r"""A memorising interpolator built by hand in the spirit of Wen, Li & Ma's scenario (3)
    (arXiv 2307.11007); *not* the paper's own construction, which we could not read.

    For training points x_i ∈ {±1}^d (distinct) with labels y_i = ±1, hidden neuron i has
    w_i = α x_i and b_i = −α(d − 1), so its pre-activation α(x_i·x − d + 1) is α on x_i and at most
    −α on every other point of the cube (x_i·x ≤ d − 2 there): it fires on x_i only. Its output
    weight is y_i/α; the output bias is 0 and neurons beyond the n-th never fire (w = 0, b = −1).
    So the net interpolates the training set exactly and outputs 0 — chance — on every unseen
    point. ``scale`` α (default :func:`optimal_scale`, (d+1)^{1/4}) moves weight between the two
    layers without changing the function; at α* its tr(H) equals :func:`trace_lower_bound`, the
    least of any interpolator with zero output bias: it is a *flattest* interpolator (in that
    class) that does not generalise.

    ``width`` ≥ n (default n) gives a net of the same architecture as ``models.MLP(d, [width], 1)``.
    ``bias=False`` builds the same recipe without biases (w_i = α x_i, output weight
    y_i/(α d), ``MLP(..., bias=False)``): the negative control. A bias-free ReLU neuron cannot
    fire on one point of the cube only (if w·x_i > 0, the d neighbours x' of x_i sum to
    (d − 2) x_i, so w·x' > 0 for one of them when d > 2), and that net does not interpolate.
    """
    x = check_tensor(x_train, "x_train", ndim=2, floating=True, finite=True)
    y = check_tensor(y_train, "y_train", floating=True, finite=True).reshape(-1)
    n, d = x.shape
    if len(y) != n:
        raise ValueError(f"x_train and y_train have mismatched lengths ({n} vs {len(y)}); pass "
                         "one label per point.")
    _check_pm1(x, "x_train")
    _check_pm1(y, "y_train")
    if len(torch.unique(x, dim=0)) != n:
        raise ValueError("x_train has repeated points; one neuron per point needs distinct "
                         "points (sparse_parity draws them distinct).")
    width = n if width is None else check_positive_int(width, "width")
    if width < n:
        raise ValueError(f"width must be at least the number of training points ({n}), got "
                         f"{width}: the construction uses one neuron per point.")
    alpha = optimal_scale(d) if scale is None else check_positive(scale, "scale")
    net = _new_net(d, width, bias)
    hidden, head = net.features[1], net.head
    with torch.no_grad():
        hidden.weight[:n] = alpha * x.cpu()
        if bias:
            hidden.bias[:n] = -alpha * (d - 1)
            head.weight[0, :n] = y.cpu() / alpha
        else:
            head.weight[0, :n] = y.cpu() / (alpha * d)
    return net.to(x.device)


def lookup_interpolator(d: int, k: int, *, width: int | None = None,
                        scale: float | None = None) -> MLP:
    r"""A generalising interpolator of the k-sparse parity with the same tr(H) as
    :func:`memorising_interpolator`: the same recipe on the k relevant coordinates only.

    One hidden neuron per pattern z ∈ {±1}^k: w = α (z, 0, …, 0), b = −α(k − 1), output weight
    parity(z)/α. On any x exactly the neuron of z = x_{1..k} fires, with pre-activation α, so the
    net computes the parity on the whole cube and every point's gradient has the same norm as in
    the memoriser: tr(H) = :func:`interpolator_trace` on any training set, the lower bound at
    α = :func:`optimal_scale`. tr(H) cannot tell this net from the memoriser. ``width`` ≥ 2^k
    (default 2^k)."""
    d, k = check_positive_int(d, "d"), check_positive_int(k, "k")
    if k > d:
        raise ValueError(f"k must be at most d, got k={k}, d={d}.")
    width = 2**k if width is None else check_positive_int(width, "width")
    if width < 2**k:
        raise ValueError(f"width must be at least 2^k = {2**k} (one neuron per pattern of the "
                         f"k relevant coordinates), got {width}.")
    alpha = optimal_scale(d) if scale is None else check_positive(scale, "scale")
    z = hypercube(k)
    net = _new_net(d, width, True)
    with torch.no_grad():
        net.features[1].weight[:2**k, :k] = alpha * z
        net.features[1].bias[:2**k] = -alpha * (k - 1)
        net.head.weight[0, :2**k] = _parity(z, k).reshape(-1) / alpha
    return net


def bias_free_parity_interpolator(d: int, *, width: int | None = None,
                                  scale: float | None = None) -> MLP:
    r"""A *bias-free* two-layer ReLU net computing the 2-sparse parity x₁x₂ on all of {±1}^d, at
    the bias-free lower bound tr(H) = 4√d (:func:`trace_lower_bound` with ``bias=False``).

    Four neurons, w = u(±1, ±1, 0, …, 0) with output weights +a for (1, 1), (−1, −1) and −a for
    (1, −1), (−1, 1): f = a u (|x₁+x₂| − |x₁−x₂|) = 2au·x₁x₂, so 2au = 1. On every point one neuron
    is active (pre-activation 2u) and ‖∇f‖² = 4u² + a²d, balanced (AM–GM equality) at
    u = d^{1/4}/2, a = d^{-1/4} (``scale`` sets u, default that). *Caveat*: the two neurons of the
    other pair sit exactly at their kink (pre-activation 0) on every point, where the loss is not
    twice differentiable; the value 4√d uses autograd's convention relu'(0) = 0, and any nearby
    net whose kink neurons turn active pays a² d more on those points. ``width`` ≥ 4 (default
    4; unused neurons have zero weights)."""
    d = check_positive_int(d, "d")
    if d < 2:
        raise ValueError(f"d must be at least 2 (the parity reads x_1 and x_2), got {d}.")
    width = 4 if width is None else check_positive_int(width, "width")
    if width < 4:
        raise ValueError(f"width must be at least 4 (one neuron per direction ±x_1 ± x_2), got "
                         f"{width}.")
    u = d**0.25 / 2 if scale is None else check_positive(scale, "scale")
    net = _new_net(d, width, False)
    with torch.no_grad():
        net.features[1].weight[:4, :2] = u * torch.tensor([[1.0, 1.0], [-1.0, -1.0],
                                                           [1.0, -1.0], [-1.0, 1.0]])
        net.head.weight[0, :4] = torch.tensor([1.0, 1.0, -1.0, -1.0]) / (2 * u)
    return net


# ------------------------------------------------------------------------------ measurements


def gauss_newton_trace(model: nn.Module, data, *, by_parameter: bool = False):
    r"""tr of the Gauss–Newton part of the mean-squared-loss Hessian,
    (2/(nK)) Σ_i ‖J_i‖²_F with J_i = ∂f(x_i)/∂θ (per-sample Jacobians by ``torch.func``).

    For a two-layer ReLU ``MLP`` this is the *exact* tr(H) wherever no pre-activation sits at the
    kink, at any parameters (the residual part has zero trace; module docstring), computed from
    n Jacobians instead of Hessian-vector products. For deeper nets it is only the Gauss–Newton
    part. ``by_parameter=True`` returns the share of each parameter tensor instead
    (``{name: trace}``; the shares sum to the trace: the diagonal splits by parameter)."""
    model = check_module(model)
    x, _ = as_tensors(data)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def out(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).reshape(-1)

    with eval_mode(model):
        jac = vmap(jacrev(out), in_dims=(None, 0))(params, x.to(model_device(model)))
    n_outputs = next(iter(jac.values())).shape[1]
    parts = {n: float(2 * j.double().pow(2).reshape(len(x), -1).sum(1).mean() / n_outputs)
             for n, j in jac.items()}
    return parts if by_parameter else float(sum(parts.values()))


def firing_pattern(model: MLP, x) -> torch.Tensor:
    """Boolean (N, width): which hidden neurons of a one-hidden-layer ``MLP`` are active
    (pre-activation > 0) on each input."""
    model = check_module(model)
    x = check_tensor(x, "x", ndim=2)
    if not isinstance(model, MLP) or len(model.widths) != 1 or model.norm is not None:
        raise ValueError("model must be a one-hidden-layer toolkit.models.MLP without norm "
                         "layers (a two-layer net), e.g. models.MLP(d, [m], 1).")
    with torch.no_grad(), eval_mode(model):
        return model.features[1](x.to(model_device(model))) > 0


def sign_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Accuracy of sign(output) against ±1 targets, an output of exactly 0 counting as ½ (a coin
    flip), so a net that outputs 0 everywhere scores exactly chance, ½."""
    outputs, targets = outputs.reshape(-1), targets.reshape(-1)
    if outputs.shape != targets.shape:
        raise ValueError(f"outputs and targets differ in size ({outputs.numel()} vs "
                         f"{targets.numel()}).")
    s = torch.sign(outputs)
    return float(((s == torch.sign(targets)).double() + 0.5 * (s == 0).double()).mean())


@dataclass(frozen=True)
class FlatnessReport:
    """One net's training loss, sharpness tr(H) of the training loss (with its standard error;
    0 when exact) and test accuracy / loss."""

    train_loss: float
    trace: float
    trace_stderr: float
    test_accuracy: float
    test_loss: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def measure(model: nn.Module, train, test, *, method: str = "hutch++", n_samples: int = 300,
            seed: int = 0) -> FlatnessReport:
    r"""Train loss, tr(H) of the mean squared training loss and test accuracy of ``model``.

    ``method="hutch++"`` or ``"hutchinson"``: :func:`toolkit.hessian.trace` with ``n_samples``
    Hessian-vector products (Hutch++ is exact when rank(H) ≤ n_samples/3; at an interpolator
    rank(H) ≤ n). ``method="exact"``: :func:`gauss_newton_trace` (exact for two-layer ReLU nets,
    stderr 0). Test accuracy is :func:`sign_accuracy` (ties ½), test loss the mean squared
    error."""
    model = check_module(model)
    with eval_mode(model):
        if method == "exact":
            tr, err = gauss_newton_trace(model, train), 0.0
        else:
            est = hessian.trace(model, "mse", train, method=method, n_samples=n_samples,
                                seed=seed, progress=False)
            tr, err = est.trace, est.stderr
        train_loss = evaluate(model, train, loss="mse", metrics=("loss",))["loss"]
        xt, yt = as_tensors(test, model_device(model))
        with torch.no_grad():
            out = model(xt)
        acc = sign_accuracy(out, yt)
        test_loss = float(((out.reshape(-1) - yt.reshape(-1)) ** 2).mean())
    return FlatnessReport(float(train_loss), float(tr), float(err), acc, test_loss)


# ------------------------------------------------------------------ searching for flat interpolators


def flatness_penalty(model: nn.Module, x) -> torch.Tensor:
    r"""(2/(nK)) Σ_i ‖∇_θ f(x_i)‖² as a *differentiable* scalar tensor (per-sample gradients by
    ``torch.func``, kept in the graph, so ``.backward()`` differentiates through them: double
    backward).

    It is :func:`gauss_newton_trace` with a graph: for a two-layer ReLU ``MLP`` under the mean
    squared loss it equals tr(H) of the training loss wherever no pre-activation sits at the kink,
    at interpolators and elsewhere (module docstring); for deeper nets, the Gauss–Newton part
    only. ``x`` (n, d) are the training inputs (labels do not enter). Outputs of width K are
    averaged over K, as in :func:`gauss_newton_trace`."""
    model = check_module(model)
    x = check_tensor(x, "x", min_ndim=2, floating=True).to(model_device(model))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError("model has no trainable parameters; the penalty would be 0.")
    params = dict(model.named_parameters())
    frozen = {n: p for n, p in params.items() if n not in names}
    live = {n: params[n] for n in names}
    with torch.no_grad():
        n_outputs = model(x[:1]).reshape(-1).numel()

    def out_k(p, xi, k):
        return functional_call(model, {**p, **frozen}, (xi.unsqueeze(0),)).reshape(-1)[k]

    total = x.new_zeros(())
    for k in range(n_outputs):
        g = vmap(grad(out_k), in_dims=(None, 0, None))(live, x, k)
        total = total + sum(v.pow(2).reshape(len(x), -1).sum(1) for v in g.values()).mean()
    return 2 * total / n_outputs


def minimise_sharpness(model: nn.Module, x, y, *, weights: Sequence[float] = (0.1, 1e-3),
                       steps: int = 400, fit_steps: int = 0, lr: float = 0.02,
                       optimizer: str = "adam", device="auto", seed: int = 0,
                       record_every: int = 10):
    r"""Search for an approximately *flattest interpolator* of (x, y) by continuation; trains
    ``model`` in place and returns its history (a ``pandas.DataFrame``: ``step``, ``phase``,
    ``weight``, ``train_loss``, ``penalty``).

    Our own procedure (not an algorithm of Wen, Li & Ma, arXiv 2307.11007, whose experiments we
    could not read): minimise L(θ) + λ·P(θ), L the mean squared training loss and P =
    :func:`flatness_penalty`, with λ lowered geometrically from ``weights[0]`` to ``weights[1]``
    over ``steps`` full-batch steps of ``optimizer`` (``"adam"`` or ``"sgd"``, rate ``lr``).
    A minimiser of L + λP has L = O(λ), so as λ → 0 it tends to an interpolator with the least P
    *near the path*: a local search, not a certificate of the global minimum (compare the final
    tr(H) with :func:`trace_lower_bound`). ``fit_steps`` > 0 first fits the data without the
    penalty ("fit, then flatten"). For two-layer ReLU nets P is tr(H) itself (module docstring);
    measure the final net with :func:`measure` (``toolkit.hessian.trace``), not with P.
    ``weights=(0, 0)`` is plain full-batch training with the same optimizer: the control."""
    model = check_module(model)
    x = check_tensor(x, "x", min_ndim=2, floating=True, finite=True)
    y = check_tensor(y, "y", floating=True, finite=True)
    if len(x) != len(y):
        raise ValueError(f"x and y have mismatched lengths ({len(x)} vs {len(y)}).")
    if len(weights) != 2:
        raise ValueError(f"weights must be (start, end) penalty weights, got {weights!r}.")
    w0 = check_positive(weights[0], "weights[0]", allow_zero=True)
    w1 = check_positive(weights[1], "weights[1]", allow_zero=True)
    if (w0 == 0) != (w1 == 0) or w1 > w0:
        raise ValueError(f"weights must be (start, end) with start >= end > 0 (a decreasing "
                         f"continuation) or (0, 0) (no penalty), got {weights!r}.")
    steps = check_positive_int(steps, "steps")
    fit_steps = check_positive_int(fit_steps, "fit_steps", allow_zero=True)
    lr = check_positive(lr, "lr")
    record_every = check_positive_int(record_every, "record_every")
    check_choice(optimizer, "optimizer", ("adam", "sgd"))
    dev = get_device(device)
    model.to(dev).train()
    x, y = x.to(dev), y.to(dev).reshape(len(x), -1)
    torch.manual_seed(seed)
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(model.parameters(),
                                                                        lr=lr)
    lams = (torch.zeros(steps) if w0 == 0 else
            torch.logspace(math.log10(w0), math.log10(w1), steps)).tolist()
    schedule = [("fit", 0.0)] * fit_steps + [("flatten", lam) for lam in lams]
    rows = []
    for step, (phase, lam) in enumerate(schedule):
        loss = ((model(x) - y) ** 2).mean()
        pen = flatness_penalty(model, x) if lam > 0 or step % record_every == 0 else None
        obj = loss + lam * pen if lam > 0 else loss
        opt.zero_grad(set_to_none=True)
        obj.backward()
        if step % record_every == 0:
            rows.append({"step": step, "phase": phase, "weight": lam, "train_loss": float(loss.detach()),
                         "penalty": float(pen.detach())})
        opt.step()
    model.eval()
    with torch.no_grad():
        loss = float(((model(x) - y) ** 2).mean())
    rows.append({"step": len(schedule), "phase": "final", "weight": lams[-1] if lams else 0.0,
                 "train_loss": loss, "penalty": float(flatness_penalty(model, x).detach())})
    return pd.DataFrame(rows)
