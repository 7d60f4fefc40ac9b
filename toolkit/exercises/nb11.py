"""Exercises for notebook 11 (pruning and a compression bound, ingredient by ingredient).

Arora, Ge, Neyshabur & Zhang 2018 (arXiv 1802.05296) and the sketch dimension we assume for
Guha, Dubey & Huo 2023 (arXiv 2305.18789), as computed by :mod:`toolkit.pruning_bounds`; every
exercise is checked against that module's functions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._core import FunctionExercise, PredictionExercise, ThoughtExercise, ValueExercise

__all__ = ["bound_prediction", "margins_by_hand", "sketch_side", "why_vacuous",
           "sketch_side_reference", "AMOUNT"]

#: The sparsity at which :data:`bound_prediction` compares the two pruning rules.
AMOUNT = 0.7


# ----------------------------------------------------------------- a prediction before section 1


def _row(sweep, method):
    rows = sweep[(sweep["method"] == method) & (sweep["encoding"] == "sparse")
                 & (sweep["deviation"] == "measured") & np.isclose(sweep["amount"], AMOUNT)]
    if len(rows) != 1:
        raise ValueError(f"the sweep needs one row for method {method!r} at sparsity {AMOUNT} "
                         f"(sparse count, measured deviation); it has {len(rows)}.")
    return rows.iloc[0]


def _bound_outcome(sweep):
    mag, rnd = _row(sweep, "magnitude"), _row(sweep, "random")
    if mag["bound"] == rnd["bound"]:
        return "d"
    if rnd["bound"] < mag["bound"]:
        return "c"
    return "a" if mag["complexity"] == rnd["complexity"] else "b"


def _sweep_example():
    import pandas as pd

    rows = []
    for method, margin in (("magnitude", 0.2), ("random", 1.0)):
        for enc, complexity in (("dense", 14.2), ("sparse", 8.1), ("sketch", 14.2)):
            rows.append({"method": method, "amount": AMOUNT, "deviation": "measured",
                         "encoding": enc, "margin_loss": margin, "complexity": complexity,
                         "bound": margin + complexity})
    return {"sweep": pd.DataFrame(rows)}


bound_prediction = PredictionExercise(
    section="1",
    prompt=f"""Before running section 1: at sparsity {AMOUNT} (the sparse count, the measured
    deviation), which pruned copy gets the smaller bound, and through which term?""",
    choices={"a": "magnitude pruning, through its margin term (the complexity terms are equal)",
             "b": "magnitude pruning, through its complexity term",
             "c": "random pruning",
             "d": "neither: the two bounds are equal"},
    outcome=_bound_outcome,
    explanations={"b": "at equal sparsity both rules keep the same number of non-zeros in every "
                       "layer, so the counts, and the complexity terms, are identical; only the "
                       "margin term can tell them apart",
                  "c": "random pruning moves the logits much more (its ‖W − W_s‖₂ is several "
                       "times larger: the left panel), so many more training points have a margin "
                       "below twice the change",
                  "d": "the complexity terms are equal, but the margin terms are not: pruning "
                       "small weights moves the function less than pruning random ones"},
    hints=["What does each term depend on? The complexity term on the count (how many non-zeros, "
           "where), the margin term on how far pruning moved the logits."],
    solution='answer = "a"',
    example=_sweep_example,
    wrong=[('answer = "b"', "identical"), ('answer = "c"', "moves the logits much more"),
           ('answer = "magnitude"', "choose one of")],
    explanation="This is the self-check `ranks_methods_like_test_error`: at equal sparsity the "
                "bound can order two pruning rules only through its first term, and it orders "
                "them as their test errors do.",
)


# ----------------------------------------------------------------- 1. the margins of a prediction


def _margins_expected(model, x_few, y_few):
    from toolkit import pruning_bounds

    return pruning_bounds.margins(model, x_few, y_few)


def _logits(model, x):
    with torch.no_grad():
        return model(x).detach().double()


def _max_over_all(a, e, ctx):
    z = _logits(ctx["model"], ctx["x_few"])
    true = z.gather(1, ctx["y_few"][:, None]).squeeze(1)
    return np.allclose(a, (true - z.amax(1)).numpy(), rtol=1e-4, atol=1e-6)


def _top_two(a, e, ctx):
    top = _logits(ctx["model"], ctx["x_few"]).topk(2, dim=1).values
    return np.allclose(a, (top[:, 0] - top[:, 1]).numpy(), rtol=1e-4, atol=1e-6)


def _probabilities(a, e, ctx):
    p = torch.softmax(_logits(ctx["model"], ctx["x_few"]), dim=1)
    y = ctx["y_few"]
    true = p.gather(1, y[:, None]).squeeze(1)
    others = p.scatter(1, y[:, None], -math.inf).amax(1)
    return np.allclose(a, (true - others).numpy(), rtol=1e-4, atol=1e-6)


def _margins_example():
    gen = torch.Generator().manual_seed(11)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(12, 6, generator=gen)
    pred = model(x).argmax(1)
    y = pred.clone()
    y[::3] = (pred[::3] + 1) % 4  # every third point misclassified: its margin is negative
    return {"model": model.eval(), "x_few": x, "y_few": y}


margins_by_hand = ValueExercise(
    section="1",
    prompt="""Compute the margin f(x)[y] − max_{j≠y} f(x)[j] of the dense `model` on each of the
    points `x_few` (labels `y_few`): its logit for the true class minus its largest *other* logit,
    one number per point. It is positive exactly when the point is classified correctly, and it
    is what the bound's margin term compares with twice the change of the logits.""",
    expected=_margins_expected,
    rtol=1e-4, atol=1e-5,
    diagnoses=[(_max_over_all, "your maximum runs over every class, the true one included, so a "
                               "correct point gets 0 and never a positive margin: exclude y "
                               "(e.g. set its logit to −inf first)"),
               (_top_two, "that is the gap between the two largest logits: it equals the margin "
                          "when the point is classified correctly, but a misclassified point's "
                          "margin is negative (true logit minus the largest other one)"),
               (_probabilities, "the margin is taken on the logits, not on the softmax "
                                "probabilities")],
    hints=["`logits.gather(1, y[:, None]).squeeze(1)` picks each point's true-class logit.",
           "For the largest other logit, copy the logits with the true class set to −inf: "
           "`logits.scatter(1, y[:, None], float('-inf')).amax(1)`."],
    solution="""
    with torch.no_grad():
        logits = model(x_few)
    true = logits.gather(1, y_few[:, None]).squeeze(1)
    others = logits.scatter(1, y_few[:, None], float("-inf")).amax(1)
    answer = true - others
    """,
    example=_margins_example,
    wrong=[("with torch.no_grad():\n"
            "    logits = model(x_few)\n"
            "answer = logits.gather(1, y_few[:, None]).squeeze(1) - logits.amax(1)", "every class"),
           ("with torch.no_grad():\n"
            "    top = model(x_few).topk(2, dim=1).values\n"
            "answer = top[:, 0] - top[:, 1]", "two largest logits"),
           ("with torch.no_grad():\n"
            "    p = model(x_few).softmax(1)\n"
            "answer = p.gather(1, y_few[:, None]).squeeze(1) "
            "- p.scatter(1, y_few[:, None], float('-inf')).amax(1)", "probabilities")],
    explanation="`pruning_bounds.margins(model, x, y)` computes the same thing; a pruned copy g "
                "can misclassify x only if this margin is at most twice the largest change of a "
                "logit (each logit moves by at most that much): the step from the pruned net's "
                "training error to the margin term.",
)


# ------------------------------------------------------------------ 1. the side of a layer's sketch


def sketch_side_reference(nnz, rows, cols, c):
    """``pruning_bounds.sketch_dimension(nnz, (rows, cols), c=c)``: ⌈c √nnz ln max(rows, cols)⌉."""
    from toolkit import pruning_bounds

    return pruning_bounds.sketch_dimension(nnz, (rows, cols), c=c)


def _sketch_cases():
    return [("the first hidden layer at 90 % sparsity (128 × 64, 819 non-zeros)", (819, 128, 64, 1.0)),
            ("a 128 × 128 layer at 90 %", (1638, 128, 128, 1.0)),
            ("a wide 10 × 512 layer with c = 0.3", (1000, 10, 512, 0.3)),
            ("a dense 10 × 10 matrix", (100, 10, 10, 1.0)),
            ("a tall 300 × 20 layer, c = 2", (37, 300, 20, 2.0)),
            ("an empty (fully pruned) layer", (0, 128, 128, 1.0))]


def _formula(nnz, rows, cols, c, *, log=math.log, side=max, root=math.sqrt, rounding=math.ceil):
    return rounding(c * root(nnz) * log(side(rows, cols)))


def _sketch_diag(**kwargs):
    def predicate(out, expected, args):
        return math.isclose(float(out), _formula(*args, **kwargs), rel_tol=1e-9, abs_tol=1e-9)
    return predicate


sketch_side = FunctionExercise(
    section="1",
    prompt="""Write `sketch_side(nnz, rows, cols, c)`: the side m of the square sketch Y = A W_s Bᵀ
    that stores a pruned rows × cols layer with `nnz` non-zeros, m = ⌈c √nnz ln p⌉ with
    p = max(rows, cols) and the natural log (Dasarathy et al.'s m = O(√nnz log p), with our constant
    c). Return an int; an empty layer has m = 0.""",
    reference=sketch_side_reference,
    cases=_sketch_cases,
    function_name="sketch_side",
    rtol=0.0, atol=0.0,
    diagnoses=[(_sketch_diag(side=min), "p is the *larger* side, max(rows, cols), not the smaller"),
               (_sketch_diag(log=math.log2), "use the natural log, `math.log`, not log₂"),
               (_sketch_diag(log=math.log10), "use the natural log, `math.log`, not log₁₀"),
               (_sketch_diag(root=float), "the sketch side grows with √nnz, not with nnz"),
               (_sketch_diag(rounding=float), "round up: a side is a whole number, ⌈·⌉ "
                                              "(`math.ceil`)"),
               (_sketch_diag(rounding=math.floor), "round *up* (`math.ceil`), not down"),
               (_sketch_diag(rounding=round), "round *up* (`math.ceil`), not to the nearest")],
    hints=["`math.ceil(c * math.sqrt(nnz) * math.log(max(rows, cols)))`."],
    solution="""
    def sketch_side(nnz, rows, cols, c):
        return math.ceil(c * math.sqrt(nnz) * math.log(max(rows, cols)))
    """,
    wrong=[("def sketch_side(nnz, rows, cols, c):\n"
            "    return math.ceil(c * math.sqrt(nnz) * math.log(min(rows, cols)))", "larger"),
           ("def sketch_side(nnz, rows, cols, c):\n"
            "    return math.ceil(c * math.sqrt(nnz) * math.log2(max(rows, cols)))", "natural log"),
           ("def sketch_side(nnz, rows, cols, c):\n"
            "    return c * math.sqrt(nnz) * math.log(max(rows, cols))", "round up"),
           ("def sketch_side(nnz, rows, cols, c):\n"
            "    return math.ceil(c * nnz * math.log(max(rows, cols)))", "√nnz")],
    explanation="The sketch holds m² ≈ c² nnz ln² p numbers: fewer than the layer's rows · cols "
                "only above sparsity 1 − 1/(c ln p)² (about 0.96 for p = 128, c = 1), and never "
                "fewer than the nnz non-zeros themselves at c = 1, which is what the middle panel "
                "shows. The constant c and the use of this scaling for Guha et al.'s bound are "
                "our assumptions (see `toolkit.pruning_bounds`).",
)


# ------------------------------------------------------------------------------- thought question


why_vacuous = ThoughtExercise(
    section="1",
    prompt="""Every total in section 1 is above 1, a vacuous bound on a test error, and the
    complexity term alone is above 1 at every sparsity. What would have to change for
    √((ln N + ln(1/δ))/(2m)) to fall well below 1, and why can pruning alone not get there while
    the margin term stays small?""",
    solution="""The complexity term is below 1 only if ln N + ln(1/δ) < 2m. Here m ≈ 1,350 training
    points, so ln N must be below about 2,700 nats; at 32 bits each stored number costs
    32 ln 2 ≈ 22 nats, so the compressed net could hold only about 120 numbers (fewer, once
    their positions are paid for). The hidden layers have 24,576 weights: at 90 % sparsity the
    sparse code still needs about 62,000 nats, at 99 % about 6,800. The net has many more
    parameters than there are training points, and a count that describes it number by number
    stays above m.

    Three things shrink the term: more data (m grows linearly with the required ln N: at 90 %
    sparsity about 31,000 points), fewer bits per number (Arora et al.'s theorem counts
    parameters that take r discrete values: a coarse discretisation makes ln r a few nats instead
    of 22) and fewer numbers. But pruning harder is
    also what raises the margin term: at 90 % sparsity one-shot magnitude pruning moves the
    logits enough that almost every training margin is within twice the change (the margin term
    ≈ 0.99). The bound trades the two terms, and at this scale there is no sparsity where both are
    small. A compression that keeps the function close with far fewer, coarser numbers (Arora et
    al. compress each layer by random projections fixed in advance; one could also fine-tune and
    quantise after pruning), together with many more training points, is what such bounds need.
    (The ln N itself comes from the union bound over the N models a description can name:
    every number stored is paid for whether or not the data needed it.)""",
)
