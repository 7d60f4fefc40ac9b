"""Anchor: ``toolkit.ntk.empirical_ntk`` against neural-tangents 0.6.5 (jax 0.4.23, jitted, all
three of its implementations), same weights and inputs, one thread each, interleaved rounds.

Problems (issue 16), float32, trace mode (mean over outputs; neural-tangents'
``trace_axes=(-1,)``, which also averages), digits images:

* ``mlp``: MLP 64-512-512-10, NTK parameterisation, N=512;
* ``cnn``: a small CNN on the 8x8 images, N=256: Conv2d(1->16, 3x3, pad 1) - ReLU -
  Conv2d(16->32, 3x3, pad 1) - ReLU - AvgPool2d(2) - Flatten - Linear(512->10), standard
  parameterisation (the worker builds the same network in stax, NCHW layout).

Ours runs in this process; neural-tangents in a worker process (``_nt_worker.py``, one per
case) in its own venv, driven round by round over a pipe; both pinned to one core,
wall time. Also reported: the Gram-product floor — the time of the kernel's products alone on
features computed beforehand (MLP: A1 A2ᵀ and Δ1 Δ2ᵀ summed over outputs, for every layer; CNN:
the structured engine's per-layer contraction, Gram products or explicit weight Jacobians,
whichever its cost model picks, see ``toolkit.ntk.structured._layer_kernel``) — and the fraction of
it our full kernel reaches.
Run (``make bench-anchors`` does): ``.venv/bin/python benchmarks/anchors/ntk_vs_neural_tangents.py``
(``--case mlp`` or ``--case cnn`` for one of them).
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
from torch import nn

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


def contraction_floor(model, x):
    """The structured engine's products alone: its per-layer kernels (Gram products or explicit
    weight Jacobians, as its cost model picks) on features computed beforehand (not timed)."""
    from toolkit.ntk.empirical import _make_context
    from toolkit.ntk.structured import _structured_block, _structured_features

    ctx = _make_context(model, x)
    feats = _structured_features(ctx, x)
    return lambda: _structured_block(ctx, feats, feats, "trace")


def wall(fn) -> float:
    """Wall seconds of one call (both processes pinned to one core: wall = that core's time)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def mlp_problem(n):
    torch.manual_seed(0)
    model = models.MLP(64, [512, 512], 10, parameterization="ntk").eval()
    x = _digits(n)
    lins = [m for m in model.modules() if isinstance(m, models.NTKLinear)]
    blob = {"case": "mlp", "n_layers": len(lins), "sigma_w": 2**0.5, "x": x.numpy()}
    for i, m in enumerate(lins):
        blob[f"W{i}"] = m.weight.detach().T.contiguous().numpy()
        blob[f"b{i}"] = m.bias.detach().numpy()
    title = f"MLP 64-512-512-10 (NTK param.), N={n}"
    return model, x, blob, gram_floor(model, x), title


def cnn_problem(n):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    ).eval()
    x = _digits(n)
    conv0, conv1, head = model[1], model[3], model[7]
    blob = {"case": "cnn", "C0": conv0.weight.detach().numpy(), "c0": conv0.bias.detach().numpy(),
            "C1": conv1.weight.detach().numpy(), "c1": conv1.bias.detach().numpy(),
            "W": head.weight.detach().T.contiguous().numpy(), "b": head.bias.detach().numpy(),
            "x": x.reshape(n, 1, 8, 8).numpy()}
    title = f"small CNN conv16-conv32-avgpool-linear on 8x8 digits, N={n}"
    return model, x, blob, contraction_floor(model, x), title


def _digits(n):
    train, test = data.load_digits(seed=0)
    return torch.cat([train.tensors[0], test.tensors[0]])[:n].contiguous()


def run_case(case, n, rounds, impls):
    model, x, blob, floor, title = (mlp_problem if case == "mlp" else cnn_problem)(n)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "problem.npz")
        np.savez(path, **blob)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        worker = subprocess.Popen([NT_PYTHON, os.path.join(HERE, "_nt_worker.py"), path, impls],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

        def ask(cmd):
            worker.stdin.write(cmd + "\n")
            worker.stdin.flush()
            return json.loads(worker.stdout.readline())

        info = json.loads(worker.stdout.readline())
        ours = lambda: ntk.empirical_ntk(model, x, mode="trace", progress=False)  # noqa: E731
        times = {**{f"nt {i}": [] for i in impls}, "ours": [], "floor": []}
        ours()
        for _ in range(rounds):
            for impl in impls:
                times[f"nt {impl}"].append(ask(f"go {impl}")["s"])
            times["ours"].append(wall(ours))
            times["floor"].append(wall(floor))
        best_impl = min(impls, key=lambda i: min(times[f"nt {i}"]))
        ask(f"dump {best_impl} {os.path.join(tmp, 'k.npy')}")
        k_nt = np.load(os.path.join(tmp, "k.npy"))
        worker.stdin.write("quit\n")
        worker.stdin.close()
        worker.wait()
    k_ours = ours().double().numpy()
    diff = np.abs(k_ours - k_nt).max()
    rel = float(diff / np.abs(k_nt).max())
    nt_best = [min(times[f"nt {i}"][r] for i in impls) for r in range(rounds)]
    paired = float(np.median([a / b for a, b in zip(nt_best, times["ours"])]))
    from toolkit.ntk.empirical import _make_context, _pick_method

    method = _pick_method(_make_context(model, x), n, n, "trace")
    rows = [(f"neural-tangents impl {i}", f"{1e3 * min(times[f'nt {i}']):.1f}", "", "", "")
            for i in impls]
    rows.append((f"ours (empirical_ntk, auto -> {method})", f"{1e3 * min(times['ours']):.1f}",
                 f"{paired:.2f}x", f"{rel:.1e}", f"{diff:.1e}"))
    rows.append(("Gram products alone (floor)", f"{1e3 * min(times['floor']):.1f}", "", "", ""))
    table(f"Empirical NTK, {title}, trace, float32, jax {info['jax']}",
          ["implementation", "best ms", "nt best/ours (median paired)",
           "max rel. diff vs nt", "max abs. diff vs nt"], rows)
    print(f"floor fraction reached: {min(times['floor']) / min(times['ours']):.0%}; "
          f"kernel scale max|K| = {np.abs(k_nt).max():.3g}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("mlp", "cnn", "all"), default="all")
    parser.add_argument("--n", type=int, default=None,
                        help="number of inputs (default 512 for the MLP, 256 for the CNN)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--impls", default="3", help='neural-tangents implementations to time; '
                        'here 1 and 2 (Jacobian contraction, NTK-vector products) took 50-80 s '
                        'a call against 0.2 s for 3 (structured derivatives): "123" for all')
    args = parser.parse_args()
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):  # one core for both processes (jax ignores set_num_threads)
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"torch {torch.__version__}, 1 thread, {hardware()}")
    for case in ("mlp", "cnn") if args.case == "all" else (args.case,):
        run_case(case, args.n or {"mlp": 512, "cnn": 256}[case], args.rounds, args.impls)


if __name__ == "__main__":
    sys.exit(main())
