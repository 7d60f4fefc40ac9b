"""Exercises for notebook 09 (the loss landscape converges as the sample grows).

Kiselev & Grabovoy 2024, arXiv 2409.11995: eq. (1), Theorem 1 and Lemma 2, as computed by
:mod:`toolkit.landscape_convergence` (every exercise is checked against that module's functions).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from ._core import FunctionExercise, PredictionExercise, ThoughtExercise, ValueExercise

__all__ = ["slope_prediction", "difference_by_hand", "running_means", "theorem1_constant",
           "why_so_loose", "running_means_reference", "SLOPES"]


# ----------------------------------------------------------------- a prediction before section 1

#: The choices of :data:`slope_prediction` and the slope each stands for.
SLOPES = {"a": 0.0, "b": -0.5, "c": -1.0, "d": -2.0}


def _measured_slope(diffs, k_min) -> float:
    # the slope the notebook's self-check reports (same points, same fit)
    from toolkit.claims.convergence import difference_decays

    return float(difference_decays(diffs.k, diffs.mean, k_min=k_min)["slope"])


def _slope_outcome(diffs, k_min):
    slope = _measured_slope(diffs, k_min)
    return min(SLOPES, key=lambda key: abs(SLOPES[key] - slope))


def _slope_example():
    k = np.arange(1, 400)
    gen = np.random.default_rng(9)
    mean = 0.8 / (k + 1) * np.exp(0.05 * gen.standard_normal(len(k)))
    return {"diffs": SimpleNamespace(k=k, mean=mean), "k_min": 10}


slope_prediction = PredictionExercise(
    section="1",
    prompt="""Before running section 1: the experiment measures |L_{k+1} − L_k|, averaged over the
    plane and over random orderings, for every k. On a log–log plot against k ≥ 10, which slope
    will the curve have?""",
    choices={"a": "about 0: one new object moves the surface by a fixed amount",
             "b": "about −½: like a standard error, 1/√k",
             "c": "about −1: like 1/k",
             "d": "about −2: like 1/k²"},
    outcome=_slope_outcome,
    explanations={"a": "the new object's own loss ℓ_{k+1} does not shrink, but its weight in the "
                       "mean does: eq. (1) divides its deviation from L_k by k + 1",
                  "b": "1/√k is how fast L_k approaches the mean over all objects (a standard "
                       "error); consecutive nested subsets share their first k objects, so their "
                       "difference is one object's deviation over k + 1, eq. (1)",
                  "d": "1/k² would need ℓ_{k+1} − L_k itself to shrink like 1/k; it is one "
                       "object's deviation from the mean, of the order of the spread of the "
                       "losses at every k"},
    hints=["Write L_{k+1} = (k L_k + ℓ_{k+1}) / (k + 1) and subtract L_k.",
           "Eq. (1): the numerator ℓ_{k+1} − L_k does not shrink with k (it is one object against "
           "a mean); the denominator is k + 1."],
    solution='answer = "c"',
    example=_slope_example,
    wrong=[('answer = "b"', "standard error"), ('answer = "a"', "weight in the mean"),
           ('answer = "-1"', "choose one of")],
    explanation="The self-check measures the slope (−0.97 to −1.00 on seeds 0–2 in the toy run); "
                "its control, a fresh random subset for each k, has slope ≈ −½: there consecutive "
                "subsets share no objects, and the difference is two independent standard errors.",
)


# ---------------------------------------------------------- 1. eq. (1) by hand at one grid point


def _difference_expected(losses, k):
    # L_{k+1} − L_k from the library's cumulative means (row k − 1 is L_k)
    from toolkit import landscape_convergence as lc

    losses = np.asarray(losses, dtype=np.float64)
    if not isinstance(k, int | np.integer) or not 1 <= k < len(losses):
        raise ValueError(f"k must be an integer in [1, {len(losses) - 1}], got {k!r}.")
    means = lc.running_means(losses)
    return means[k] - means[k - 1]


def _eq1(losses, k, new, mean, denominator):
    losses = np.asarray(losses, dtype=np.float64)
    return (losses[new] - losses[:mean].mean()) / denominator


def _next_object_off_by_one(a, e, ctx):
    losses, k = ctx["losses"], ctx["k"]
    return np.isclose(float(a), _eq1(losses, k, k + 1, k, k + 1), rtol=1e-6, atol=1e-12)


def _mean_of_k_plus_1(a, e, ctx):
    losses, k = ctx["losses"], ctx["k"]
    return np.isclose(float(a), _eq1(losses, k, k, k + 1, k + 1), rtol=1e-6, atol=1e-12)


def _over_k(a, e, ctx):
    losses, k = ctx["losses"], ctx["k"]
    return np.isclose(float(a), _eq1(losses, k, k, k, k), rtol=1e-6, atol=1e-12)


def _no_division(a, e, ctx):
    losses, k = ctx["losses"], ctx["k"]
    return np.isclose(float(a), _eq1(losses, k, k, k, 1), rtol=1e-6, atol=1e-12)


def _absolute(a, e, ctx):
    return float(e) < 0 and np.isclose(float(a), abs(float(e)), rtol=1e-6, atol=1e-12)


def _difference_example():
    gen = np.random.default_rng(1)
    losses = gen.uniform(0.5, 3.0, size=60)
    losses[20] = 0.05  # object k + 1 = 21 has a smaller loss than the mean of the first 20
    return {"losses": losses, "k": 20}


difference_by_hand = ValueExercise(
    section="1",
    prompt="""`losses` holds every object's loss at one point of the plane (the corner
    a = b = −span, where the losses are large), in the stored order. Compute L_{k+1} − L_k at that
    point for the `k` of the cell (signed, not its absolute value) from eq. (1): the new object's
    loss against the mean of the first k, over k + 1. Python counts from 0: the first k objects
    are `losses[:k]`.""",
    expected=_difference_expected,
    rtol=1e-6, atol=1e-12,
    diagnoses=[(_next_object_off_by_one, "off by one: object number k + 1 is `losses[k]` (Python "
                                         "counts from 0), you used `losses[k + 1]`"),
               (_mean_of_k_plus_1, "eq. (1) compares the new loss with L_k, the mean of the first "
                                   "k objects (`losses[:k]`), not with L_{k+1}"),
               (_over_k, "divide by k + 1, the size of the larger subset, not by k"),
               (_no_division, "that is ℓ_{k+1} − L_k, the new object's deviation from the mean; "
                              "eq. (1) divides it by k + 1"),
               (_absolute, "L_{k+1} − L_k is signed: here the new object's loss is below the mean, "
                           "so the surface moves *down*; the plots show the absolute value")],
    hints=["Write L_{k+1} = (k · L_k + ℓ_{k+1}) / (k + 1) and subtract L_k.",
           "`(losses[k] - losses[:k].mean()) / (k + 1)`; compare it with "
           "`losses[:k + 1].mean() - losses[:k].mean()`."],
    solution="answer = (losses[k] - losses[:k].mean()) / (k + 1)",
    example=_difference_example,
    wrong=[("answer = (losses[k + 1] - losses[:k].mean()) / (k + 1)", "off by one"),
           ("answer = (losses[k] - losses[:k + 1].mean()) / (k + 1)", "not with L_{k+1}"),
           ("answer = (losses[k] - losses[:k].mean()) / k", "not by k"),
           ("answer = losses[k] - losses[:k].mean()", "divides it by k + 1"),
           ("answer = abs(losses[k] - losses[:k].mean()) / (k + 1)", "signed")],
    explanation="Eq. (1) is an identity: the difference of the two means computed directly, "
                "`losses[:k + 1].mean() - losses[:k].mean()`, is the same number up to rounding. "
                "Nothing in it is small except the 1/(k + 1): the numerator is one object's "
                "deviation from a mean.",
)


# ---------------------------------------------------------------- 1. every L_k in one cumsum


def running_means_reference(losses):
    """``landscape_convergence.running_means``: row ``k − 1`` is the mean of the first ``k``
    objects (first axis), for ``k = 1 … N``."""
    from toolkit import landscape_convergence as lc

    return lc.running_means(np.asarray(losses, dtype=np.float64))


def _running_cases():
    gen = torch.Generator().manual_seed(9)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64) * 3

    outlier = rand(1000)
    outlier[0] = 50.0
    return [("one point, 7 objects", (rand(7),)),
            ("a single object", (rand(1),)),
            ("a 3 × 3 grid, 3 objects (shape (3, 3, 3), objects first)", (rand(3, 3, 3),)),
            ("a 5 × 4 grid, 6 objects (shape (6, 5, 4))", (rand(6, 5, 4),)),
            ("1000 objects, a large first loss", (outlier,)),
            ("all objects with the same loss", (torch.full((5, 2), 0.7, dtype=torch.float64),))]


def _cumsum(losses) -> np.ndarray:
    return np.cumsum(np.asarray(losses, dtype=np.float64), axis=0)


def _out_close(out, value) -> bool:
    out = np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out, dtype=np.float64)
    return out.shape == value.shape and bool(np.allclose(out, value, rtol=1e-6, atol=1e-9))


def _over_n(out, expected, args):
    (losses,) = args
    return len(losses) > 1 and _out_close(out, _cumsum(losses) / len(losses))


def _over_k_plus_1(out, expected, args):
    (losses,) = args
    k = np.arange(2, len(losses) + 2, dtype=np.float64).reshape(-1, *[1] * (losses.ndim - 1))
    return _out_close(out, _cumsum(losses) / k)


def _sum_only(out, expected, args):
    (losses,) = args
    return len(losses) > 1 and _out_close(out, _cumsum(losses))


def _last_axis(out, expected, args):
    (losses,) = args
    return losses.ndim > 1 and _out_close(
        out, _cumsum(losses) / np.arange(1, losses.shape[-1] + 1, dtype=np.float64))


def _overall_mean(out, expected, args):
    (losses,) = args
    full = np.broadcast_to(np.asarray(losses, dtype=np.float64).mean(axis=0), losses.shape)
    return len(losses) > 1 and _out_close(out, full)


running_means = FunctionExercise(
    section="1",
    prompt="""Write `running_means(losses)`: `losses` is a float64 tensor of per-object losses,
    objects along the first axis (shape (N,) for one point, (N, steps, steps) for the plane);
    return L_k for k = 1 … N with the shape of `losses`, row k − 1 holding the mean of the first
    k objects. Use one cumulative sum (no loop over k): that is how the notebook gets the surface
    of every nested subset from one evaluation of the per-object losses
    (`landscape_convergence.running_means`, the reference).""",
    reference=running_means_reference,
    cases=_running_cases,
    function_name="running_means",
    rtol=1e-9, atol=1e-12,
    diagnoses=[(_over_n, "you divided every partial sum by N; L_k is the sum of the first k "
                         "objects divided by k"),
               (_over_k_plus_1, "row k − 1 holds L_k: divide the partial sums by k = 1 … N, not "
                                "by 2 … N + 1"),
               (_sum_only, "that is the running *sum*; divide row k − 1 by k"),
               (_last_axis, "your counts 1 … N are divided along the *last* axis; shape them "
                            "(N, 1, 1, …) so that they run along the objects' axis: "
                            "`k.reshape(-1, *[1] * (losses.ndim - 1))`"),
               (_overall_mean, "every row is L_N, the mean of all objects; row k − 1 must use only "
                               "the first k")],
    hints=["`losses.cumsum(0)[k - 1]` is the sum of the first k objects.",
           "`k = torch.arange(1, len(losses) + 1, dtype=losses.dtype)`, reshaped to "
           "`(N, 1, …, 1)` so that it broadcasts along the first axis only."],
    solution="""
    def running_means(losses):
        k = torch.arange(1, len(losses) + 1, dtype=losses.dtype)
        return losses.cumsum(0) / k.reshape(-1, *[1] * (losses.ndim - 1))
    """,
    wrong=[("def running_means(losses):\n"
            "    return losses.cumsum(0) / len(losses)", "divided every partial sum by N"),
           ("def running_means(losses):\n"
            "    return losses.cumsum(0)", "running *sum*"),
           ("def running_means(losses):\n"
            "    return losses.cumsum(0) / torch.arange(1, len(losses) + 1, dtype=losses.dtype)",
            "last* axis"),
           ("def running_means(losses):\n"
            "    k = torch.arange(2, len(losses) + 2, dtype=losses.dtype)\n"
            "    return losses.cumsum(0) / k.reshape(-1, *[1] * (losses.ndim - 1))", "not by 2")],
    explanation="One evaluation of the N per-object losses on the plane gives every L_k at once, "
                "in N · steps² numbers; evaluating `landscape.surface_2d` on each nested subset "
                "would cost N full passes. The same sum with the objects in another order "
                "(`losses[order]`) is another nested sequence; the notebook averages 20 of them.",
)


# --------------------------------------------------------------------- 1. Theorem 1's constant


def _mh_expected(hb):
    from toolkit import landscape_convergence as lc

    return lc.hessian_norm_bound(hb.depth, hb.max_weight_norm, hb.max_input_norm)


def _mh(depth, mw, mx, *, weight_power=2, input_power=2, second=True):
    first = depth * np.sqrt(2) * mx ** input_power * mw ** (weight_power * depth)
    return first + (np.sqrt(2) * sum(mw ** (2 * p) for p in range(1, depth + 1)) if second else 0.0)


def _mh_diag(depth_offset=0, **kwargs):
    def predicate(a, e, ctx):
        hb = ctx["hb"]
        depth = hb.depth + depth_offset
        return depth >= 1 and np.isclose(
            float(a), _mh(depth, hb.max_weight_norm, hb.max_input_norm, **kwargs), rtol=1e-8)
    return predicate


def _mh_example():
    return {"hb": SimpleNamespace(depth=3, max_weight_norm=2.5, max_input_norm=12.0,
                                  weight_norms=np.array([2.1, 2.5, 1.9]))}


theorem1_constant = ValueExercise(
    section="1",
    prompt="""Compute Theorem 1's bound on every object's Hessian norm,
    M_H = L√2 M_x² M_W^{2L} + √2 M_W² (M_W^{2L} − 1)/(M_W² − 1), from the constants of the first
    seed's network: `hb.depth` (L, the number of Linear layers), `hb.max_weight_norm` (M_W, the
    largest spectral norm of a weight matrix) and `hb.max_input_norm` (M_x, the largest input
    norm). Compare it with the table's `M_H (Thm 1)` and with the largest per-object Hessian norm
    measured.""",
    expected=_mh_expected,
    rtol=1e-8, atol=0.0,
    diagnoses=[(_mh_diag(second=False),
                "you have only the first term L√2 M_x² M_W^{2L}; add √2 M_W² (M_W^{2L} − 1)/(M_W² − 1) "
                "(small here, but the check is tight)"),
               (_mh_diag(input_power=1), "M_x enters squared: M_x²"),
               (_mh_diag(weight_power=1), "the weights enter as M_W^{2L}, not M_W^L: each layer's norm "
                                   "appears in J and in Jᵀ"),
               (_mh_diag(depth_offset=-1), "L counts every Linear layer of the net (`hb.depth`), the readout "
                                 "included, not only the hidden ones")],
    hints=["`L, mw, mx = hb.depth, hb.max_weight_norm, hb.max_input_norm`, then the formula term "
           "by term.",
           "`L * np.sqrt(2) * mx**2 * mw**(2 * L) + np.sqrt(2) * mw**2 * (mw**(2 * L) - 1) / "
           "(mw**2 - 1)`."],
    solution="""
    L, mw, mx = hb.depth, hb.max_weight_norm, hb.max_input_norm
    answer = L * np.sqrt(2) * mx**2 * mw ** (2 * L) + np.sqrt(2) * mw**2 * (mw ** (2 * L) - 1) / (mw**2 - 1)
    """,
    example=_mh_example,
    wrong=[("L, mw, mx = hb.depth, hb.max_weight_norm, hb.max_input_norm\n"
            "answer = L * np.sqrt(2) * mx**2 * mw ** (2 * L)", "only the first term"),
           ("L, mw, mx = hb.depth, hb.max_weight_norm, hb.max_input_norm\n"
            "answer = L * np.sqrt(2) * mx * mw ** (2 * L) + np.sqrt(2) * mw**2 * (mw ** (2 * L) - 1)"
            " / (mw**2 - 1)", "squared"),
           ("L, mw, mx = hb.depth, hb.max_weight_norm, hb.max_input_norm\n"
            "answer = L * np.sqrt(2) * mx**2 * mw ** L + np.sqrt(2) * mw**2 * (mw ** (2 * L) - 1)"
            " / (mw**2 - 1)", "not M_W^L"),
           ("L, mw, mx = hb.depth - 1, hb.max_weight_norm, hb.max_input_norm\n"
            "answer = L * np.sqrt(2) * mx**2 * mw ** (2 * L) + np.sqrt(2) * mw**2 * (mw ** (2 * L) - 1)"
            " / (mw**2 - 1)", "every Linear layer")],
    explanation="The closed form is the geometric sum √2 Σ_{p=1}^{L} M_W^{2p} "
                "(`landscape_convergence.hessian_norm_bound` sums it, which also covers M_W = 1). "
                "In the toy run M_x ≈ 51 and M_W ≈ 3, so M_x² M_W^{2L} ≈ 2600 · 700: the bound is "
                "about 7.6·10⁶ while the largest measured ‖H_i‖ is a few hundred.",
)


# ------------------------------------------------------------------------------- thought question


why_so_loose = ThoughtExercise(
    section="1",
    prompt="""The Lemma 2 bound holds at every k, but it is about seven orders of magnitude above
    the largest difference measured on the plane. Name the steps of the argument (Theorem 1 and
    Lemma 2) where it loses most, and say what a tighter bound on |L_{k+1} − L_k| could use
    instead.""",
    solution="""Theorem 1 loses about four orders (the proof in the paper's appendix): it multiplies worst
    cases layer by layer. ‖H_i‖ ≤ ‖A‖ ‖F‖² with ‖A‖ bounded by its Frobenius norm (√2, where the
    spectral norm of diag(p) − ppᵀ is at most 1); the Jacobian F by sub-multiplicativity, every
    ReLU mask replaced by its norm 1 and every layer's norm by the largest one, M_W, so that
    M_W^{2L} ignores how the masks and the alignment of consecutive layers shrink the actual
    product; and the hidden activations by ‖x_i‖ Π‖W‖ with M_x the largest input norm in the
    data set (standardised digits have a few large pixels), squared. The table compares M_H
    (≈ 6–8·10⁶) with the largest per-object Gauss–Newton norm measured (a few hundred).

    Lemma 2 loses the rest. It bounds ℓ_{k+1} − L_k and H_{k+1} − H̄_k by the triangle
    inequality, |a − b| ≤ |a| + |b| ≤ 2M, as if the new object and the mean could sit at opposite
    extremes; both are non-negative (losses, Gauss–Newton Hessians), and a typical object is far
    closer to the mean than the worst case. The paper itself says, in its limitations, that the
    triangle inequality gives a rough upper bound (its difference formula also drops the ½ of the
    Taylor term, a further factor 2). And M_H R² assumes the largest curvature along every
    direction of the ball, while the Hessian has a few large eigenvalues and a bulk near zero
    (Sagun et al., arXiv 1706.04454), so along two random directions the curvature is far smaller.

    Eq. (1) itself is exact: |L_{k+1} − L_k| = |ℓ_{k+1} − L_k| / (k + 1). A tighter bound
    keeps this and bounds only the spread of the per-object losses over the region,
    max_θ |ℓ_i(θ) − L_k(θ)|, which can be measured (the left panel of the widget) or bounded for
    the actual region rather than by worst-case norms. The 1/k rate is what the paper's
    experiments show and what reproduces here; the paper does not claim the constant is tight.""",
)
