"""Exercises for notebook 02 (loss landscapes)."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from ._core import FunctionExercise, PredictionExercise, ThoughtExercise, ValueExercise

__all__ = ["midpoint_loss", "filter_normalise", "eos_prediction", "is_lambda_max_flatness",
           "filter_normalise_reference"]


def _loss_at(net, params, train_set):
    from torch.func import functional_call

    x, y = train_set.tensors
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    with torch.no_grad():
        out = functional_call(net, params, (x.to(device),))
    net.train(was_training)
    return F.cross_entropy(out, y.to(device))


def _midpoint_expected(init, model, train_set):
    p0, p1 = dict(init.named_parameters()), dict(model.named_parameters())
    return _loss_at(model, {k: (p0[k].detach() + p1[k].detach()) / 2 for k in p1}, train_set)


def _end_losses(ctx):
    return (float(_loss_at(ctx["model"], dict(ctx["init"].named_parameters()), ctx["train_set"])),
            float(_loss_at(ctx["model"], dict(ctx["model"].named_parameters()), ctx["train_set"])))


def _midpoint_example():
    from toolkit import data, models, train

    train_set, _ = data.gaussian_mixture(120, 3, 5, separation=2.0, seed=0)
    torch.manual_seed(0)
    model = models.MLP(5, [16], 3)
    init = copy.deepcopy(model)
    train.fit(model, train_set, epochs=5, batch_size=32, lr=0.1, seed=0, progress=False)
    return {"init": init, "model": model, "train_set": train_set, "device": torch.device("cpu"),
            "copy": copy}


midpoint_loss = ValueExercise(
    section="1",
    prompt="""Build the network halfway along the straight path, θ(½) = (θ₀ + θ₁)/2, from `init`
    (θ₀) and `model` (θ₁) by hand, and compute its cross-entropy on the whole `train_set` (in eval
    mode). Compare it with the `path` curve at α = 0.5.""",
    expected=_midpoint_expected,
    rtol=1e-4, atol=1e-7,
    diagnoses=[(lambda a, e, ctx: math.isclose(float(a), _end_losses(ctx)[0], rel_tol=1e-4),
                "that is the loss at θ₀ (α = 0): average the two networks' parameters"),
               (lambda a, e, ctx: math.isclose(float(a), _end_losses(ctx)[1], rel_tol=1e-4),
                "that is the loss at θ₁ (α = 1): average the two networks' parameters"),
               (lambda a, e, ctx: math.isclose(float(a), sum(_end_losses(ctx)) / 2, rel_tol=1e-4),
                "you averaged the two end *losses*; the loss at the averaged *parameters* differs "
                "(the loss is not linear in θ)")],
    hints=["Copy the model (`copy.deepcopy(model)`) and overwrite each parameter with the average "
           "of the corresponding parameters of `init` and `model`, inside `torch.no_grad()`.",
           "`x, y = train_set.tensors`; `F.cross_entropy(mid(x), y)` with `mid.eval()`."],
    solution="""
    mid = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p_mid, p0, p1 in zip(mid.parameters(), init.parameters(), model.parameters()):
            p_mid.copy_((p0 + p1) / 2)
        x, y = train_set.tensors
        answer = torch.nn.functional.cross_entropy(mid(x.to(device)), y.to(device))
    """,
    example=_midpoint_example,
    wrong=[("x, y = train_set.tensors\n"
            "with torch.no_grad():\n"
            "    l0 = torch.nn.functional.cross_entropy(init.eval()(x), y)\n"
            "    l1 = torch.nn.functional.cross_entropy(model.eval()(x), y)\n"
            "answer = (l0 + l1) / 2", "not linear"),
           ("x, y = train_set.tensors\n"
            "with torch.no_grad():\n"
            "    answer = torch.nn.functional.cross_entropy(init.eval()(x), y)", "θ₀")],
)


def filter_normalise_reference(direction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Li et al. 2018 (arXiv 1712.09913): d_i ← d_i · ‖θ_i‖ / ‖d_i‖ for every filter i (slice
    along dimension 0; for a conv kernel everything of one output channel)."""
    rows_d = direction.reshape(direction.shape[0], -1)
    rows_w = weight.reshape(weight.shape[0], -1)
    scale = rows_w.norm(dim=1, keepdim=True) / rows_d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (rows_d * scale).reshape(direction.shape)


def _filter_cases():
    gen = torch.Generator().manual_seed(2)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    dead = rand(4, 6)
    dead[1] = 0.0
    return [("a 5×3 linear layer", (rand(5, 3), rand(5, 3) * 3)),
            ("a conv kernel (4 filters of 2×3×3)", (rand(4, 2, 3, 3), rand(4, 2, 3, 3))),
            ("a layer with one row", (rand(1, 7), rand(1, 7))),
            ("a dead neuron (a zero row of the weights)", (rand(4, 6), dead))]


def _columns(out, expected, args):
    d, w = args
    if d.dim() != 2:
        return False
    wrong = d * w.norm(dim=0, keepdim=True) / d.norm(dim=0, keepdim=True)
    return torch.allclose(torch.as_tensor(out), wrong, rtol=1e-4)


def _whole_layer(out, expected, args):
    d, w = args
    return torch.allclose(torch.as_tensor(out), d * w.norm() / d.norm(), rtol=1e-4)


def _unit_rows(out, expected, args):
    out = torch.as_tensor(out)
    norms = out.reshape(out.shape[0], -1).norm(dim=1)
    return torch.allclose(norms, torch.ones_like(norms), rtol=1e-4)


def _conv_filter(out, expected, args):
    """Norms along dim 1 only: right for a linear layer, wrong for a conv kernel."""
    d, w = args
    wrong = d * w.norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True)
    return d.dim() > 2 and torch.allclose(torch.as_tensor(out), wrong, rtol=1e-4)


filter_normalise = FunctionExercise(
    section="2",
    prompt="""Write `filter_normalise(direction, weight)` for one layer: rescale every filter of
    the random `direction` to the norm of the same filter of `weight`, d_i ← d_i · ‖θ_i‖ / ‖d_i‖
    (Li et al. 2018). A filter is a slice along dimension 0: a row of a linear layer's weight, one
    output channel (all its input channels and kernel entries) of a conv kernel. Do not modify the
    inputs.""",
    reference=filter_normalise_reference,
    cases=_filter_cases,
    function_name="filter_normalise",
    rtol=1e-6, atol=1e-9,
    diagnoses=[(_whole_layer, "that is layer normalisation (one norm for the whole matrix); "
                              "normalise each filter (row) separately"),
               (_columns, "you normalised columns (inputs); a filter is a row, one output neuron: "
                          "take norms along dim=1"),
               (_unit_rows, "every filter of your direction has norm 1: scale it to the norm of "
                            "the same filter of the weights"),
               (_conv_filter, "for a conv kernel a filter is the whole output channel: flatten "
                              "all dimensions but the first, `d.reshape(d.shape[0], -1)`")],
    hints=["Flatten every filter to a row: `d.reshape(d.shape[0], -1)`, the same for the "
           "weights.",
           "`scale = w_rows.norm(dim=1, keepdim=True) / d_rows.norm(dim=1, keepdim=True)`; reshape "
           "the product back to `direction.shape`."],
    solution="""
    def filter_normalise(direction, weight):
        d = direction.reshape(direction.shape[0], -1)
        w = weight.reshape(weight.shape[0], -1)
        return (d * w.norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True)).reshape(direction.shape)
    """,
    wrong=[("def filter_normalise(direction, weight):\n"
            "    return direction * weight.norm() / direction.norm()", "layer normalisation"),
           ("def filter_normalise(direction, weight):\n"
            "    return direction / direction.norm(dim=1, keepdim=True)", "norm of the same filter"),
           ("def filter_normalise(direction, weight):\n"
            "    return direction * weight.norm(dim=0, keepdim=True) / direction.norm(dim=0, "
            "keepdim=True)", "columns"),
           ("def filter_normalise(direction, weight):\n"
            "    return direction * weight.norm(dim=1, keepdim=True) / direction.norm(dim=1, "
            "keepdim=True)", "conv kernel")],
    explanation="`landscape.random_direction(net, normalization='filter')` does this for every "
                "layer; it zeroes the directions of biases and BatchNorm parameters "
                "(`ignore='biasbn'`), as Li et al. do.",
)


def _eos_outcome(history, lr):
    lam = history["lambda_max"].dropna().to_numpy()
    late = lam[len(lam) // 2:]
    ratio = float(np.median(late)) / (2.0 / lr)
    return "a" if ratio < 0.8 else ("b" if ratio <= 1.2 else "c")


def _eos_example():
    import pandas as pd

    epochs = np.arange(0, 100, 10)
    lam = [0.2, 0.5, 0.8, 1.05, 0.97, 1.02, 0.99, 1.01, 0.98, 1.0]
    return {"history": pd.DataFrame({"epoch": epochs, "lambda_max": lam}), "lr": 2.0}


eos_prediction = PredictionExercise(
    section="6",
    prompt="""Before running section 6: full-batch GD at η = `p.eos_lr`, so 2/η = 1. On a quadratic
    GD diverges once the curvature exceeds 2/η. Where is λ_max over the second half of training?""",
    choices={"a": "well below 2/η (under 80 % of it): the net never gets sharp enough",
             "b": "around 2/η (within ±20 %): it rises to the edge and hovers there",
             "c": "far above 2/η (over 120 %): the sharpness runs away"},
    outcome=_eos_outcome,
    explanations={"a": "progressive sharpening: λ_max keeps rising while the loss falls, until "
                       "it reaches 2/η",
                  "c": "above 2/η GD is unstable along the top eigenvector, yet the dynamics push "
                       "λ_max back down to 2/η instead of diverging (Cohen et al. observe it; "
                       "Damian et al. 2023 explain it as self-stabilisation)"},
    hints=["Read the claim of section 6 again: what happens to λ_max once it reaches 2/η?"],
    solution='answer = "b"',
    example=_eos_example,
    wrong=[('answer = "c"', "self-stabilisation"), ('answer = "a"', "sharpening")],
)


is_lambda_max_flatness = ThoughtExercise(
    section="5",
    prompt="""Section 5 ranks minima by λ_max. The rescaling of section 2 (layer × α, next layer ×
    1/α) leaves the function unchanged. What does it do to λ_max, and what does that say about
    λ_max as a measure of flatness?""",
    solution="""The rescaling changes the Hessian: in the rescaled coordinates the curvature with
    respect to the first layer's weights is divided by α² and that of the next layer multiplied
    by α², so λ_max can be made as large as we like with the same function (Dinh, Pascanu, Bengio
    & Bengio 2017, arXiv 1703.04933). λ_max is therefore only comparable between networks of the
    same parameterisation and scale, as in section 5 (same architecture and initialisation,
    different optimisers); scale-invariant measures (filter-normalised cuts, ASAM's adaptive
    sharpness) remove the ambiguity.""",
)
