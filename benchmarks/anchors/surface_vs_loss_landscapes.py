"""Anchor: ``toolkit.landscape.surface_2d`` against loss-landscapes 3.0.6 (``random_plane``), same
process, same weights, data, directions and grid points, same thread count, interleaved rounds.

Problems (the README's (a) and (b), trained first: loss-landscapes' filter normalisation divides
by each bias vector's norm, so the zero biases of our MLP's initialisation make it raise
``ZeroDivisionError``):

(a) 1-D regression, N=50, MLP 1-64-64-1, MSE, after 300 full-batch GD epochs;
(b) digits (N=1,347), MLP 64-256-256-10, full-batch cross-entropy, after 20 epochs of SGD.

Jobs, 41×41 points each:

* ``random_plane(model, Loss(...), distance=1, steps=41, normalization="filter",
  deepcopy_model=True)`` with ``torch.manual_seed(seed)`` before each call, so every call draws
  the same two directions (uniform [0, 1] entries, the second made orthogonal to the first, each
  filter-normalised, then scaled to a step of ‖θ‖/41). Its time includes drawing them.
* ours on *its* directions: the two per-step vectors it used are recorded (wrapping
  ``rand_u_like`` / ``orthogonal_to`` in ``loss_landscapes.main`` for one untimed call; they are
  mutated in place, so after the call they hold the final scaled vectors D1, D2) and passed to
  ``surface_2d`` with xrange = (-20.5, 19.5), yrange = (-19.5, 20.5): the same points.
* ours end to end: two ``random_direction`` draws (Gaussian, filter-normalised, biases 0) and
  ``surface_2d`` on the default [-1, 1]² grid, what a user of the toolkit calls.

Grid of ``random_plane``: row i walks along D1 (offset i − 20.5), and each row walks along D2 in
place, alternately forwards and backwards, to save copies; a forward row holds the offsets
−19.5 … 20.5, a backward row −20.5 … 19.5, so odd rows are shifted by one step against even rows.
The agreement check compares each point with ours at the same point (odd rows shifted, 20 points
of 1,681 outside our grid); the naive comparison, treating the result as a regular grid, is
printed too. Both are also compared with a float64 evaluation of the same points (ours in
float64), which shows that the remaining difference is loss-landscapes' drift from 1,681
accumulated in-place float32 steps.

For (b) the table gives the achieved GFLOP/s (2 × forward multiply-adds over the grid) next to a
plain ``torch.matmul`` of the hidden layer's size (1347×256 @ 256×256).

Run (``make bench-anchors`` does):
``build/anchors/torch/bin/python benchmarks/anchors/surface_vs_loss_landscapes.py
[--rounds-a 7] [--rounds-b 3] [--problems ab] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import copy

import loss_landscapes
import loss_landscapes.main as ll_main
import numpy as np
import torch
import torch.nn.functional as F
from _common import clock, hardware, interleaved, ratio_row, table
from loss_landscapes.metrics import Loss

from toolkit import data, landscape, models, train

STEPS = 41
SEED = 1


def anchor_surface(model, loss_fn, x, y):
    torch.manual_seed(SEED)
    return loss_landscapes.random_plane(model, Loss(loss_fn, x, y), distance=1, steps=STEPS,
                                        normalization="filter", deepcopy_model=True)


def anchor_directions(model, loss_fn, x, y):
    """One untimed ``random_plane`` call with its direction constructors wrapped; returns
    (surface, D1, D2) with D1, D2 the per-step vectors it used, as name -> tensor dicts."""
    made = []
    rand_u_like, orthogonal_to = ll_main.rand_u_like, ll_main.orthogonal_to

    def record(fn):
        def wrapped(v):
            made.append(fn(v))
            return made[-1]
        return wrapped

    ll_main.rand_u_like, ll_main.orthogonal_to = record(rand_u_like), record(orthogonal_to)
    try:
        surf = anchor_surface(model, loss_fn, x, y)
    finally:
        ll_main.rand_u_like, ll_main.orthogonal_to = rand_u_like, orthogonal_to
    assert len(made) == 2, made
    names = [n for n, _ in model.named_parameters()]  # ModelParameters keeps this order
    d1, d2 = ({n: t.detach().clone() for n, t in zip(names, m.parameters)} for m in made)
    return surf, d1, d2


def ours_on(model, loss_fn, x, y, d1, d2):
    """surface_2d at loss-landscapes' points, transposed to its layout [i (D1), j (D2)]."""
    h = STEPS / 2
    s = landscape.surface_2d(model, loss_fn, (x, y), d1, d2, xrange=(-h, h - 1),
                             yrange=(1 - h, h), steps=STEPS, progress=False, metrics=("loss",))
    return s.loss.T  # ours: loss[b index, a index]


def ours_end_to_end(model, loss_fn, x, y):
    d1 = landscape.random_direction(model, seed=SEED)
    d2 = landscape.random_direction(model, seed=SEED + 1)
    return landscape.surface_2d(model, loss_fn, (x, y), d1, d2, steps=STEPS, progress=False,
                                metrics=("loss",)).loss


def aligned(anchor: np.ndarray, ours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points both hold: even rows as they are; odd rows of the anchor shifted by one step
    (its column j there is our column j - 1)."""
    a = np.concatenate([anchor[0::2].ravel(), anchor[1::2, 1:].ravel()])
    o = np.concatenate([ours[0::2].ravel(), ours[1::2, :-1].ravel()])
    return a, o


def max_rel(a, b) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def forward_flops(model, n_samples: int) -> float:
    return 2.0 * n_samples * sum(m.weight.numel() for m in model.modules()
                                 if isinstance(m, torch.nn.Linear))


def matmul_gflops(n: int, k: int, m: int, rounds: int) -> float:
    a, b = torch.randn(n, k), torch.randn(k, m)
    t = min(clock(lambda: [a @ b for _ in range(20)])[0] for _ in range(rounds))
    return 20 * 2.0 * n * k * m / t / 1e9


def run_problem(title, model, loss_fn, x, y, rounds, gflops=False):
    model.eval()
    ref, d1, d2 = anchor_directions(model, loss_fn, x, y)
    ll_name, ours_name, e2e_name = ("loss-landscapes random_plane (incl. directions)",
                                    "ours surface_2d, its directions and points",
                                    "ours random_direction x2 + surface_2d")
    jobs = {ll_name: lambda: anchor_surface(model, loss_fn, x, y),
            ours_name: lambda: ours_on(model, loss_fn, x, y, d1, d2),
            e2e_name: lambda: ours_end_to_end(model, loss_fn, x, y)}
    times, res = interleaved(jobs, rounds)
    assert np.array_equal(res[ll_name], ref), "random_plane is not reproducible under the seed"

    # agreement, at the same points; and both against float64
    a, o = aligned(ref, res[ours_name])
    model64 = copy.deepcopy(model).double()
    y64 = y.double() if y.is_floating_point() else y
    exact = ours_on(model64, loss_fn, x.double(), y64,
                    {n: t.double() for n, t in d1.items()}, {n: t.double() for n, t in d2.items()})
    _, e = aligned(ref, exact)
    flops = forward_flops(model, len(x)) * STEPS * STEPS
    rows = []
    for name in jobs:
        _, b, r = ratio_row(times, ll_name, name)
        row = [name, f"{b:.0f}", f"{r:.2f}x" if name != ll_name else ""]
        if gflops:
            row.append(f"{flops / min(times[name]) / 1e9:.1f}")
        rows.append(row)
    header = ["implementation", "best ms", "loss-landscapes/ours (median paired)"]
    if gflops:
        header.append("GFLOP/s")
    table(f"({title}) 41x41, N={len(x)}, {models.count_parameters(model)} parameters, "
          f"{rounds} rounds", header, rows)
    print(f"max rel. diff at the same {a.size} points: loss-landscapes vs ours {max_rel(a, o):.1e}"
          f"; vs float64: loss-landscapes {max_rel(a, e):.1e}, ours {max_rel(o, e):.1e}; "
          f"naive (as a regular grid): {max_rel(ref, res[ours_name]):.1e}")
    print(f"loss range on the plane {ref.min():.4g} .. {ref.max():.4g}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds-a", type=int, default=7)
    parser.add_argument("--rounds-b", type=int, default=3)
    parser.add_argument("--problems", default="ab", help="which problems to run: a, b or ab")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, loss-landscapes 3.0.6, {torch.get_num_threads()} "
          f"thread(s), {hardware()}")
    if "a" in args.problems:
        train_set, _ = data.regression_1d(n_train=50, seed=0)
        x, y = train_set.tensors
        torch.manual_seed(0)
        model = models.MLP(1, [64, 64], 1)
        train.fit(model, train_set, epochs=300, loss="mse", lr=0.05, progress=False, seed=0)
        run_problem("a: 1-D regression, MLP 1-64-64-1, MSE", model, F.mse_loss, x, y,
                    args.rounds_a)
    if "b" in args.problems:
        train_set, _ = data.load_digits(seed=0)
        x, y = train_set.tensors
        torch.manual_seed(0)
        model = models.MLP(64, [256, 256], 10)
        train.fit(model, train_set, epochs=20, batch_size=64, lr=0.05, progress=False, seed=0)
        run_problem("b: digits, MLP 64-256-256-10, full batch", model, F.cross_entropy, x, y,
                    args.rounds_b, gflops=True)
        print(f"plain torch.matmul ({len(x)}x256 @ 256x256): "
              f"{matmul_gflops(len(x), 256, 256, 5):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
