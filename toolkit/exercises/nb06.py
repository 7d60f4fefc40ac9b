"""Exercises for notebook 06 (the rank of the loss Hessian of tiny CNNs)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ._core import FunctionExercise, PredictionExercise, ThoughtExercise, ValueExercise

__all__ = ["mlp_rank_prediction", "numerical_rank", "rank_slope", "why_relu_full_rank",
           "numerical_rank_reference"]


# ----------------------------------------------------------------- a prediction before section 1


def _mlp_outcome(ranks):
    largest = ranks[ranks["model"] == "linear MLP"].sort_values("n_params").iloc[-1]
    return "b" if largest["rank"] < 0.9 * largest["n_params"] else "a"


def _ranks_example():
    import pandas as pd

    rows = []
    for c, p in ((2, 60), (4, 150), (8, 420), (16, 1300)):
        rows += [{"model": "linear CNN", "channels": c, "n_params": p, "rank": int(6 * c + 20)},
                 {"model": "ReLU CNN", "channels": c, "n_params": p, "rank": p},
                 {"model": "linear MLP", "channels": c, "n_params": p + 4, "rank": int(p / 2)}]
    return {"ranks": pd.DataFrame(rows)}


mlp_rank_prediction = PredictionExercise(
    section="1",
    prompt="""Before running section 1: the linear CNN's Hessian is rank-deficient because of the
    symmetries of a product of linear maps. What about a *linear MLP* with about as many parameters
    (two hidden layers, no biases)? At the largest size its Hessian is""",
    choices={"a": "(nearly) full rank: rank ≥ 90 % of the parameter count",
             "b": "rank-deficient: rank < 90 % of the parameter count"},
    outcome=_mlp_outcome,
    explanations={"a": "a deep linear MLP has the same kind of symmetry as the linear CNN, "
                       "W₃W₂W₁ = (W₃A⁻¹)(AW₂B⁻¹)(BW₁) for any invertible A, B, which leaves many "
                       "directions without curvature; Singh et al. 2021 (arXiv 2106.16225) derive "
                       "the rank of deep linear nets' Hessians"},
    hints=["Which reparameterisations leave W₃W₂W₁ unchanged? Each one is a direction in which "
           "the loss does not change to first order."],
    solution='answer = "b"',
    example=_ranks_example,
    wrong=[('answer = "a"', "symmetry"), ('answer = "full"', "choose one of")],
)


# ------------------------------------------------------------------------- 1. the numerical rank


def numerical_rank_reference(matrix: torch.Tensor) -> int:
    """The number of singular values above τ = max(shape) · eps(dtype) · σ_max (numpy's
    ``matrix_rank`` default and ``hessian.numerical_rank``'s)."""
    from toolkit import hessian

    return hessian.numerical_rank(matrix).rank


def _rank_cases():
    gen = torch.Generator().manual_seed(6)
    u, _ = torch.linalg.qr(torch.randn(12, 12, generator=gen, dtype=torch.float64))
    eig = torch.tensor([5.0, 2.0, 1.0, 0.5, -0.5, -1.0, -3.0] + [0.0] * 5, dtype=torch.float64)
    indefinite = u @ torch.diag(eig) @ u.T  # rank 7: four positive, three negative eigenvalues
    a = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    tiny = 1e-9 * (a @ a.T)  # rank 3 at a tiny overall scale
    b = torch.randn(8, 5, generator=gen)
    return [("an indefinite 12 × 12 Hessian of rank 7 (three negative eigenvalues)", (indefinite,)),
            ("a rank-3 matrix scaled by 1e-9", (tiny,)),
            ("a float32 rank-5 matrix", (b @ b.T,)),
            ("the zero matrix", (torch.zeros(4, 4, dtype=torch.float64),)),
            ("the identity", (torch.eye(6, dtype=torch.float64),))]


def _counts_positive_eigenvalues(out, expected, args):
    (matrix,) = args
    eig = torch.linalg.eigvalsh(matrix)
    tol = max(matrix.shape) * torch.finfo(matrix.dtype).eps * float(eig.abs().max())
    return (eig < -tol).any() and int(out) == int((eig > tol).sum())


def _absolute_tolerance(out, expected, args):
    (matrix,) = args
    sv = torch.linalg.svdvals(matrix)
    return float(sv.max()) < 1e-6 and int(out) < int(expected)


numerical_rank = FunctionExercise(
    section="1",
    prompt="""Write `numerical_rank(H)`: the number of singular values of the square matrix `H`
    above the tolerance τ = max(H.shape) · eps · σ_max, with eps the machine epsilon of `H`'s own
    dtype (`torch.finfo(H.dtype).eps`) and σ_max the largest singular value. Return an `int`; it
    must equal `hessian.numerical_rank(H).rank` on every Hessian of section 1.""",
    reference=numerical_rank_reference,
    cases=_rank_cases,
    function_name="numerical_rank",
    rtol=0.0, atol=0.0,
    diagnoses=[(_counts_positive_eigenvalues,
                "you counted the positive eigenvalues; a Hessian away from a minimum is indefinite, "
                "and a negative eigenvalue is a direction of curvature too: count singular values "
                "(|λ|), not eigenvalues above τ"),
               (_absolute_tolerance,
                "a fixed tolerance does not scale with the matrix: make τ relative to σ_max")],
    hints=["`torch.linalg.svdvals(H)` returns the singular values, largest first.",
           "`sv = torch.linalg.svdvals(H)`; `tol = max(H.shape) * torch.finfo(H.dtype).eps * sv.max()`; "
           "`int((sv > tol).sum())`."],
    solution="""
    def numerical_rank(H):
        sv = torch.linalg.svdvals(H)
        if sv.numel() == 0 or float(sv.max()) == 0.0:
            return 0
        tol = max(H.shape) * torch.finfo(H.dtype).eps * sv.max()
        return int((sv > tol).sum())
    """,
    wrong=[("def numerical_rank(H):\n"
            "    eig = torch.linalg.eigvalsh(H)\n"
            "    tol = max(H.shape) * torch.finfo(H.dtype).eps * eig.abs().max()\n"
            "    return int((eig > tol).sum())", "positive eigenvalues"),
           ("def numerical_rank(H):\n"
            "    return int((torch.linalg.svdvals(H) > 1e-6).sum())", "fixed tolerance")],
    explanation="Section 1's tolerance does not decide the answer: the linear CNN's singular values "
                "drop by about eight orders of magnitude at the rank (the panel shows it).",
)


# ----------------------------------------------------------------------------------- the √P law


def _two_largest(ranks, model="linear CNN"):
    rows = ranks[ranks["model"] == model].sort_values("n_params")
    return rows["n_params"].to_numpy(dtype=float), rows["rank"].to_numpy(dtype=float)


def _slope_expected(ranks):
    p, r = _two_largest(ranks)
    return math.log(r[-1] / r[-2]) / math.log(p[-1] / p[-2])


def _slope_over_all(answer, expected, ctx):
    p, r = _two_largest(ctx["ranks"])
    return np.isclose(float(answer), np.polyfit(np.log(p), np.log(r), 1)[0], rtol=1e-3)


def _slope_inverted(answer, expected, ctx):
    return np.isclose(float(answer) * float(expected), 1.0, rtol=1e-3)


def _slope_of_other_model(answer, expected, ctx):
    for model in ("ReLU CNN", "linear MLP"):
        p, r = _two_largest(ctx["ranks"], model)
        if len(p) >= 2 and np.isclose(float(answer), math.log(r[-1] / r[-2]) / math.log(p[-1] / p[-2]),
                                      rtol=1e-3):
            return True
    return False


rank_slope = ValueExercise(
    section="1",
    prompt="""From the `ranks` table, compute the log–log slope of the linear CNN's Hessian rank
    against its parameter count over the two largest nets: log(r₂/r₁) / log(P₂/P₁). The √P law
    predicts ½.""",
    expected=_slope_expected,
    rtol=1e-4, atol=1e-9,
    diagnoses=[(_slope_over_all, "that is the least-squares slope over every width; the small nets' "
                                 "slope is larger (their parameter count is not yet quadratic in "
                                 "c), so the claim uses the two largest nets"),
               (_slope_inverted, "you divided the other way round: the slope of rank against "
                                 "parameters is log(rank ratio) / log(parameter ratio)"),
               (_slope_of_other_model, "that is another model's slope: select "
                                       "`ranks[ranks['model'] == 'linear CNN']`")],
    hints=["`lin = ranks[ranks['model'] == 'linear CNN'].sort_values('n_params')`, then the last two "
           "rows.",
           "`np.log(r[-1] / r[-2]) / np.log(p[-1] / p[-2])` with `p, r` the `n_params` and `rank` "
           "columns."],
    solution="""
    by_size = ranks[ranks["model"] == "linear CNN"].sort_values("n_params")
    p, r = by_size["n_params"].to_numpy(dtype=float), by_size["rank"].to_numpy(dtype=float)
    answer = np.log(r[-1] / r[-2]) / np.log(p[-1] / p[-2])
    """,
    example=_ranks_example,
    wrong=[("lin = ranks[ranks['model'] == 'linear CNN']\n"
            "answer = np.polyfit(np.log(lin['n_params'].to_numpy(dtype=float)), "
            "np.log(lin['rank'].to_numpy(dtype=float)), 1)[0]", "every width"),
           ("lin = ranks[ranks['model'] == 'linear CNN'].sort_values('n_params')\n"
            "p, r = lin['n_params'].to_numpy(dtype=float), lin['rank'].to_numpy(dtype=float)\n"
            "answer = np.log(p[-1] / p[-2]) / np.log(r[-1] / r[-2])", "other way round"),
           ("mlp = ranks[ranks['model'] == 'linear MLP'].sort_values('n_params')\n"
            "p, r = mlp['n_params'].to_numpy(dtype=float), mlp['rank'].to_numpy(dtype=float)\n"
            "answer = np.log(r[-1] / r[-2]) / np.log(p[-1] / p[-2])", "another model")],
)


# ------------------------------------------------------------------------------- thought question


why_relu_full_rank = ThoughtExercise(
    section="1",
    prompt="""The ReLU CNN's Hessian came out (nearly) full rank at every size, unlike the linear
    CNN's. The Hessian of the MSE is the Gauss–Newton part plus the residual (functional) part.
    Which of the two fills the gaps here, and what would you change to see the paper's
    rank-deficiency for ReLU nets?""",
    solution="""The Gauss–Newton part (1/N) Σ Jᵢᵀ ∇²ℓ Jᵢ has rank at most N·K (samples × outputs)
    and also inherits the parameter symmetries, so it is rank-deficient for every model here. The
    residual part Σ rᵢ ∇²_θ fᵢ is weighted by the residuals rᵢ = fᵢ − yᵢ: with random targets at
    initialisation they are large, and for a ReLU net the second derivatives of the outputs do not
    share the linear net's exact symmetries, so this term fills the missing directions. To see
    rank-deficiency, shrink the residual part: targets equal to the net's own outputs (r = 0, the
    Hessian is its Gauss–Newton part, "Try it yourself" 1), or a trained net near an interpolating
    minimum. Singh et al.'s bounds (arXiv 2305.09088, 2106.16225) are stated for the linear case
    and, for ReLU nets, observed on trained networks; this notebook does not reproduce the latter.""",
)
