"""Exercises for notebook 03 (neural collapse)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from ._core import FunctionExercise, PredictionExercise, ThoughtExercise, ValueExercise

__all__ = ["nc1_by_hand", "mean_cosine", "minority_prediction", "why_orthogonal", "nc1_reference"]


def nc1_reference(features: torch.Tensor, labels: torch.Tensor) -> float:
    """NC1 = tr(Σ_W Σ_B⁺)/C (Papyan et al. 2020) with ``toolkit.collapse``'s conventions."""
    from toolkit import collapse

    return collapse.nc_metrics(features, labels).nc1


def _nc1_cases(features=None, labels=None):
    gen = torch.Generator().manual_seed(3)
    y = torch.arange(30) % 3
    x = torch.randn(30, 5, generator=gen, dtype=torch.float64) + 2 * torch.eye(5)[y, :]
    y_imb = torch.cat([torch.zeros(20, dtype=torch.long), torch.ones(5, dtype=torch.long),
                       torch.full((3,), 2)])
    x_imb = torch.randn(28, 4, generator=gen, dtype=torch.float64) + 3 * torch.eye(4)[y_imb, :]
    y4 = torch.arange(16) % 4
    x_low = torch.randn(16, 2, generator=gen, dtype=torch.float64) + 3 * torch.randn(
        4, 2, generator=gen, dtype=torch.float64)[y4]
    x_col = torch.eye(6, dtype=torch.float64)[y] * 2 + 1e-3 * torch.randn(30, 6, generator=gen,
                                                                           dtype=torch.float64)
    cases = [("balanced, 3 classes in 5-d", (x, y)),
             ("imbalanced (20 / 5 / 3 samples)", (x_imb, y_imb)),
             ("4 classes in 2-d (Σ_B of rank 2)", (x_low, y4)),
             ("nearly collapsed features", (x_col, y))]
    if features is not None and labels is not None:
        cases.append(("the notebook's features", (features, labels)))
    return cases


def _sample_mean(out, expected, args):
    from toolkit import collapse

    x, y = args
    return np.isclose(float(out), collapse.nc_metrics(x, y, global_mean="samples").nc1, rtol=1e-4)


def _times_c(out, expected, args):
    c = len(torch.unique(args[1]))
    return np.isclose(float(out), float(expected) * c, rtol=1e-4)


def _huge(out, expected, args):
    out = float(out)
    return not np.isfinite(out) or abs(out) > 1e4 * max(abs(float(expected)), 1e-6)


nc1_by_hand = FunctionExercise(
    section="1",
    prompt="""Write `nc1(features, labels)`: NC1 = tr(Σ_W Σ_B⁺)/C from the class means, with
    Σ_W = (1/N) Σᵢ (hᵢ − μ_{yᵢ})(hᵢ − μ_{yᵢ})ᵀ, Σ_B = (1/C) Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ, μ_G the
    mean of the class means, ⁺ the pseudo-inverse. Labels are 0 … C−1. Check it on the notebook's
    `features` and `labels` (and hidden cases: imbalanced classes, fewer dimensions than classes).""",
    reference=nc1_reference,
    cases=_nc1_cases,
    function_name="nc1",
    rtol=1e-4, atol=1e-8,
    diagnoses=[(_sample_mean, "you centred the class means at the mean of all samples; the "
                              "convention here is the mean of the class means (they differ when "
                              "the classes are imbalanced)"),
               (_times_c, "off by the factor C: NC1 = tr(Σ_W Σ_B⁺) / C"),
               (_huge, "your NC1 is huge or infinite: Σ_B has rank at most C − 1, so it has no "
                       "inverse; use the pseudo-inverse `torch.linalg.pinv`")],
    hints=["Class means: `torch.stack([features[labels == c].mean(0) for c in range(C)])`; "
           "work in float64.",
           "`resid = features - means[labels]`, `sigma_w = resid.T @ resid / N`; centre the means "
           "at `means.mean(0)` for Σ_B; `torch.trace(sigma_w @ torch.linalg.pinv(sigma_b)) / C`."],
    solution="""
    def nc1(features, labels):
        features = features.double()
        n_classes = int(labels.max()) + 1
        means = torch.stack([features[labels == c].mean(0) for c in range(n_classes)])
        centred = means - means.mean(0)
        sigma_b = centred.T @ centred / n_classes
        resid = features - means[labels]
        sigma_w = resid.T @ resid / len(features)
        return torch.trace(sigma_w @ torch.linalg.pinv(sigma_b)) / n_classes
    """,
    example=lambda: {"features": torch.randn(40, 6, generator=torch.Generator().manual_seed(0)),
                     "labels": torch.arange(40) % 4},
    wrong=[("def nc1(features, labels):\n"
            "    features = features.double()\n"
            "    n_classes = int(labels.max()) + 1\n"
            "    means = torch.stack([features[labels == c].mean(0) for c in range(n_classes)])\n"
            "    centred = means - features.mean(0)\n"
            "    sigma_b = centred.T @ centred / n_classes\n"
            "    resid = features - means[labels]\n"
            "    sigma_w = resid.T @ resid / len(features)\n"
            "    return torch.trace(sigma_w @ torch.linalg.pinv(sigma_b)) / n_classes",
            "mean of the class means"),
           ("def nc1(features, labels):\n"
            "    features = features.double()\n"
            "    n_classes = int(labels.max()) + 1\n"
            "    means = torch.stack([features[labels == c].mean(0) for c in range(n_classes)])\n"
            "    centred = means - means.mean(0)\n"
            "    sigma_b = centred.T @ centred / n_classes\n"
            "    resid = features - means[labels]\n"
            "    sigma_w = resid.T @ resid / len(features)\n"
            "    return torch.trace(sigma_w @ torch.linalg.pinv(sigma_b))", "factor C")],
    explanation="`collapse.nc_metrics` computes the same number as ‖R M⁺‖²_F / N without a d × d "
                "matrix (R the residuals, M the centred means): with Σ_B = MᵀM/C, "
                "(MᵀM)⁺ = M⁺M⁺ᵀ.",
)


def _cosines(features, labels, centre=True):
    features = torch.as_tensor(features, dtype=torch.float64)
    c = int(labels.max()) + 1
    means = torch.stack([features[labels == k].mean(0) for k in range(c)])
    if centre:
        means = means - means.mean(0)
    unit = means / means.norm(dim=1, keepdim=True)
    return unit @ unit.T, c


def _mean_cosine_expected(balanced):
    cos, c = _cosines(balanced.features, balanced.labels)
    return (cos.sum() - cos.diagonal().sum()) / (c * (c - 1))


def _not_centred(a, e, ctx):
    cos, c = _cosines(ctx["balanced"].features, ctx["balanced"].labels, centre=False)
    return np.isclose(float(a), float((cos.sum() - c) / (c * (c - 1))), rtol=1e-3)


def _with_diagonal(a, e, ctx):
    cos, c = _cosines(ctx["balanced"].features, ctx["balanced"].labels)
    return np.isclose(float(a), float(cos.mean()), rtol=1e-3, atol=1e-6)


def _mean_cosine_example():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(24) % 4
    features = 2 * torch.randn(4, 6, generator=gen)[labels] + 0.3 * torch.randn(24, 6, generator=gen)
    return {"balanced": SimpleNamespace(features=features, labels=labels),
            "preset": SimpleNamespace(ufm_classes=4)}


mean_cosine = ValueExercise(
    section="2",
    prompt="""From the balanced UFM's free features (`balanced.features`, `balanced.labels`),
    compute the class means, centre them at their mean, and return the average cosine over the
    pairs of *different* classes. A simplex ETF has −1/(C−1): how close is the UFM?""",
    expected=_mean_cosine_expected,
    rtol=1e-4, atol=1e-7,
    diagnoses=[(_not_centred, "you forgot to centre the class means: subtract their mean first "
                              "(the ETF is a property of the centred means)"),
               (_with_diagonal, "you averaged over the diagonal too (cos(μ_c, μ_c) = 1): average "
                                "over the C(C−1) pairs c ≠ c′")],
    hints=["`means = torch.stack([feats[labels == c].mean(0) for c in range(C)])`, then "
           "`means - means.mean(0)`.",
           "Normalise the rows, form `unit @ unit.T`, and average its off-diagonal entries: "
           "`(cos.sum() - C) / (C * (C - 1))`."],
    solution="""
    feats, labs = balanced.features.double(), balanced.labels
    n_cls = preset.ufm_classes
    means = torch.stack([feats[labs == c].mean(0) for c in range(n_cls)])
    centred = means - means.mean(0)
    unit = centred / centred.norm(dim=1, keepdim=True)
    answer = ((unit @ unit.T).sum() - n_cls) / (n_cls * (n_cls - 1))
    """,
    example=_mean_cosine_example,
    wrong=[("feats, labs = balanced.features.double(), balanced.labels\n"
            "means = torch.stack([feats[labs == c].mean(0) for c in range(4)])\n"
            "unit = means / means.norm(dim=1, keepdim=True)\n"
            "answer = ((unit @ unit.T).sum() - 4) / 12", "centre"),
           ("feats, labs = balanced.features.double(), balanced.labels\n"
            "means = torch.stack([feats[labs == c].mean(0) for c in range(4)])\n"
            "centred = means - means.mean(0)\n"
            "unit = centred / centred.norm(dim=1, keepdim=True)\n"
            "answer = (unit @ unit.T).mean()", "diagonal")],
)


def _minority_outcome(curve):
    dist = curve.sort_values("ratio")["minority_distance"].to_numpy()
    ratio = float(dist[-1] / dist[0])
    return "b" if ratio < 0.5 else ("a" if ratio <= 2.0 else "c")


minority_prediction = PredictionExercise(
    section="2",
    prompt="""Before running the imbalance sweep: the minority classes keep 1/R of the samples, R
    from 1 to `max(preset.mc_ratios)`. What happens to the distance between the minority
    classes' classifier rows as R grows?""",
    choices={"a": "it stays about the same (within a factor 2): the rows keep the ETF's angles",
             "b": "it shrinks by more than 2×: the minority rows merge",
             "c": "it grows by more than 2×: the minority rows move apart"},
    outcome=_minority_outcome,
    explanations={"a": "the minority classes contribute ever less to the loss, while weight decay "
                       "pulls on every row equally: the optimum spends less norm and angle on "
                       "them (Fang et al. 2021, arXiv 2101.12699)",
                  "c": "with few samples the minority terms of the loss are small, so separating "
                       "those rows buys little against the weight-decay penalty"},
    hints=["Which part of the UFM objective gets smaller when a class has fewer samples, and "
           "which part does not?"],
    solution='answer = "b"',
    example=lambda: {"curve": __import__("pandas").DataFrame(
        {"ratio": [1.0, 4.0, 16.0], "minority_distance": [1.6, 0.9, 0.05]})},
    wrong=[('answer = "a"', "weight decay"), ('answer = "c"', "separating")],
)


why_orthogonal = ThoughtExercise(
    section="3",
    prompt="""Section 3's bias-free linear UFM ends in an orthogonal frame, not a simplex ETF. Why
    does the missing bias change the shape of the frame? (Hint: what does a simplex ETF need that
    an orthogonal frame does not?)""",
    solution="""With MSE and one-hot targets the optimum fits Y as well as weight decay allows.
    A simplex ETF is a *centred* configuration: its means sum to zero, so fitting the one-hot
    targets, whose mean is (1/C)·1 ≠ 0, requires a bias to absorb the global mean. Without a bias
    the raw features and classifier rows must produce that mean themselves, and the minimum-norm
    way to map C classes to the C one-hot vectors is an orthogonal frame (W Hᵀ ∝ identity): the raw
    class means are mutually orthogonal (Dang et al. 2023, arXiv 2301.00437). Centring an
    orthogonal frame gives a simplex ETF, which is why the
    two are often confused.""",
)
