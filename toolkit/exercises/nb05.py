"""Exercises for notebook 05 (feature learning and the maximal-update parameterisation μP)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from ._core import FunctionExercise, PredictionExercise, ThoughtExercise, ValueExercise

__all__ = ["rms_change", "readout_step", "sp_best_rate", "why_base_width", "rms_change_reference"]


# ------------------------------------------------------------------ 1. the coordinate check's measure


def rms_change_reference(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """The RMS coordinate of a layer's pre-activation change, √(mean_ij (h'_ij − h_ij)²): what
    ``feature_learning.rms_change`` returns for each layer."""
    return (after - before).pow(2).mean().sqrt()


def _rms_cases():
    gen = torch.Generator().manual_seed(5)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    h = rand(64, 512)
    wide = rand(16, 4096)
    return [("64 inputs × 512 units", (h, h + 0.1 * rand(64, 512))),
            ("a wide layer (16 × 4096) whose every coordinate moves by 0.5", (wide, wide + 0.5)),
            ("a single input and a single unit", (rand(1, 1), rand(1, 1))),
            ("no change at all", (h, h.clone()))]


def _is_norm(out, expected, args):
    before, after = args
    return math.isclose(float(out), float(expected) * math.sqrt(before.numel()), rel_tol=1e-4)


def _is_relative(out, expected, args):
    before, after = args
    return math.isclose(float(out), float((after - before).norm() / before.norm()), rel_tol=1e-4)


def _is_mean_square(out, expected, args):
    return float(expected) != 1.0 and math.isclose(float(out), float(expected) ** 2, rel_tol=1e-4)


rms_change = FunctionExercise(
    section="1",
    prompt="""Write `rms_change(before, after)`: the coordinate check's measure for one layer,
    the root-mean-square coordinate of the change of its pre-activations,
    √(mean over inputs i and units j of (after_ij − before_ij)²), for two (inputs × units)
    tensors. Compare with `feature_learning.rms_change`, which does this for every layer.""",
    reference=rms_change_reference,
    cases=_rms_cases,
    function_name="rms_change",
    rtol=1e-6, atol=1e-12,
    diagnoses=[(_is_norm, "that is the Frobenius norm of the change: it grows like the square root "
                          "of the number of entries, so every curve would rise with width; take "
                          "the mean, not the sum, of the squares"),
               (_is_relative, "that is the relative change ‖Δh‖/‖h‖; the coordinate check measures "
                              "the size of the change itself, coordinate by coordinate"),
               (_is_mean_square, "that is the mean square: take its square root")],
    hints=["One coordinate of the change is `after - before`; square it, average over *all* "
           "entries, take the square root.",
           "`(after - before).pow(2).mean().sqrt()`"],
    solution="""
    def rms_change(before, after):
        return (after - before).pow(2).mean().sqrt()
    """,
    wrong=[("def rms_change(before, after):\n"
            "    return (after - before).norm()", "Frobenius norm"),
           ("def rms_change(before, after):\n"
            "    return (after - before).norm() / before.norm()", "relative change"),
           ("def rms_change(before, after):\n"
            "    return (after - before).pow(2).mean()", "square root")],
    explanation="An entry of size Θ(1) in every coordinate is what 'features move by Θ(1)' means; "
                "the Frobenius norm of the same change is Θ(√(N·n)) and hides it.",
)


# --------------------------------------------------------------------------- μP's learning rates


def _readout_expected(preset):
    """The readout's effective step, read off the library's μP layer: c_w² η (MuPLinear)."""
    from toolkit import models

    width = max(preset.lrt_widths)
    net = models.MLP(preset.lrt_dim, [width] * preset.lrt_depth, preset.lrt_classes,
                     parameterization="mup", base_width=preset.base_width)
    return net.head.weight_scale ** 2 * preset.lr


def _readout_example():
    return {"preset": SimpleNamespace(lr=0.01, base_width=16, lrt_widths=(64, 256, 1024),
                                      lrt_dim=16, lrt_depth=2, lrt_classes=4)}


def _ratio(ctx):
    p = ctx["preset"]
    return max(p.lrt_widths) / p.base_width


readout_step = ValueExercise(
    section="1",
    prompt="""Under μP trained with one global SGD rate η = `preset.lr`, what effective step does the
    readout (the last layer) of the widest net of section 2 (n = `max(preset.lrt_widths)`, base width
    n₀ = `preset.base_width`) take? Use the introduction's table of scales, then check your number
    against the model: `net.head.weight_scale ** 2 * preset.lr`.""",
    expected=_readout_expected,
    rtol=1e-6, atol=0.0,
    diagnoses=[(lambda a, e, ctx: np.isclose(float(a), ctx["preset"].lr * _ratio(ctx), rtol=1e-6),
                "that is η·m, the step of the input layer and the biases; the readout's step "
                "shrinks as the net widens: η/m"),
               (lambda a, e, ctx: np.isclose(float(a), ctx["preset"].lr / max(ctx["preset"].lrt_widths),
                                             rtol=1e-6),
                "you divided by the width n; the multiplier is m = n/n₀, the width over the base width"),
               (lambda a, e, ctx: np.isclose(float(a), ctx["preset"].lr, rtol=1e-6),
                "that is η, the step of a hidden matrix (and of every layer under SP); the readout "
                "differs")],
    hints=["With m = n/n₀ the introduction lists: input layer and biases η·m, hidden matrices η, "
           "readout η/m.",
           "`preset.lr / (max(preset.lrt_widths) / preset.base_width)`"],
    solution="answer = preset.lr / (max(preset.lrt_widths) / preset.base_width)",
    example=_readout_example,
    wrong=[("answer = preset.lr * max(preset.lrt_widths) / preset.base_width", "η·m"),
           ("answer = preset.lr / max(preset.lrt_widths)", "base width"),
           ("answer = preset.lr", "hidden matrix")],
    explanation="The readout sums n features that all moved by Θ(1) in a correlated way, so its "
                "update must be 1/n smaller than SP's for the output to change by Θ(1).",
)


# ------------------------------------------------------------------ 2. learning-rate transfer


def _best_log2_lrs(lrt, parameterization):
    rows = lrt[lrt["parameterization"] == parameterization]
    best = rows.loc[rows.groupby("width")["loss"].idxmin()].sort_values("width")
    return np.log2(best["lr"].to_numpy())


def _sp_outcome(lrt):
    best = _best_log2_lrs(lrt, "standard")
    shift = float(best[-1] - best[0])
    return "a" if abs(shift) <= 1 else ("b" if shift < 0 else "c")


def _lrt_example():
    import pandas as pd

    rows = []
    for width, best in ((64, -2), (256, -4), (1024, -6)):
        for k in range(-8, 1):
            rows.append({"parameterization": "standard", "width": width, "lr": 2.0 ** k,
                         "loss": 0.1 + 0.05 * (k - best) ** 2})
            rows.append({"parameterization": "mup", "width": width, "lr": 2.0 ** k,
                         "loss": 0.1 + 0.05 * (k + 3) ** 2})
    return {"lrt": pd.DataFrame(rows)}


sp_best_rate = PredictionExercise(
    section="2",
    prompt="""Before running the learning-rate grid: under the *standard* parameterisation, where
    does the best learning rate of the widest net sit compared with the narrowest net's?""",
    choices={"a": "within one octave of it (the optimum transfers)",
             "b": "more than one octave lower",
             "c": "more than one octave higher"},
    outcome=_sp_outcome,
    explanations={"a": "under SP every layer takes the step η, and the readout's update changes the "
                       "output by an amount that grows with the width, so the same η is too large "
                       "for a wider net: that is what μP fixes",
                  "c": "a wider SP net is *less* stable at a given rate: its output moves by more "
                       "per step"},
    hints=["Under SP the readout weights all move by η times a gradient of size Θ(1), and the "
           "output sums n of them."],
    solution='answer = "b"',
    example=_lrt_example,
    wrong=[('answer = "a"', "what μP fixes"), ('answer = "up"', "choose one of")],
)


# ------------------------------------------------------------------------------- thought question


why_base_width = ThoughtExercise(
    section="2",
    prompt="""μP at width n = n₀ is exactly the standard parameterisation. Why, and why does that
    make μTransfer work: you tune the rate on a net of width n₀ and reuse it at width 8·n₀?""",
    solution="""At n = n₀ every multiplier m = n/n₀ is 1, so every scale (input and bias steps
    η·m, readout step η/m, readout initial variance ∝ 1/(n·m)) reduces to the SP value: the two
    parameterisations are the same network with the same update. μP then changes the scales with
    m so that, as the width grows, every layer's pre-activations still move by Θ(1) per step
    (the coordinate check) and the training dynamics converge to a limit as n → ∞ (Yang & Hu
    2021, arXiv 2011.14522). A rate tuned at n₀ is therefore tuned for a net whose dynamics are
    already close to those of every wider μP net, so the optimum stays put (Yang et al. 2022,
    arXiv 2203.03466); under SP the dynamics change with n (the readout's effect grows like n),
    so the optimum drifts. n₀ only fixes *which* width is "SP-like"; it is a free choice.""",
)
