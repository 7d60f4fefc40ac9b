"""Exercises for notebook 04 (pruning and spectra)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ._core import FunctionExercise, PredictionExercise, ThoughtExercise, ValueExercise

__all__ = ["mp_edge", "fit_alpha", "magnitude_prune", "lottery_prediction", "operator_vs_accuracy",
           "magnitude_prune_reference"]


def _weight(model, layer):
    from toolkit import pruning

    return dict(pruning.prunable_layers(model))[layer].weight.detach().double()


def _mp_expected(init, layer):
    w = _weight(init, layer)
    n_rows, n_cols = w.shape
    return float(w.var(unbiased=False)) * (math.sqrt(n_rows) + math.sqrt(n_cols)) ** 2


def _mp_variant(ctx, kind):
    w = _weight(ctx["init"], ctx["layer"])
    n_rows, n_cols = w.shape
    var = float(w.var(unbiased=False))
    return {"lower": var * (math.sqrt(n_rows) - math.sqrt(n_cols)) ** 2,
            "std": math.sqrt(var) * (math.sqrt(n_rows) + math.sqrt(n_cols)) ** 2,
            "no_var": (math.sqrt(n_rows) + math.sqrt(n_cols)) ** 2}[kind]


def _model_example():
    from toolkit import models, pruning, spectra

    torch.manual_seed(0)
    init = models.MLP(30, [40, 40], 5)
    hidden = [n for n, _ in pruning.prunable_layers(init, ["head"])]
    return {"init": init, "model": init, "hidden": hidden, "layer": hidden[0],
            "pruning": pruning, "spectra": spectra}


mp_edge = ValueExercise(
    section="1",
    prompt="""Compute the Marchenko–Pastur upper edge λ₊ = σ²(√N + √M)² of the first hidden layer
    at initialisation (`init`, layer `hidden[0]`; N × M its weight's shape, σ² the variance of its
    entries) and compare it with the `mp_edge` column of `report_init`.""",
    expected=_mp_expected,
    rtol=2e-3, atol=1e-9,  # the unbiased variance (w.var()) is fine too
    diagnoses=[(lambda a, e, ctx: np.isclose(float(a), _mp_variant(ctx, "lower"), rtol=1e-2),
                "that is the lower edge σ²(√N − √M)²: the upper edge has a plus"),
               (lambda a, e, ctx: np.isclose(float(a), _mp_variant(ctx, "std"), rtol=1e-2),
                "you used the standard deviation σ; the edge scales with the variance σ²"),
               (lambda a, e, ctx: np.isclose(float(a), _mp_variant(ctx, "no_var"), rtol=1e-2),
                "off by the factor σ²: multiply by the entries' variance")],
    hints=["`w = dict(pruning.prunable_layers(init))[hidden[0]].weight.detach()`; "
           "`w.var(unbiased=False)` is σ².",
           "`n_rows, n_cols = w.shape`; `answer = sigma2 * (n_rows ** 0.5 + n_cols ** 0.5) ** 2`."],
    solution="""
    w = dict(pruning.prunable_layers(init))[hidden[0]].weight.detach()
    n_rows, n_cols = w.shape
    answer = w.var(unbiased=False) * (n_rows ** 0.5 + n_cols ** 0.5) ** 2
    """,
    example=_model_example,
    wrong=[("w = dict(pruning.prunable_layers(init))[hidden[0]].weight.detach()\n"
            "answer = w.var() * (w.shape[0] ** 0.5 - w.shape[1] ** 0.5) ** 2", "lower edge"),
           ("w = dict(pruning.prunable_layers(init))[hidden[0]].weight.detach()\n"
            "answer = w.std() * (w.shape[0] ** 0.5 + w.shape[1] ** 0.5) ** 2", "variance")],
)


def _alpha_expected(model, layer, xmin):
    from toolkit import spectra

    return spectra.powerlaw_alpha(spectra.esd(_weight(model, layer)), xmin=float(xmin)).alpha


def _alpha_variants(ctx):
    from toolkit import spectra

    ev = spectra.esd(_weight(ctx["model"], ctx["layer"])).double()
    ev = ev[ev > 0]
    tail = ev[ev >= float(ctx["xmin"])]
    s = float(torch.log(tail / float(ctx["xmin"])).sum())
    return {"no_one": len(tail) / s, "log10": 1 + len(tail) / (s / math.log(10)),
            "all": 1 + len(ev) / float(torch.log(ev / float(ctx["xmin"])).abs().sum())}


def _alpha_example():
    from toolkit import spectra

    ctx = _model_example()
    ctx["model"] = ctx["init"]
    ev = spectra.esd(_weight(ctx["model"], ctx["layer"]))
    ctx["xmin"] = float(torch.sort(ev).values[-12])
    ctx["report"] = __import__("pandas").DataFrame({"name": [ctx["layer"]], "xmin": [ctx["xmin"]]})
    return ctx


fit_alpha = ValueExercise(
    section="1",
    prompt="""Fit the power-law exponent of the trained first hidden layer by the Clauset–Shalizi–
    Newman formula α̂ = 1 + n / Σᵢ ln(λᵢ / x_min), the sum over the n eigenvalues λᵢ ≥ x_min of
    WᵀW (`spectra.esd`), with x_min = the `xmin` that `report` found for that layer.""",
    expected=_alpha_expected,
    rtol=1e-6, atol=1e-9,
    diagnoses=[(lambda a, e, ctx: np.isclose(float(a), _alpha_variants(ctx)["no_one"], rtol=1e-5),
                "you forgot the 1 +: α̂ = 1 + n / Σ ln(λᵢ/x_min)"),
               (lambda a, e, ctx: np.isclose(float(a), _alpha_variants(ctx)["log10"], rtol=1e-5),
                "use the natural logarithm (`torch.log`), not log10"),
               (lambda a, e, ctx: np.isclose(float(a), _alpha_variants(ctx)["all"], rtol=1e-5),
                "you summed over all eigenvalues: only the tail λᵢ ≥ x_min enters the fit")],
    hints=["`ev = spectra.esd(w)` (w the layer's weight); "
           "`xmin = report.set_index('name').loc[hidden[0], 'xmin']`.",
           "`tail = ev[ev >= xmin]`; `answer = 1 + len(tail) / torch.log(tail / xmin).sum()`."],
    solution="""
    ev = spectra.esd(dict(pruning.prunable_layers(model))[hidden[0]].weight.detach().double())
    xmin = report.set_index("name").loc[hidden[0], "xmin"]
    tail = ev[ev >= xmin]
    answer = 1 + len(tail) / torch.log(tail / xmin).sum()
    """,
    example=_alpha_example,
    wrong=[("ev = spectra.esd(dict(pruning.prunable_layers(model))[hidden[0]].weight.detach())\n"
            "tail = ev[ev >= xmin]\n"
            "answer = len(tail) / torch.log(tail / xmin).sum()", "1 +"),
           ("ev = spectra.esd(dict(pruning.prunable_layers(model))[hidden[0]].weight.detach())\n"
            "tail = ev[ev >= xmin]\n"
            "answer = 1 + len(tail) / torch.log10(tail / xmin).sum()", "natural logarithm")],
    explanation="`spectra.powerlaw_alpha` also chooses x_min: it tries every eigenvalue as x_min and "
                "keeps the one whose fitted power law is closest to the data in Kolmogorov–Smirnov "
                "distance (Clauset et al. 2009, arXiv 0706.1062).",
)


def magnitude_prune_reference(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """A copy of ``weight`` with its k = round(amount · numel) smallest-|w| entries set to zero."""
    flat = weight.reshape(-1).clone()
    k = round(amount * flat.numel())
    if k:
        flat[torch.argsort(flat.abs())[:k]] = 0
    return flat.reshape(weight.shape)


def _prune_cases(model=None, layer=None):
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    signed = w.clone()
    signed[0, :3] = torch.tensor([-5.0, -4.0, -3.0], dtype=torch.float64)
    cases = [("a 6×5 layer at 50 %", (w, 0.5)),
             ("amount 0 (nothing pruned)", (w, 0.0)),
             ("large negative weights at 40 %", (signed, 0.4)),
             ("a 1-D vector at 90 %", (torch.randn(20, generator=gen, dtype=torch.float64), 0.9))]
    if model is not None and layer is not None:
        cases.append(("the trained layer at 75 %", (_weight(model, layer), 0.75)))
    return cases


def _signed(out, expected, args):
    w, amount = args
    flat = w.reshape(-1).clone()
    k = round(amount * flat.numel())
    flat[torch.argsort(flat)[:k]] = 0
    return torch.equal(torch.as_tensor(out).reshape(-1), flat)


def _largest(out, expected, args):
    w, amount = args
    flat = w.reshape(-1).clone()
    k = round(amount * flat.numel())
    flat[torch.argsort(flat.abs(), descending=True)[:k]] = 0
    return k > 0 and torch.equal(torch.as_tensor(out).reshape(-1), flat)


def _wrong_count(out, expected, args):
    w, amount = args
    out = torch.as_tensor(out)
    return out.shape == w.shape and int((out == 0).sum()) != int((expected == 0).sum())


magnitude_prune = FunctionExercise(
    section="2",
    prompt="""Write `magnitude_prune(weight, amount)`: return a copy of `weight` in which the
    k = round(amount · numel) entries of smallest magnitude |w| are zero (the mask
    `pruning.prune(..., method="magnitude")` applies per layer), the rest unchanged. Do not
    modify `weight`.""",
    reference=magnitude_prune_reference,
    cases=_prune_cases,
    function_name="magnitude_prune",
    rtol=0.0, atol=0.0,
    diagnoses=[(_signed, "you pruned the smallest *values*; prune by magnitude |w| (a large "
                         "negative weight matters as much as a large positive one)"),
               (_largest, "you zeroed the largest weights; magnitude pruning removes the smallest"),
               (_wrong_count, "your mask zeroes the wrong number of entries: k = round(amount · "
                              "numel)")],
    hints=["`flat = weight.reshape(-1).clone()`; `torch.argsort(flat.abs())[:k]` are the "
           "positions of the k smallest magnitudes.",
           "Set those positions of `flat` to 0 and return `flat.reshape(weight.shape)`; handle k = 0."],
    solution="""
    def magnitude_prune(weight, amount):
        flat = weight.reshape(-1).clone()
        k = round(amount * flat.numel())
        flat[torch.argsort(flat.abs())[:k]] = 0
        return flat.reshape(weight.shape)
    """,
    example=lambda: {k: v for k, v in _model_example().items() if k in ("model", "layer")},
    wrong=[("def magnitude_prune(weight, amount):\n"
            "    flat = weight.reshape(-1).clone()\n"
            "    flat[torch.argsort(flat)[: round(amount * flat.numel())]] = 0\n"
            "    return flat.reshape(weight.shape)", "magnitude |w|"),
           ("def magnitude_prune(weight, amount):\n"
            "    flat = weight.reshape(-1).clone()\n"
            "    flat[torch.argsort(flat.abs(), descending=True)[: round(amount * flat.numel())]] = 0\n"
            "    return flat.reshape(weight.shape)", "largest"),
           ("def magnitude_prune(weight, amount):\n"
            "    return weight * (weight.abs() > weight.abs().quantile(amount))", "number of entries"),
           ("def magnitude_prune(weight, amount):\n"
            "    flat = weight.reshape(-1)\n"
            "    flat[torch.argsort(flat.abs())[: round(amount * flat.numel())]] = 0\n"
            "    return weight", "in place")],
)


def _lottery_outcome(small_lr, large_lr):
    from toolkit import claims

    gap_small = claims.pruning.winning_ticket(small_lr)["gap"]
    gap_large = claims.pruning.winning_ticket(large_lr)["gap"]
    ratio = gap_large / gap_small if gap_small > 0 else math.inf
    return "c" if ratio < 0.5 else ("b" if ratio <= 2.0 else "a")


def _lottery_example():
    import pandas as pd

    def hist(ticket, control):
        return pd.DataFrame({"round": [0, 1], "sparsity": [0.0, 0.5], "ticket": [0.9, ticket],
                             "control": [0.9, control]})
    return {"small_lr": hist(0.85, 0.75), "large_lr": hist(0.92, 0.91)}


lottery_prediction = PredictionExercise(
    section="3",
    prompt="""Before running section 3: at the small learning rate the IMP ticket should beat the
    re-initialised mask. At the large learning rate, how big is the ticket's final advantage
    (ticket − control accuracy) compared with the small rate's?""",
    choices={"a": "larger (more than 2×)",
             "b": "about the same (within a factor 2)",
             "c": "smaller (less than half): the initialisation matters much less"},
    outcome=_lottery_outcome,
    explanations={"a": "at a well-tuned larger rate the mask, not the initial values, carries "
                       "most of the accuracy (Liu et al., arXiv 1810.05270)",
                  "b": "the winning property depends on the learning rate (Frankle & Carbin "
                       "2019, §5): compare the two panels' gaps"},
    hints=["Read the caveat of section 3: which paper says what about large learning rates?"],
    solution='answer = "c"',
    example=_lottery_example,
    wrong=[('answer = "a"', "mask"), ('answer = "b"', "depends on the learning rate")],
)


operator_vs_accuracy = ThoughtExercise(
    section="2",
    prompt="""L2 sampling has a *larger* operator-norm error ‖W − W_s‖₂ than random pruning from
    50 % sparsity on, and yet a higher accuracy. How can both be true? Which part of the spectrum
    does each method damage?""",
    solution="""Random pruning is a uniform shrink plus small noise: E[W_s] = (1 − s) W, so the
    error W − W_s ≈ s·W is aligned with W and its operator norm is about s‖W‖₂, while the top
    singular directions are damped and mixed with noise of the same order. L2 sampling is unbiased
    (E[W_s] = W) but each kept entry is rescaled by 1/π, which adds large independent noise: a
    random matrix whose operator norm is big, yet spread over all directions, so it barely rotates
    the top singular subspace that carries most of the function. The operator norm measures the
    worst direction of the error, not whether the directions that matter survive; the top-k
    subspace angle measures the latter and ranks the methods' accuracy within each sparsity.""",
)
