"""Benchmark: ``toolkit.landscape.surface_2d`` against the per-point loop that common libraries use.

The baseline writes each grid point θ* + a·d1 + b·d2 into the module's parameters (``p.copy_``)
and calls ``model(x)`` — what ``loss-landscapes`` and Li et al.'s ``plot_surface`` do — then
restores the parameters. Both run in the same process on the same 41×41 grid.

(a) small problem, per-point overhead dominates: 1-D regression, N=50, MLP 1→64→64→1 (target ≥ 5×);
(b) compute-bound problem: digits, MLP 64→256→256→10, full batch (target ≥ 1.2×). For (b) the table
    also gives the achieved GFLOP/s (forward multiply-adds ×2 over the grid) next to a plain
    ``torch.matmul`` of the hidden layer's size.

Run: ``python benchmarks/bench_landscape.py [--steps 41] [--repeats 3] [--threads 1]
[--problems ab]``.
Timings are process CPU times, the best of ``--repeats`` interleaved rounds (5× as many for the
fast problem (a)); "paired" is the median over rounds of the speed-up within a round, robust when
the machine's speed drifts during the run. Use one thread on a shared machine (with two threads on
two busy cores OpenMP barriers stall). Both sides use ``F.cross_entropy`` as the loss;
``surface_2d`` evaluates it through ``landscape._cross_entropy``, the same value computed faster
for few classes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from toolkit import _grid, data, landscape, models


def baseline_surface(model, loss_fn, x, y, d1, d2, xs, ys) -> np.ndarray:
    """The per-point loop: load each grid point into the module, evaluate, restore."""
    params = dict(model.named_parameters())
    origin = {n: p.detach().clone() for n, p in params.items()}
    out = np.empty((len(ys), len(xs)))
    model.eval()
    with torch.no_grad():
        for i, b in enumerate(ys):
            for j, a in enumerate(xs):
                for n, p in params.items():
                    p.copy_(origin[n] + float(a) * d1[n] + float(b) * d2[n])
                out[i, j] = float(loss_fn(model(x), y))
        for n, p in params.items():
            p.copy_(origin[n])
    return out


def best_time(fn, repeats):
    """Best of ``repeats`` process CPU times (``time.process_time``): on a shared machine the
    wall clock also counts the time other jobs hold the cores, the CPU time does not."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.process_time()
        result = fn()
        best = min(best, time.process_time() - t0)
    return best, result


def forward_flops(model, n_samples: int) -> float:
    """2 × multiply-adds of all Linear layers for ``n_samples`` inputs."""
    return 2.0 * n_samples * sum(m.weight.numel() for m in model.modules()
                                 if isinstance(m, torch.nn.Linear))


def matmul_gflops(n: int, k: int, m: int, repeats: int) -> float:
    a, b = torch.randn(n, k), torch.randn(k, m)
    t, _ = best_time(lambda: [a @ b for _ in range(20)], repeats)
    return 20 * 2.0 * n * k * m / t / 1e9


def run_problem(name, model, loss_fn, x, y, steps, repeats):
    """Time the baseline and each mode, interleaved over ``repeats`` rounds (best time kept)."""
    d1 = landscape.random_direction(model, seed=1)
    d2 = landscape.random_direction(model, seed=2)
    xs = ys = np.linspace(-1, 1, steps)

    def ours(mode, trick=True):
        old = _grid.first_linear_layer
        if not trick:
            _grid.first_linear_layer = lambda *a: None
        try:
            return landscape.surface_2d(model, loss_fn, (x, y), d1, d2, steps=steps,
                                        progress=False, metrics=("loss",), mode=mode).loss
        finally:
            _grid.first_linear_layer = old

    methods = {
        "baseline: per-point loop": lambda: baseline_surface(model, loss_fn, x, y, d1, d2, xs,
                                                             ys),
        "surface_2d mode=auto": lambda: ours("auto"),
        "surface_2d mode=vmap": lambda: ours("vmap"),
        "surface_2d mode=loop": lambda: ours("loop"),
        "surface_2d mode=loop, no first-layer shortcut": lambda: ours("loop", trick=False),
        "surface_2d mode=vmap, no first-layer shortcut": lambda: ours("vmap", trick=False),
    }
    rounds = {k: [] for k in methods}
    results = {}
    names = list(methods)
    for r in range(repeats):
        # rotate the order each round: a method can run slower right after one that left the
        # allocator or caches in a bad state, and that should hit every method alike
        for k in names[r % len(names):] + names[:r % len(names)]:
            t, results[k] = best_time(methods[k], 1)
            rounds[k].append(t)
    times = {k: min(v) for k, v in rounds.items()}
    ref = results["baseline: per-point loop"]
    t_base = times["baseline: per-point loop"]
    base_rounds = np.array(rounds["baseline: per-point loop"])
    flops = forward_flops(model, len(x)) * steps * steps
    mode = _grid.GridEvaluator(model, loss_fn, (x, y), None, landscape.parameters_of(model),
                               [d1, d2], torch.zeros(steps * steps, 2), ("loss",)).mode
    print(f"\n### ({name})  grid {steps}x{steps}, N={len(x)}, "
          f"{models.count_parameters(model)} parameters; mode=auto picks {mode!r}")
    print("| method | CPU time (s) | speed-up vs baseline | paired | GFLOP/s | max rel. diff |")
    print("|---|---|---|---|---|---|")
    for k, t in times.items():
        err = float(np.nanmax(np.abs(results[k] - ref) / np.maximum(np.abs(ref), 1e-12)))
        paired = float(np.median(base_rounds / np.array(rounds[k])))
        print(f"| {k} | {t:.3f} | {t_base / t:.2f}x | {paired:.2f}x | {flops / t / 1e9:.1f} "
              f"| {err:.1e} |")
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=41)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--problems", default="ab", help="which problems to run: a, b or ab")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")

    if "a" in args.problems:
        train, _ = data.regression_1d(n_train=50, seed=0)
        x, y = train.tensors
        small = models.MLP(1, [64, 64], 1)  # ReLU, the MLP default
        # (a) takes ~0.2 s a round: more rounds for the same wall time, as timeit does
        run_problem("a: 1-D regression, MLP 1-64-64-1", small, F.mse_loss, x, y, args.steps,
                    5 * args.repeats)
    if "b" not in args.problems:
        return
    train, _ = data.load_digits(seed=0)
    x, y = train.tensors
    big = models.MLP(64, [256, 256], 10)
    run_problem("b: digits, MLP 64-256-256-10, full batch", big, F.cross_entropy, x, y,
                args.steps, args.repeats)
    print(f"\nplain torch.matmul ({len(x)}x256 @ 256x256): "
          f"{matmul_gflops(len(x), 256, 256, args.repeats):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
