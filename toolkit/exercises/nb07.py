"""Exercises for notebook 07 (supervised contrastive loss, mini-batches and batch-binding)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from ._core import FunctionExercise, PredictionExercise, ThoughtExercise, ValueExercise

__all__ = ["miss_probability", "frame_prediction", "max_abs_cos", "why_binding_works",
           "max_abs_cos_reference"]


# ------------------------------------------------------------ 1. how often a batch misses a class


def _miss_expected(counts, preset):
    n, minority, b = sum(counts), min(counts), preset.batch_size
    return math.comb(n - minority, b) / math.comb(n, b)


def _miss_example():
    return {"counts": (24, 24, 4, 4), "preset": SimpleNamespace(batch_size=8)}


def _with_replacement(answer, expected, ctx):
    n, minority, b = sum(ctx["counts"]), min(ctx["counts"]), ctx["preset"].batch_size
    return np.isclose(float(answer), (1 - minority / n) ** b, rtol=1e-4)


def _complement(answer, expected, ctx):
    return np.isclose(float(answer), 1 - float(expected), rtol=1e-4)


miss_probability = ValueExercise(
    section="1",
    prompt="""The random batches are the consecutive pieces of a random permutation of the N
    samples, so each batch is a uniformly random subset of `preset.batch_size` of them. Compute the
    probability that one batch contains *no* sample of one given minority class (of `min(counts)`
    samples). Compare with the count of batches that miss at least one class printed in section 1.""",
    expected=_miss_expected,
    rtol=1e-4, atol=1e-9,
    diagnoses=[(_with_replacement, "that is (1 − n_c/N)^B, drawing with replacement; a batch holds "
                                   "distinct samples, drawn without replacement: count the batches "
                                   "that avoid the class, C(N − n_c, B) / C(N, B)"),
               (_complement, "that is the probability that the batch holds at least one sample of "
                             "the class; the question asks for none")],
    hints=["Count subsets: how many batches of size B avoid the n_c samples of the class, out of "
           "how many batches of size B in all?",
           "`math.comb(N - n_c, B) / math.comb(N, B)` with `N = sum(counts)`, `n_c = min(counts)`, "
           "`B = preset.batch_size`."],
    solution="""
    n_all, n_minor, b = sum(counts), min(counts), preset.batch_size
    answer = math.comb(n_all - n_minor, b) / math.comb(n_all, b)
    """,
    example=_miss_example,
    wrong=[("answer = (1 - min(counts) / sum(counts)) ** preset.batch_size", "with replacement"),
           ("import math\n"
            "answer = 1 - math.comb(sum(counts) - min(counts), preset.batch_size) "
            "/ math.comb(sum(counts), preset.batch_size)", "at least one")],
    explanation="With two classes of 4 among 56 and batches of 8, a batch misses a given minority "
                "class about half the time; the pair of minority classes then meets in few batches, "
                "and only those batches push the two apart.",
)


# -------------------------------------------------------------- a prediction before section 1

TOL = 0.05  # the orthogonal-frame tolerance of claims.collapse.batch_binding_restores_frame


def _frame_outcome(geometries):
    reached = {mode: g.as_dict()["max_abs_cos"] < TOL for mode, g in geometries.items()}
    full, random, bound = (reached[m] for m in ("full batch", "random batches", "bound batches"))
    if full and random and bound:
        return "a"
    if full and bound:
        return "b"
    if full:
        return "c"
    return "d"


def _geometries_example():
    from toolkit import collapse

    labels = torch.arange(4).repeat_interleave(3)
    gen = torch.Generator().manual_seed(0)
    frame = torch.eye(4)[labels] + 0.01 * torch.rand(12, 4, generator=gen)
    drifted = frame.clone()
    drifted[labels == 3] += torch.tensor([0.0, 0.0, 0.8, 0.0])  # classes 2 and 3 merge
    return {"geometries": {
        "full batch": collapse.mean_geometry(frame, labels, normalize=True),
        "random batches": collapse.mean_geometry(drifted, labels, normalize=True),
        "bound batches": collapse.mean_geometry(frame, labels, normalize=True)}}


frame_prediction = PredictionExercise(
    section="1",
    prompt=f"""Before running section 1: which of the three runs end at the orthogonal frame (every
    class-mean cosine within {TOL} of 0)?""",
    choices={"a": "all three",
             "b": "full batch and bound batches, not random batches",
             "c": "only full batch",
             "d": "another combination"},
    outcome=_frame_outcome,
    explanations={"a": "a random batch of 8 often holds neither minority class, so the two are "
                       "contrasted with each other in few steps and their means stay correlated",
                  "c": "appending one fixed sample of every class puts every pair of classes into "
                       "every batch, which is what the random batches lack"},
    hints=["Use your answer to the previous exercise: in how many batches do the two minority "
           "classes meet?"],
    solution='answer = "b"',
    example=_geometries_example,
    wrong=[('answer = "a"', "contrasted"), ('answer = "c"', "every pair")],
)


# ------------------------------------------------------------------------- the frame's measure


def max_abs_cos_reference(means: torch.Tensor) -> torch.Tensor:
    """The largest |cosine| between two different class means (rows): ``max_abs_cos`` of
    :func:`toolkit.collapse.mean_geometry`, 0 for an orthogonal frame."""
    from toolkit import collapse

    return torch.tensor(collapse.mean_geometry(means, torch.arange(len(means))).as_dict()["max_abs_cos"])


def _cos_cases():
    gen = torch.Generator().manual_seed(7)
    k = 4
    etf = torch.eye(k) - 1.0 / k  # a simplex ETF: every cosine −1/(K−1)
    mixed = torch.tensor([[1.0, 0.0, 0.0], [-0.9, 0.3, 0.0], [0.2, 0.1, 1.0]])  # largest |cos| < 0
    return [("an orthogonal frame with unequal norms", (torch.diag(torch.tensor([1.0, 3.0, 0.5])),)),
            ("a simplex ETF of 4 classes", (etf,)),
            ("a pair whose largest |cosine| is negative", (mixed,)),
            ("5 random means in 8 dimensions", (torch.randn(5, 8, generator=gen) * 4,)),
            ("two classes", (torch.tensor([[1.0, 2.0], [2.0, 1.0]]),))]


def _includes_diagonal(out, expected, args):
    return math.isclose(float(out), 1.0, rel_tol=1e-5) and float(expected) < 1 - 1e-5


def _signed(out, expected, args):
    (means,) = args
    unit = means / means.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    off = cos[~torch.eye(len(means), dtype=torch.bool)]
    return math.isclose(float(out), float(off.max()), rel_tol=1e-5, abs_tol=1e-7)


def _not_normalised(out, expected, args):
    (means,) = args
    dots = means @ means.T
    off = dots[~torch.eye(len(means), dtype=torch.bool)]
    return math.isclose(float(out), float(off.abs().max()), rel_tol=1e-5, abs_tol=1e-7)


max_abs_cos = FunctionExercise(
    section="1",
    prompt="""Write `max_abs_cos(means)`: for a (classes × dimension) matrix of class means, the
    largest |cosine| between two *different* class means, 0 exactly for an orthogonal frame. It is
    the number the heatmaps summarise (`geometries[mode].as_dict()["max_abs_cos"]`).""",
    reference=max_abs_cos_reference,
    cases=_cos_cases,
    function_name="max_abs_cos",
    rtol=1e-5, atol=1e-7,
    diagnoses=[(_includes_diagonal, "you included each class with itself (cosine 1): take the "
                                    "off-diagonal entries only"),
               (_signed, "a negative cosine is as far from the frame as a positive one: take the "
                         "absolute value before the maximum"),
               (_not_normalised, "those are dot products, not cosines: divide every mean by its norm "
                                 "first")],
    hints=["Normalise the rows: `unit = means / means.norm(dim=1, keepdim=True)`; `unit @ unit.T` "
           "holds every cosine.",
           "Mask the diagonal with `~torch.eye(len(means), dtype=torch.bool)`, then `.abs().max()`."],
    solution="""
    def max_abs_cos(means):
        unit = means / means.norm(dim=1, keepdim=True)
        cos = unit @ unit.T
        return cos[~torch.eye(len(means), dtype=torch.bool)].abs().max()
    """,
    wrong=[("def max_abs_cos(means):\n"
            "    unit = means / means.norm(dim=1, keepdim=True)\n"
            "    return (unit @ unit.T).abs().max()", "with itself"),
           ("def max_abs_cos(means):\n"
            "    unit = means / means.norm(dim=1, keepdim=True)\n"
            "    cos = unit @ unit.T\n"
            "    return cos[~torch.eye(len(means), dtype=torch.bool)].max()", "absolute value"),
           ("def max_abs_cos(means):\n"
            "    dots = means @ means.T\n"
            "    return dots[~torch.eye(len(means), dtype=torch.bool)].abs().max()", "dot products")],
)


# ------------------------------------------------------------------------------- thought question


why_binding_works = ThoughtExercise(
    section="2",
    prompt="""Why does appending one fixed sample per class to every batch bring back the
    full-batch geometry, although the bound batches are still small and random? And why does the
    first heatmap not need it?""",
    solution="""In SCL a sample is pulled towards the other samples of its class in the batch and
    pushed away from the rest of the batch; two classes are pushed apart only in batches that hold
    both. With random batches of 8 from 56 samples the two minority classes of 4 meet rarely, so
    the steps that would separate them are few, and their means stay correlated (the off-diagonal
    cells of the random-batch heatmap). The bound samples make every batch contain every class,
    so every step contrasts every pair of classes, as the full-batch loss does at every step;
    Kini et al. (arXiv 2306.07960, §5) propose batch-binding for this reason and observe that it
    restores the orthogonal frame. The full-batch run needs no binding: its single batch is the
    whole set. Larger random batches help too (section 2's slider), but they also take fewer steps
    per epoch.""",
)
