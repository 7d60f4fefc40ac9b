"""Exercises for notebook 10 (sharpness minimisation, flattest interpolators that memorise)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from ._core import FunctionExercise, PredictionExercise, ThoughtExercise, ValueExercise

__all__ = ["memoriser_accuracy", "trace_by_hand", "memorising_neuron", "why_flatness_is_blind",
           "bias_free_firing", "memorising_neuron_reference"]


# ------------------------------------------------------- 1. the memoriser's test accuracy, predicted


def _memoriser_outcome(hand_built):
    acc = hand_built["memoriser"].test_accuracy
    return "a" if acc > 0.7 else "c" if acc < 0.3 else "b"


def _hand_built_example():
    from toolkit import sharpness

    (x, y), test = sharpness.sparse_parity(12, 6, 2, seed=0)
    memoriser = sharpness.memorising_interpolator(x, y)
    return {"hand_built": {"memoriser": sharpness.measure(memoriser, (x, y), test, method="exact")}}


memoriser_accuracy = PredictionExercise(
    section="1",
    prompt="""Before building it: the memoriser fits every training label exactly, and no
    interpolator with zero output bias has a smaller tr(H). What will its test accuracy on the
    unseen points of the cube be?""",
    choices={"a": "above 0.7: a flattest interpolator generalises, like SAM's nets",
             "b": "between 0.3 and 0.7: about chance",
             "c": "below 0.3: worse than chance"},
    outcome=_memoriser_outcome,
    explanations={"a": "being flattest says nothing about the unseen points: no neuron of the "
                       "memoriser fires there, so it outputs exactly 0 on each of them, which "
                       "sign_accuracy counts as a coin flip (½)",
                  "c": "to be worse than chance it would have to output the wrong sign; it "
                       "outputs exactly 0 on every unseen point, which counts ½"},
    hints=["Where does each hidden neuron of the memoriser fire, and what does the net output where "
           "none fires?"],
    solution='answer = "b"',
    example=_hand_built_example,
    wrong=[('answer = "a"', "says nothing about the unseen points"),
           ('answer = "c"', "outputs exactly 0"),
           ('answer = "flat"', "choose one of")],
    explanation="The construction fits the training set and is silent everywhere else: flatness, "
                "measured on the training loss, does not reach the unseen points.",
)


# ---------------------------------------------------------------- 1. tr(H) from per-point gradients


def _trace_expected(net, x_train):
    from toolkit import sharpness

    return sharpness.gauss_newton_trace(net, (x_train, torch.zeros(len(x_train), 1)))


def _batch_gradient_norm2(net, x):
    grads = torch.autograd.grad(net(x).sum(), [p for p in net.parameters() if p.requires_grad])
    return float(sum(g.double().pow(2).sum() for g in grads))


def _is_batch_gradient(a, e, ctx):
    n = len(ctx["x_train"])
    s = _batch_gradient_norm2(ctx["net"], ctx["x_train"])
    return any(np.isclose(float(a), c * s, rtol=1e-3) for c in (1, 2, 1 / n, 2 / n, 1 / n**2,
                                                                   2 / n**2, 1 / n**3, 2 / n**3))


def _is_sum(a, e, ctx):
    n = len(ctx["x_train"])
    return any(np.isclose(float(a), c * float(e), rtol=1e-3) for c in (n, n / 2))


def _trace_example():
    from toolkit import sharpness

    (x, y), _ = sharpness.sparse_parity(12, 6, 2, seed=1)
    # an interpolator (its loss gradient vanishes) at a rescaling that is not the flattest one
    return {"net": sharpness.memorising_interpolator(x, y, width=16, scale=1.3), "x_train": x,
            "y_train": y}


trace_by_hand = ValueExercise(
    section="1",
    prompt="""Compute tr(H) of the training loss of `net`, the last net the training loop fitted
    (SAM, the last seed), from its per-point gradients: for a two-layer ReLU net under the mean
    squared loss, tr(H) = (2/n) Σᵢ ‖∇_θ f(xᵢ)‖² exactly (the residual part of the Hessian has zero
    trace). Compare with its Hutch++ estimate, `reports["SAM"][-1].trace`.""",
    expected=_trace_expected,
    rtol=1e-3, atol=1e-6,
    diagnoses=[(lambda a, e, ctx: abs(float(a)) < 1e-3 * float(e),
                "your answer is (nearly) zero: did you differentiate the loss? At an interpolator "
                "its gradient vanishes; the trace is built from the gradients of the output "
                "f(xᵢ), one training point at a time"),
               (_is_batch_gradient,
                "you differentiated the summed (or averaged) output in one backward pass: that "
                "gives ‖Σᵢ ∇f(xᵢ)‖², not Σᵢ ‖∇f(xᵢ)‖²; take one gradient per training point"),
               (lambda a, e, ctx: np.isclose(float(a), float(e) / 2, rtol=1e-3),
                "half the expected value: the squared loss (f − y)² brings a factor 2, "
                "tr(H) = (2/n) Σᵢ ‖∇f(xᵢ)‖²"),
               (_is_sum,
                "you summed over the training points; the loss is a mean over them, so divide "
                "the sum of squared gradient norms by n (and keep the factor 2)")],
    hints=["For one point: `out = net(xi.unsqueeze(0)).squeeze()`, then "
           "`torch.autograd.grad(out, list(net.parameters()))` gives ∇_θ f(xᵢ), one tensor per "
           "parameter.",
           "Sum the squares of every entry of those tensors, add over the n points, multiply by "
           "2/n."],
    solution="""
    total = 0.0
    for xi in x_train:
        out = net(xi.unsqueeze(0)).squeeze()
        grads = torch.autograd.grad(out, list(net.parameters()))
        total += sum(float(g.pow(2).sum()) for g in grads)
    answer = 2 * total / len(x_train)
    """,
    example=_trace_example,
    wrong=[("total = 0.0\n"
            "for xi in x_train:\n"
            "    grads = torch.autograd.grad(net(xi.unsqueeze(0)).squeeze(), list(net.parameters()))\n"
            "    total += sum(float(g.pow(2).sum()) for g in grads)\n"
            "answer = total / len(x_train)", "factor 2"),
           ("total = 0.0\n"
            "for xi in x_train:\n"
            "    grads = torch.autograd.grad(net(xi.unsqueeze(0)).squeeze(), list(net.parameters()))\n"
            "    total += sum(float(g.pow(2).sum()) for g in grads)\n"
            "answer = 2 * total", "divide"),
           ("grads = torch.autograd.grad(net(x_train).sum(), list(net.parameters()))\n"
            "answer = 2 * sum(float(g.pow(2).sum()) for g in grads) / len(x_train)",
            "one backward pass"),
           ("loss = ((net(x_train) - y_train) ** 2).mean()\n"
            "grads = torch.autograd.grad(loss, list(net.parameters()))\n"
            "answer = sum(float(g.pow(2).sum()) for g in grads)", "differentiate the loss")],
    explanation="`sharpness.gauss_newton_trace` computes the same sum with `torch.func` (per-sample "
                "Jacobians in one `vmap`); Hutch++ (`hessian.trace`) gets it from Hessian-vector "
                "products alone, without the closed form.",
)


# ------------------------------------------------------------------ 1. one neuron for one point


def memorising_neuron_reference(x_i: torch.Tensor, alpha: float):
    """(w, b) with pre-activation w·x + b equal to α at x_i and −α at each of its d neighbours:
    w = α x_i, b = −α(d − 1) (the neuron of ``sharpness.memorising_interpolator``)."""
    d = x_i.shape[-1]
    return alpha * x_i, float(-alpha * (d - 1))


def _neuron_cases():
    gen = torch.Generator().manual_seed(10)

    def point(d, dtype=torch.float32):
        return (torch.randint(0, 2, (d,), generator=gen) * 2 - 1).to(dtype)

    return [("a point of the 10-cube, α = 1.7", (point(10), 1.7)),
            ("the all −1 point of the 5-cube, α = 0.5", (-torch.ones(5), 0.5)),
            ("the 3-cube, α = 1", (point(3), 1.0)),
            ("the 1-cube (d = 1), α = 2", (torch.ones(1), 2.0)),
            ("a float64 point of the 12-cube, α = 13^(1/4)", (point(12, torch.float64), 13 ** 0.25))]


def _pre_activations(out, args):
    """The student's pre-activation on x_i and on each of its d neighbours (one coordinate
    flipped)."""
    x_i, _ = args
    w, b = out
    w, x = torch.as_tensor(w, dtype=torch.float64).reshape(-1), x_i.double()
    b = float(torch.as_tensor(b, dtype=torch.float64).reshape(()))
    neighbours = x * (1 - 2 * torch.eye(len(x), dtype=torch.float64))
    return float(w @ x) + b, (neighbours @ w + b).numpy()


def _no_bias(out, expected, args):
    return float(torch.as_tensor(out[1]).reshape(())) == 0.0


def _never_fires(out, expected, args):
    own, _ = _pre_activations(out, args)
    return own <= 1e-6


def _own_not_alpha(out, expected, args):
    own, _ = _pre_activations(out, args)
    return not math.isclose(own, args[1], rel_tol=1e-4, abs_tol=1e-6)


def _neighbours_not_minus_alpha(out, expected, args):
    _, near = _pre_activations(out, args)
    return not np.allclose(near, -args[1], rtol=1e-4, atol=1e-6)


memorising_neuron = FunctionExercise(
    section="1",
    prompt="""Write `memorising_neuron(x_i, alpha)`: the weights `w` (a vector like `x_i`) and the
    bias `b` (a number) of a ReLU neuron whose pre-activation w·x + b is α on the point x_i ∈ {±1}^d
    and −α on each of its d neighbours (x_i with one coordinate flipped). Such a neuron fires on
    x_i only: every other point of the cube is farther still. Return `(w, b)`.""",
    reference=memorising_neuron_reference,
    cases=_neuron_cases,
    function_name="memorising_neuron",
    rtol=1e-5, atol=1e-6,
    diagnoses=[(_no_bias, "without a bias the neuron fires wherever w·x > 0, about half the cube; "
                          "the bias must cancel all of w·x_i but α"),
               (_never_fires, "the pre-activation on x_i itself is not positive, so relu gives 0 "
                              "there and the neuron never fires; raise b"),
               (_own_not_alpha, "on its own point the pre-activation w·x_i + b must be α; yours is "
                                "not (did you scale both w and b by α?)"),
               (_neighbours_not_minus_alpha,
                "on a neighbour of x_i (coordinate j flipped) the pre-activation must be −α; "
                "flipping x_i[j] changes w·x by −2 w[j] x_i[j], so 2 w[j] x_i[j] = 2α fixes every "
                "w[j]")],
    hints=["Flipping coordinate j of x_i changes w·x by −2 w[j] x_i[j]; the pre-activation must "
           "drop from α to −α, so w[j] x_i[j] = α for every j.",
           "So w = α x_i and w·x_i = α d; the bias brings that down to α: b = −α(d − 1)."],
    solution="""
    def memorising_neuron(x_i, alpha):
        d = len(x_i)
        return alpha * x_i, -alpha * (d - 1)
    """,
    wrong=[("def memorising_neuron(x_i, alpha):\n"
            "    return alpha * x_i, 0.0", "without a bias"),
           ("def memorising_neuron(x_i, alpha):\n"
            "    return alpha * x_i, -alpha * len(x_i)", "never fires"),
           ("def memorising_neuron(x_i, alpha):\n"
            "    return x_i, -(len(x_i) - 1.0)", "scale both"),
           ("def memorising_neuron(x_i, alpha):\n"
            "    return 2 * alpha * x_i, alpha - 2 * alpha * len(x_i)", "neighbour")],
    explanation="With b = −α(d − 1) the pre-activation is α(x_i·x − d + 1) = α(1 − 2·#flips): α "
                "on x_i, −α one flip away and lower beyond, so the neuron fires on x_i only. "
                "`sharpness.memorising_interpolator` uses one such neuron per training point, with "
                "output weight y_i/α.",
)


# ------------------------------------------------------------------------------- thought question


why_flatness_is_blind = ThoughtExercise(
    section="1",
    prompt="""The memoriser and the lookup net have exactly the same tr(H), yet one scores chance
    and the other is perfect. Why can tr(H) not tell them apart, and what does that say about
    explaining SAM's generalisation by its flatness?""",
    solution="""tr(H) = (2/n) Σᵢ ‖∇_θ f(xᵢ)‖² depends only on the gradients of the net at the
    *training* points. At each training point both nets have exactly one active neuron, with
    pre-activation α and output weight ±1/α, so every per-point gradient norm, and hence tr(H),
    is the same; both sit at the lower bound. The two nets differ only off the training set (the
    memoriser outputs 0 there, the lookup net the parity), where the training loss and its
    curvature do not look. A flatness measure can separate them only through how the per-point
    gradients overlap: the lookup net reuses four neurons for all points, the memoriser one neuron
    per point, so their Hessians have different spectra (in the toy at SEED = 0 the top
    eigenvalue is about 2.1 for the memoriser and 4.3 for the lookup net: by that measure the
    memoriser is the *flatter* one). So being flat, in either sense, does not imply generalising
    here, and since SAM's nets are sharper than both hand-built interpolators yet generalise, the
    flatness SAM reaches is not what explains their test accuracy in this toy. This is the point of
    Wen, Li & Ma's title (arXiv 2307.11007): sharpness minimisation algorithms do not *only*
    minimise sharpness; what else they do is not derived in this notebook.""",
)


# ------------------------------------------------------------- 2. a bias-free neuron's firing count


def _firing_expected(no_bias_recipe, cube):
    # in exact arithmetic: x₀ is the sign pattern of neuron 0's weights (w = α x₀), and x₀·x is an
    # integer; float32's α x₀·x can round a tie (x₀·x = 0) either way (see the explanation)
    x0 = torch.sign(no_bias_recipe.features[1].weight[0].detach()).double()
    return int(((cube.double() @ x0) > 0).sum())


def _firing_example():
    from toolkit import sharpness

    (x, y), _ = sharpness.sparse_parity(8, 6, 2, seed=0)
    return {"no_bias_recipe": sharpness.memorising_interpolator(x, y, bias=False),
            "cube": sharpness.hypercube(6), "preset": SimpleNamespace(d=6)}


def _with_ties(a, e, ctx):
    d = ctx["cube"].shape[1]
    return d % 2 == 0 and float(a) == sum(math.comb(d, j) for j in range((d + 1) // 2, d + 1))


bias_free_firing = ValueExercise(
    section="2",
    prompt="""Without biases the recipe's neuron 0 has w = α x₀ and fires where α x₀·x > 0. On how
    many of the 2^d points of the cube does it fire (in exact arithmetic)? Count them with
    `math.comb` before the figure shows it: x₀·x = d − 2·(number of coordinates where x differs
    from x₀).""",
    expected=_firing_expected,
    rtol=0, atol=0.5,
    diagnoses=[(_with_ties, "you counted the points with x₀·x = 0 (x agrees with x₀ on exactly "
                            "d/2 coordinates); relu(0) = 0, so the neuron does not fire there"),
               (lambda a, e, ctx: float(a) == 2 ** (ctx["cube"].shape[1] - 1),
                "not exactly half the cube: x ↦ −x pairs a firing point with a silent one, but "
                "the points with x₀·x = 0 are silent on both sides"),
               (lambda a, e, ctx: float(a) == float(e) - 1,
                "x₀ itself is a point of the cube, and the neuron fires on it (x₀·x₀ = d > 0)")],
    hints=["The neuron fires where x agrees with x₀ on more than d/2 coordinates.",
           "`sum(math.comb(d, j) for j in range(d // 2 + 1, d + 1))`, with j the number of "
           "agreeing coordinates."],
    solution="answer = sum(math.comb(preset.d, j) for j in range(preset.d // 2 + 1, preset.d + 1))",
    example=_firing_example,
    wrong=[("answer = sum(math.comb(preset.d, j) for j in range(preset.d // 2, preset.d + 1))",
            "x₀·x = 0"),
           ("answer = 2 ** (preset.d - 1)", "not exactly half"),
           ("answer = sum(math.comb(preset.d, j) for j in range(preset.d // 2 + 1, preset.d))",
            "x₀ itself")],
    explanation="For d = 10 that is 386 of the 1024 points, 385 of them other than x₀: far from "
                "one, so the bias-free recipe cannot memorise point by point. The check counts in "
                "exact arithmetic. The figure uses float32, where α x₀·x at a tie (x₀·x = 0) can "
                "round either way: it shows 386 in the toy preset, but in the full preset "
                "(d = 12) 1805 points instead of the exact 1586.",
)
