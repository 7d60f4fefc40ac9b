"""Exercises for notebook 08 (path-norms, rewinding and pruning as sparsification)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from ._core import FunctionExercise, PredictionExercise, ThoughtExercise, ValueExercise

__all__ = ["path_norm_1", "final_sparsity", "ticket_prediction", "why_not_invariant",
           "path_norm_1_reference"]


# ----------------------------------------------------------- 1. the L1 path-norm of a small net


def path_norm_1_reference(w1, b1, w2, b2) -> float:
    """‖Φ(θ)‖₁ of x ↦ W₂ relu(W₁x + b₁) + b₂, from the library's one-forward-pass
    ``spectra.path_norm`` (Gonon et al. 2024, arXiv 2310.01225) on the same weights."""
    from toolkit import spectra

    net = torch.nn.Sequential(torch.nn.Linear(w1.shape[1], w1.shape[0]), torch.nn.ReLU(),
                              torch.nn.Linear(w2.shape[1], w2.shape[0])).double()
    with torch.no_grad():
        for p, value in zip(net.parameters(), (w1, b1, w2, b2)):
            p.copy_(value)
    return spectra.path_norm(net, (w1.shape[1],), p=1)


def _path_cases():
    gen = torch.Generator().manual_seed(8)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return [("a 5-3-2 net with biases", (rand(3, 5), rand(3), rand(2, 3), rand(2))),
            ("zero biases", (rand(4, 6), torch.zeros(4, dtype=torch.float64), rand(3, 4),
                             torch.zeros(3, dtype=torch.float64))),
            ("one hidden neuron, one output", (rand(1, 3), rand(1), rand(1, 1), rand(1))),
            ("a wide hidden layer (64)", (rand(64, 10), rand(64), rand(4, 64), rand(4)))]


def _no_bias_paths(out, expected, args):
    w1, b1, w2, b2 = args
    return np.isclose(float(out), float((w2.abs() @ w1.abs()).sum()), rtol=1e-6)


def _no_abs(out, expected, args):
    w1, b1, w2, b2 = args
    signed = (w2 @ (w1 @ torch.ones(w1.shape[1], dtype=w1.dtype) + b1) + b2).sum()
    return np.isclose(float(out), float(signed), rtol=1e-6)


def _norm_product(out, expected, args):
    w1, b1, w2, b2 = args
    return np.isclose(float(out), float(w1.abs().sum() * w2.abs().sum()), rtol=1e-6)


path_norm_1 = FunctionExercise(
    section="1",
    prompt="""Write `path_norm_1(w1, b1, w2, b2)`: the L¹ path-norm ‖Φ(θ)‖₁ of the one-hidden-layer
    ReLU net x ↦ W₂ relu(W₁x + b₁) + b₂, the sum over all paths of the absolute product of the
    weights along them. A path starts at an input (W₂[k, j]·W₁[j, i]), at a hidden neuron's bias
    (W₂[k, j]·b₁[j]) or at an output's bias (b₂[k]). Check it against `spectra.path_norm`.""",
    reference=path_norm_1_reference,
    cases=_path_cases,
    function_name="path_norm_1",
    rtol=1e-8, atol=1e-10,
    diagnoses=[(_no_bias_paths, "you summed the input paths only; the biases start paths too: "
                                "add |W₂| |b₁| and |b₂|"),
               (_no_abs, "that is the network's output on the all-ones input; the path-norm sums "
                         "*absolute* products, so replace every weight and bias by its absolute "
                         "value first"),
               (_norm_product, "that is the product of the layers' entrywise L¹ norms, which counts "
                               "pairs of edges that do not meet at a neuron; paths go through one "
                               "hidden neuron j: Σⱼ (Σₖ|W₂[k,j]|)(Σᵢ|W₁[j,i]|)")],
    hints=["Summing |W₂[k, j]| |W₁[j, i]| over k, j, i is one matrix product: `(w2.abs() @ "
           "w1.abs()).sum()`.",
           "The bias paths add `(w2.abs() @ b1.abs()).sum() + b2.abs().sum()`; equivalently, the "
           "net with |θ| and no ReLU on the all-ones input, summed over the outputs."],
    solution="""
    def path_norm_1(w1, b1, w2, b2):
        return float((w2.abs() @ w1.abs()).sum() + (w2.abs() @ b1.abs()).sum() + b2.abs().sum())
    """,
    wrong=[("def path_norm_1(w1, b1, w2, b2):\n"
            "    return float((w2.abs() @ w1.abs()).sum())", "biases start paths"),
           ("def path_norm_1(w1, b1, w2, b2):\n"
            "    ones = torch.ones(w1.shape[1], dtype=w1.dtype)\n"
            "    return float((w2 @ (w1 @ ones + b1) + b2).sum())", "absolute"),
           ("def path_norm_1(w1, b1, w2, b2):\n"
            "    return float(w1.abs().sum() * w2.abs().sum())", "product of the layers")],
    explanation="Rescaling neuron j (row j of W₁ and b₁[j] times λ, column j of W₂ over λ) leaves "
                "every product W₂[k, j]·W₁[j, i] and W₂[k, j]·b₁[j] unchanged: the path-norm is "
                "invariant by construction (section 1's self-check).",
)


# --------------------------------------------------------------------------- 3. iterative pruning


def _sparsity_expected(preset):
    return 1 - (1 - preset.rt_rate) ** preset.rt_rounds


def _sparsity_example():
    return {"preset": SimpleNamespace(rt_rate=0.5, rt_rounds=4)}


final_sparsity = ValueExercise(
    section="3",
    prompt="""Iterative magnitude pruning removes the fraction `preset.rt_rate` of the weights that
    *survive* each round. What is the sparsity (the pruned fraction of the prunable weights) after
    `preset.rt_rounds` rounds? Compare with the `sparsity` that section 3 prints.""",
    expected=_sparsity_expected,
    rtol=1e-6, atol=1e-9,
    diagnoses=[(lambda a, e, ctx: np.isclose(float(a), ctx["preset"].rt_rate * ctx["preset"].rt_rounds),
                "the rounds do not add up: each removes a fraction of what is left, so the "
                "surviving fraction is (1 − rate)^rounds"),
               (lambda a, e, ctx: np.isclose(float(a), 1 - float(e)),
                "that is the surviving fraction; the sparsity is the pruned one, 1 − (1 − rate)^rounds")],
    hints=["After one round a fraction (1 − rate) survives; after two, (1 − rate) of that."],
    solution="answer = 1 - (1 - preset.rt_rate) ** preset.rt_rounds",
    example=_sparsity_example,
    wrong=[("answer = preset.rt_rate * preset.rt_rounds", "do not add up"),
           ("answer = (1 - preset.rt_rate) ** preset.rt_rounds", "surviving fraction")],
    explanation="`pruning.retraining_modes` prunes every round by global magnitude to exactly this "
                "sparsity, 1 − (1 − rate)^r after round r.",
)


def _ticket_gap(table):
    last = table[table["round"] == table["round"].max()].set_index("mode")["test_acc"]
    return float(last["rewind_0"] - last["reinit"])


def _ticket_outcome(retrain, large_rate):
    return "a" if _ticket_gap(retrain[large_rate]) >= 0.05 else "b"


def _retrain_example():
    import pandas as pd

    def table(gap):
        rows = [{"mode": "dense", "round": 0, "sparsity": 0.0, "test_acc": 0.9}]
        for mode, acc in (("rewind_0", 0.9), ("reinit", 0.9 - gap), ("finetune", 0.9),
                          ("lr_rewind", 0.91), ("rewind_k", 0.9)):
            rows.append({"mode": mode, "round": 4, "sparsity": 0.9375, "test_acc": acc})
        return pd.DataFrame(rows)

    return {"retrain": {"lr 0.05": table(0.2), "lr 0.5": table(0.01)}, "large_rate": "lr 0.5"}


ticket_prediction = PredictionExercise(
    section="3",
    prompt="""Before running section 3: at the *large* learning rate, after the last round, by how
    much does the lottery ticket (survivors reset to θ₀) beat the same mask re-initialised, in test
    accuracy?""",
    choices={"a": "by 0.05 or more: the ticket's initialisation still matters",
             "b": "by less than 0.05: its advantage (nearly) vanishes"},
    outcome=_ticket_outcome,
    explanations={"a": "at a larger, better-tuned rate the retrained sparse net finds a good solution "
                       "from a fresh initialisation too (Liu et al., arXiv 1810.05270; Frankle & "
                       "Carbin report tickets at small rates, arXiv 1803.03635 §5)"},
    hints=["Frankle & Carbin found their tickets at small learning rates; what did they report at "
           "larger ones?"],
    solution='answer = "b"',
    example=_retrain_example,
    wrong=[('answer = "a"', "fresh initialisation"), ('answer = "no"', "choose one of")],
)


# ------------------------------------------------------------------------------- thought question


why_not_invariant = ThoughtExercise(
    section="1",
    prompt="""Rescaling the first hidden layer's neurons left the function and the path-norm
    unchanged but moved the product of operator norms by orders of magnitude. Why can a capacity
    term that changes under a symmetry of the network not be a good measure of its complexity,
    and what does the path-norm give up in exchange for its invariance?""",
    solution="""Two parameter vectors related by the rescaling define the same function, hence the
    same training and test error and the same generalisation gap; a bound that depends on the
    parameters only through a non-invariant quantity gives them different guarantees, so it is
    loose for at least one of them (the bound can be made huge without changing anything about
    the predictor). One could repair the product by minimising it over all rescalings; the
    path-norm is invariant by construction, since ‖Φ(θ)‖ depends only on the products of the
    weights along paths, which the rescaling does not change (Gonon et al., arXiv 2310.01225, §2;
    Neyshabur et al., arXiv 1503.00036). In exchange it is a sum over exponentially many paths
    (computed here in one forward pass), and the bounds built on it are still vacuous at this
    notebook's scale, as the authors report for ResNets too.""",
)
