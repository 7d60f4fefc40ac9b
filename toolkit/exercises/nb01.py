"""Exercises for notebook 01 (the neural tangent kernel)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ._core import FunctionExercise, PredictionExercise, ThoughtExercise, ValueExercise

__all__ = ["ntk_entry", "relu_nngp", "drift_prediction", "mode_decay", "why_constant_kernel",
           "relu_nngp_reference"]


def _tiny_net(width: int = 32, depth: int = 2, seed: int = 0):
    from toolkit import models

    torch.manual_seed(seed)
    return models.MLP(4, [width] * depth, 1, parameterization="ntk").double()


def _ntk_example():
    gen = torch.Generator().manual_seed(0)
    return {"net": _tiny_net(), "x_conv": torch.randn(6, 4, generator=gen, dtype=torch.float64)}


def _ntk_expected(net, x_conv):
    from toolkit import ntk

    return ntk.empirical_ntk(net, x_conv[:2], progress=False)[0, 1]


def _is_diagonal_entry(answer, expected, ctx):
    from toolkit import ntk

    k = ntk.empirical_ntk(ctx["net"], ctx["x_conv"][:2], progress=False)
    return any(math.isclose(float(answer), float(k[i, i]), rel_tol=1e-4) for i in (0, 1))


def _is_nngp_like(answer, expected, ctx):
    """The product of the *outputs* f(x0) f(x1) instead of their gradients."""
    with torch.no_grad():
        out = ctx["net"](ctx["x_conv"][:2]).reshape(-1)
    return math.isclose(float(answer), float(out[0] * out[1]), rel_tol=1e-4)


ntk_entry = ValueExercise(
    section="1",
    prompt="""Compute one entry of the empirical NTK by hand: Θ(x₀, x₁) = ∇_θ f(x₀) · ∇_θ f(x₁)
    for the network `net` of section 1 (the last one of the loop) and the first two inputs of
    `x_conv`, with `torch.autograd.grad`. Check it against `ntk.empirical_ntk`.""",
    expected=_ntk_expected,
    rtol=1e-6, atol=1e-9,
    diagnoses=[(_is_diagonal_entry, "that is a diagonal entry Θ(x₀, x₀) or Θ(x₁, x₁): take the "
                                    "gradients at two different inputs"),
               (_is_nngp_like, "you multiplied the outputs f(x₀) f(x₁); the NTK multiplies their "
                               "gradients with respect to the parameters")],
    hints=["`torch.autograd.grad(net(x_conv[:1]).sum(), list(net.parameters()))` gives the "
           "gradient of f(x₀) as one tensor per parameter.",
           "Do the same for x₁, multiply the two gradients parameter by parameter and add "
           "everything up: `sum((a * b).sum() for a, b in zip(g0, g1))`."],
    solution="""
    params = list(net.parameters())
    g0 = torch.autograd.grad(net(x_conv[:1]).sum(), params)
    g1 = torch.autograd.grad(net(x_conv[1:2]).sum(), params)
    answer = sum((a * b).sum() for a, b in zip(g0, g1))
    """,
    example=_ntk_example,
    wrong=[("params = list(net.parameters())\n"
            "g0 = torch.autograd.grad(net(x_conv[:1]).sum(), params)\n"
            "answer = sum((a * a).sum() for a in g0)", "diagonal entry"),
           ("answer = (net(x_conv[:1]) * net(x_conv[1:2])).sum()", "gradients")],
    explanation="In the NTK parameterisation every entry is an average over the width of terms "
                "of size O(1), which is why it concentrates (section 1's n^-1/2).",
)


def relu_nngp_reference(cov: torch.Tensor, sigma_w2: float = 2.0) -> torch.Tensor:
    """One layer of the ReLU (arc-cosine, degree 1) NNGP recursion, Cho & Saul 2009:
    Σ'(x, y) = σ_w² / (2π) · √(Σ_xx Σ_yy) · (sin θ + (π − θ) cos θ), cos θ = Σ_xy / √(Σ_xx Σ_yy)."""
    d = torch.sqrt(torch.diagonal(cov))
    norm = d[:, None] * d[None, :]
    cos = (cov / norm).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    return sigma_w2 / (2 * math.pi) * norm * (torch.sin(theta) + (math.pi - theta) * cos)


def _cov_cases():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    dup = torch.cat([x[:3], x[:1], -x[1:2]])  # a repeated input and an antipodal one
    single = torch.randn(1, 7, generator=gen, dtype=torch.float64)
    return [("random inputs", (x @ x.T / 3,)),
            ("a repeated input (θ = 0) and an antipodal one (θ = π)", (dup @ dup.T / 3,)),
            ("a single input", (single @ single.T / 7,)),
            ("σ_w² = 1", (x @ x.T / 3, 1.0))]


def _has_nan(out, expected, args):
    return bool(torch.isnan(torch.as_tensor(out)).any())


def _not_symmetric(out, expected, args):
    out = torch.as_tensor(out)
    return out.dim() == 2 and not torch.allclose(out, out.T, atol=1e-8)


def _missing_sigma(out, expected, args):
    sigma_w2 = args[1] if len(args) > 1 else 2.0
    return torch.allclose(torch.as_tensor(out, dtype=torch.float64) * sigma_w2, expected,
                          rtol=1e-4, atol=1e-8)


relu_nngp = FunctionExercise(
    section="1",
    prompt="""Write `relu_nngp(cov, sigma_w2=2.0)`: one layer of the infinite-width recursion that
    `ntk.analytic_ntk` runs. Given the covariance Σ of a layer's pre-activations (N × N), return
    Σ'(x, y) = σ_w²/(2π) · √(Σ_xx Σ_yy) · (sin θ + (π − θ) cos θ), with cos θ = Σ_xy/√(Σ_xx Σ_yy)
    (the arc-cosine kernel of Cho & Saul 2009).""",
    reference=relu_nngp_reference,
    cases=_cov_cases,
    function_name="relu_nngp",
    rtol=1e-6, atol=1e-9,
    diagnoses=[(_has_nan, "your kernel has NaN: rounding puts cos θ slightly above 1 for repeated "
                          "inputs; clamp it to [−1, 1] before `torch.arccos`"),
               (_not_symmetric, "your kernel is not symmetric: use √(Σ_xx Σ_yy), the two "
                                "diagonal entries, for every pair"),
               (_missing_sigma, "off by the factor σ_w²: multiply by `sigma_w2`")],
    hints=["`d = torch.sqrt(torch.diagonal(cov))` and `norm = d[:, None] * d[None, :]` give "
           "√(Σ_xx Σ_yy) for every pair at once.",
           "`cos = (cov / norm).clamp(-1, 1)`, `theta = torch.arccos(cos)`; then the formula."],
    solution="""
    def relu_nngp(cov, sigma_w2=2.0):
        d = torch.sqrt(torch.diagonal(cov))
        norm = d[:, None] * d[None, :]
        cos = (cov / norm).clamp(-1.0, 1.0)
        theta = torch.arccos(cos)
        return sigma_w2 / (2 * math.pi) * norm * (torch.sin(theta) + (math.pi - theta) * cos)
    """,
    wrong=[("def relu_nngp(cov, sigma_w2=2.0):\n"
            "    d = torch.sqrt(torch.diagonal(cov))\n"
            "    norm = d[:, None] * d[None, :]\n"
            "    theta = torch.arccos(cov / norm)\n"
            "    return sigma_w2 / (2 * math.pi) * norm * (torch.sin(theta) + (math.pi - theta) "
            "* torch.cos(theta))", "clamp"),
           ("def relu_nngp(cov, sigma_w2=2.0):\n"
            "    d = torch.sqrt(torch.diagonal(cov))\n"
            "    norm = d[:, None] * d[None, :]\n"
            "    cos = (cov / norm).clamp(-1.0, 1.0)\n"
            "    theta = torch.arccos(cos)\n"
            "    return norm * (torch.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi)",
            "σ_w²"),
           ("def relu_nngp(cov, sigma_w2=2.0):\n"
            "    d = torch.diagonal(cov)\n"
            "    norm = d[:, None] * d[:, None].clamp_min(1.0)\n"
            "    cos = (cov / norm.sqrt()).clamp(-1.0, 1.0)\n"
            "    theta = torch.arccos(cos)\n"
            "    return sigma_w2 / (2 * math.pi) * norm.sqrt() * (torch.sin(theta) + (math.pi - theta) "
            "* cos)", "not symmetric")],
    explanation="With σ_w² = 2 the recursion keeps the diagonal fixed (Σ'_xx = Σ_xx): the "
                "'He' scaling. The NTK adds the derivative kernel (π − θ)/(2π) · σ_w² times the "
                "previous NTK (Jacot et al. 2018, arXiv 1806.07572).",
)


def _drift_outcome(lazy):
    mf = lazy[lazy.scaling == "mean-field"].sort_values("width")["drift"].to_numpy()
    ratio = float(mf[-1] / mf[0])
    return "a" if ratio < 0.5 else ("b" if ratio <= 2.0 else "c")


drift_prediction = PredictionExercise(
    section="2",
    prompt="""Before running section 2: over the widths of the sweep, the NTK-scaling drift falls
    like n^(−1/2). What does the *mean-field* net's kernel drift do from the narrowest to the
    widest net?""",
    choices={"a": "it shrinks by more than 2×, like the NTK scaling",
             "b": "it changes by less than a factor 2: O(1) at every width",
             "c": "it grows by more than 2×"},
    outcome=_drift_outcome,
    explanations={"a": "under the mean-field scaling each hidden weight's gradient is O(1/n) "
                       "and the step n times larger, so each weight moves by O(1) at every "
                       "width: the features keep moving",
                  "c": "the n-fold learning rate only compensates the O(1/n) gradient of each "
                       "weight: the movement stays O(1), it does not grow"},
    hints=["In the mean-field scaling the learning rate is multiplied by n: how far does each "
           "hidden weight move, relative to its size?"],
    solution='answer = "b"',
    example=lambda: {"lazy": _lazy_example()},
    wrong=[('answer = "a"', "O(1)"), ('answer = "z"', "choose one of")],
)


def _lazy_example():
    import pandas as pd

    widths = [64, 256, 1024]
    return pd.DataFrame({"width": widths * 2, "scaling": ["ntk"] * 3 + ["mean-field"] * 3,
                         "drift": [0.2, 0.1, 0.05, 0.9, 1.0, 1.1], "final_loss": [0.01] * 6})


def _decay_expected(k_widest, lr, n, t, n_modes):
    eig = torch.linalg.eigvalsh(torch.as_tensor(k_widest, dtype=torch.float64)).flip(0)[:n_modes]
    return (1 - 2 * lr / n * eig) ** t


def _used_eta(answer, expected, ctx):
    eig = torch.linalg.eigvalsh(torch.as_tensor(ctx["k_widest"], dtype=torch.float64)).flip(0)
    wrong = (1 - ctx["lr"] * eig[: ctx["n_modes"]]) ** ctx["t"]
    return np.allclose(answer.reshape(-1), wrong.numpy(), rtol=1e-3, atol=1e-9)


def _missing_two(answer, expected, ctx):
    eig = torch.linalg.eigvalsh(torch.as_tensor(ctx["k_widest"], dtype=torch.float64)).flip(0)
    wrong = (1 - ctx["lr"] / ctx["n"] * eig[: ctx["n_modes"]]) ** ctx["t"]
    return np.allclose(answer.reshape(-1), wrong.numpy(), rtol=1e-3, atol=1e-9)


def _ascending(answer, expected, ctx):
    return np.allclose(answer.reshape(-1)[::-1], expected.reshape(-1), rtol=1e-3, atol=1e-9)


mode_decay = ValueExercise(
    section="4",
    prompt="""Predict the fraction of the residual left along each of the top `preset.n_modes`
    eigenvectors of Θ₀ (`k_widest`) after `t = steps[2]` steps: (1 − η′λᵢ)ᵗ with η′ = 2η/N
    (η = `lr`, N = `n`), largest eigenvalue first. Compare with the `measured` column of `decay`.""",
    expected=_decay_expected,
    rtol=1e-4, atol=1e-8,
    diagnoses=[(_used_eta, "off by the factor 2/N: the function-space step is η′ = 2η/N (the mean "
                           "squared error averages over N points and its derivative brings a 2)"),
               (_missing_two, "off by a factor 2 in the step: η′ = 2η/N, not η/N"),
               (_ascending, "your modes are in ascending order: `eigvalsh` sorts the eigenvalues "
                            "from the smallest; flip them so the largest comes first")],
    hints=["`torch.linalg.eigvalsh(k_widest)` returns the eigenvalues in ascending order.",
           "η′ = 2 · lr / n; the answer is `(1 - eta_prime * eig[:n_modes]) ** t`, a vector."],
    solution="""
    eig = torch.linalg.eigvalsh(k_widest).flip(0)[: preset.n_modes]
    answer = (1 - 2 * lr / n * eig) ** steps[2]
    """,
    example=lambda: _decay_example(),
    wrong=[("eig = torch.linalg.eigvalsh(k_widest).flip(0)[: preset.n_modes]\n"
            "answer = (1 - lr * eig) ** steps[2]", "2/N"),
           ("eig = torch.linalg.eigvalsh(k_widest)[-preset.n_modes:]\n"
            "answer = (1 - 2 * lr / n * eig) ** steps[2]", "ascending")],
)


def _decay_example():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(8, 8, generator=gen, dtype=torch.float64)
    from types import SimpleNamespace

    steps = [0, 2, 5]
    return {"k_widest": a @ a.T + torch.eye(8, dtype=torch.float64), "lr": 0.3, "n": 8,
            "steps": steps, "preset": SimpleNamespace(n_modes=3), "t": steps[2], "n_modes": 3}


why_constant_kernel = ThoughtExercise(
    section="5",
    prompt="""Why is the kernel of the gated (fixed-activation) net constant during training at any
    width, while a ReLU net's kernel only freezes as the width grows? What does the gated net give
    up in exchange?""",
    solution="""The gated net's output is linear in its trainable weights once the gates are
    fixed: f(x) = Σ W_L g_L(x) ⊙ (… W_1 x), with gates g computed by frozen weights. Its
    gradient with respect to the trained weights depends on the other trained layers only through
    products (for one trained layer: not at all), so with a single trained layer Θ(x, x') is
    exactly constant, and in general it moves only through those products, not through the gates.
    A ReLU net's gates 1[w·x > 0] flip as the weights move; at large width each weight moves
    by O(n^−½) and few gates flip, so the kernel freezes only in the limit. The gated net gives up
    feature learning of the activation pattern itself: which units are on for which input is
    decided at initialisation (Noy et al. 2021, arXiv 2101.04243).""",
)
