"""Anchor: ``toolkit.ntk.empirical_ntk`` against neural-tangents 0.6.5 (jax 0.4.23, jitted, all
three of its implementations), same weights and inputs, one thread each, interleaved rounds.

Problem (issue 16): MLP 64-512-512-10, NTK parameterisation, float32, N=512 digits images, trace
mode (mean over outputs; neural-tangents' ``trace_axes=(-1,)``, which also averages).
Ours runs in this process; neural-tangents in a worker process (``_nt_worker.py``) in its own
venv, driven round by round over a pipe; both pinned to one core, wall time. Also reported:
the Gram-product floor — the time of the Gram products alone (A1 A2ᵀ and Δ1 Δ2ᵀ summed
over outputs, for every layer, on precomputed features) — and the fraction of it our full kernel reaches.
Run (``make bench-anchors`` does): ``.venv/bin/python benchmarks/anchors/ntk_vs_neural_tangents.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from _common import hardware, table

from toolkit import data, models, ntk

HERE = os.path.dirname(os.path.abspath(__file__))
NT_PYTHON = os.path.join(HERE, "..", "..", "build", "anchors", "nt", "bin", "python")


def gram_floor(model, x):
    """CPU seconds of the Gram products alone (features computed beforehand, not timed)."""
    acts = []
    with torch.no_grad():
        h = x
        for m in model.modules():
            if isinstance(m, models.NTKLinear):
                acts.append(h.clone())
            if not list(m.children()):
                h = m(h)
    # output gradients (N, O, width) per layer: as many floats as the structured engine uses
    n_out = h.shape[1]
    widths = [m.out_features for m in model.modules() if isinstance(m, models.NTKLinear)]
    deltas = [torch.randn(len(x), n_out, w) for w in widths]

    def run():
        total = 0
        for a, d in zip(acts, deltas):
            total = total + (a @ a.T) * torch.einsum("aoe,boe->ab", d, d)
        return total

    return run


def wall(fn) -> float:
    """Wall seconds of one call (both processes pinned to one core: wall = that core's time)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--impls", default="3", help='neural-tangents implementations to time; '
                        'here 1 and 2 (Jacobian contraction, NTK-vector products) took 50-80 s '
                        'a call against 0.2 s for 3 (structured derivatives): "123" for all')
    args = parser.parse_args()
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):  # one core for both processes (jax ignores set_num_threads)
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"torch {torch.__version__}, 1 thread, {hardware()}")
    torch.manual_seed(0)
    model = models.MLP(64, [512, 512], 10, parameterization="ntk").eval()
    train, test = data.load_digits(seed=0)
    x = torch.cat([train.tensors[0], test.tensors[0]])[:args.n].contiguous()
    lins = [m for m in model.modules() if isinstance(m, models.NTKLinear)]
    blob = {"n_layers": len(lins), "sigma_w": 2**0.5, "x": x.numpy()}
    for i, m in enumerate(lins):
        blob[f"W{i}"] = m.weight.detach().T.contiguous().numpy()
        blob[f"b{i}"] = m.bias.detach().numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "problem.npz")
        np.savez(path, **blob)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        worker = subprocess.Popen([NT_PYTHON, os.path.join(HERE, "_nt_worker.py"), path,
                                   args.impls],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

        def ask(cmd):
            worker.stdin.write(cmd + "\n")
            worker.stdin.flush()
            return json.loads(worker.stdout.readline())

        info = json.loads(worker.stdout.readline())
        ours = lambda: ntk.empirical_ntk(model, x, mode="trace", progress=False)  # noqa: E731
        floor = gram_floor(model, x)
        times = {**{f"nt {i}": [] for i in args.impls}, "ours": [], "floor": []}
        ours()
        for _ in range(args.rounds):
            for impl in args.impls:
                times[f"nt {impl}"].append(ask(f"go {impl}")["s"])
            times["ours"].append(wall(ours))
            times["floor"].append(wall(floor))
        best_impl = min(args.impls, key=lambda i: min(times[f"nt {i}"]))
        ask(f"dump {best_impl} {os.path.join(tmp, 'k.npy')}")
        k_nt = np.load(os.path.join(tmp, "k.npy"))
        worker.stdin.write("quit\n")
        worker.stdin.close()
        worker.wait()
    k_ours = ours().double().numpy()
    rel = float(np.abs(k_ours - k_nt).max() / np.abs(k_nt).max())
    nt_best = [min(times[f"nt {i}"][r] for i in args.impls) for r in range(args.rounds)]
    paired = float(np.median([a / b for a, b in zip(nt_best, times["ours"])]))
    rows = [(f"neural-tangents impl {i}", f"{1e3 * min(times[f'nt {i}']):.1f}", "", "")
            for i in args.impls]
    rows.append(("ours (empirical_ntk, auto)", f"{1e3 * min(times['ours']):.1f}",
                 f"{paired:.2f}x", f"{rel:.1e}"))
    rows.append(("Gram products alone (floor)", f"{1e3 * min(times['floor']):.1f}", "", ""))
    table(f"Empirical NTK, MLP 64-512-512-10 (NTK param.), N={args.n}, trace, float32, "
          f"jax {info['jax']}",
          ["implementation", "best ms", "nt best/ours (median paired)",
           "max rel. diff vs nt"], rows)
    print(f"floor fraction reached: {min(times['floor']) / min(times['ours']):.0%}")


if __name__ == "__main__":
    sys.exit(main())
