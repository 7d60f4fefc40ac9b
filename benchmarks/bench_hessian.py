"""Benchmark: ``toolkit.hessian`` against plain double-backward baselines, same process.

1. One Hessian-vector product: forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``)
   vs reverse-over-reverse (``autograd.grad`` twice, ``create_graph=True``) — the faster one is the
   default for the device type (``toolkit.hessian.DEFAULT_HVP``).
2. Top-1 eigenvalue at equal tolerance (relative change/accuracy 1e-3): ``top_eigenvalues``
   (Lanczos, scipy ``eigsh``) and its power-iteration mode vs a plain double-backward power
   iteration as PyHessian does it. Reference: Lanczos at tol 1e-10.
3. Trace with 99 products: Hutchinson and Hutch++ vs a plain double-backward Hutchinson loop,
   against the exact trace of a smaller model (its dense Hessian).

Problem: digits (1,347 training images), MLP 64→128→128→10 after 20 epochs of SGD (eigenvalues,
products), and 64→32→10 (trace, exact reference). Full-batch loss.
Run: ``python benchmarks/bench_hessian.py [--repeats 5] [--threads 1]``. Timings are process CPU
times (products: medians of interleaved repeats); on a shared machine use one thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from toolkit import data, hessian, models, train


def plain_hvp(model, x, y, v):
    """Reverse-over-reverse on the module itself (the common implementation)."""
    params = [p for p in model.parameters()]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * vi).sum() for g, vi in zip(grads, v))
    return [h.detach() for h in torch.autograd.grad(dot, params)]


def plain_power(model, x, y, tol, max_iter=1000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen) for p in model.parameters()]
    norm = torch.sqrt(sum((t**2).sum() for t in v))
    v = [t / norm for t in v]
    lam, n = None, 0
    for _ in range(max_iter):
        hv = plain_hvp(model, x, y, v)
        n += 1
        new = float(sum((h * t).sum() for h, t in zip(hv, v)))
        norm = torch.sqrt(sum((t**2).sum() for t in hv))
        v = [t / norm for t in hv]
        if lam is not None and abs(new - lam) <= tol * abs(new):
            return new, n
        lam = new
    return lam, n


def plain_hutchinson(model, x, y, n_samples, seed=0):
    gen = torch.Generator().manual_seed(seed)
    acc = []
    for _ in range(n_samples):
        v = [torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1
             for p in model.parameters()]
        hv = plain_hvp(model, x, y, v)
        acc.append(float(sum((h * t).sum() for h, t in zip(hv, v))))
    return float(np.mean(acc))


def timed(fn):
    """Process CPU time (not wall time: on a shared machine other jobs hold the cores)."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def trained_mlp(widths, train_set, seed=0):
    torch.manual_seed(seed)
    model = models.MLP(64, widths, 10)
    train.fit(model, train_set, epochs=20, batch_size=64, lr=0.05, progress=False, seed=seed)
    return model.eval()


def table(title, header, rows):
    print(f"\n### {title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    train_set, _ = data.load_digits(seed=0)
    x, y = train_set.tensors
    model = trained_mlp([128, 128], train_set)
    n_params = models.count_parameters(model)

    # 1. one product, both modes, interleaved
    ops = {m: hessian.HessianOperator(model, F.cross_entropy, (x, y), method=m)
           for m in hessian.HVP_METHODS}
    v = torch.randn(n_params)
    times = {m: [] for m in ops}
    times["plain module rev-rev"] = []
    vs = ops["fwd-rev"].unflatten(v)
    for _ in range(args.repeats):
        for m, op in ops.items():
            times[m].append(timed(lambda op=op: op.matvec(v))[0])
        times["plain module rev-rev"].append(timed(
            lambda: plain_hvp(model, x, y, list(vs.values())))[0])
    ref = ops["rev-rev"].matvec(v)
    agree = float((ops["fwd-rev"].matvec(v) - ref).norm() / ref.norm())
    base = statistics.median(times["plain module rev-rev"])
    print(f"\ndefault product on CPU: {hessian.DEFAULT_HVP['cpu']}")
    table(f"Hessian-vector product, MLP 64-128-128-10 ({n_params} parameters), N={len(x)}",
          ["method", "median CPU time (ms)", "speed-up vs plain", "rel. diff vs rev-rev"],
          [(m, f"{1e3 * statistics.median(t):.1f}", f"{base / statistics.median(t):.2f}x",
            f"{agree:.1e}" if m == "fwd-rev" else "0") for m, t in times.items()])

    # 2. top eigenvalue at equal tolerance
    lam_ref = hessian.top_eigenvalues(model, F.cross_entropy, (x, y), tol=1e-10,
                                      max_iter=2000).eigenvalues[0]
    rows = []
    t_plain, (lam_p, n_p) = timed(lambda: plain_power(model, x, y, 1e-3))
    rows.append(("plain power iteration (double backward)", t_plain, n_p, lam_p))
    for method in ("lanczos", "power"):
        t, res = timed(lambda method=method: hessian.top_eigenvalues(
            model, F.cross_entropy, (x, y), tol=1e-3, max_iter=1000, method=method))
        rows.append((f"top_eigenvalues(method={method!r})", t, res.n_hvp, res.eigenvalues[0]))
    table(f"Top-1 eigenvalue, tol 1e-3 (reference λ_max = {lam_ref:.5f})",
          ["method", "CPU time (s)", "speed-up", "#HVP", "λ_max", "rel. error"],
          [(r[0], f"{r[1]:.2f}", f"{t_plain / r[1]:.2f}x", r[2], f"{r[3]:.5f}",
            f"{abs(r[3] - lam_ref) / abs(lam_ref):.1e}") for r in rows])

    # 3. trace, exact reference on a smaller model
    small = trained_mlp([32], train_set)
    op = hessian.HessianOperator(small, F.cross_entropy, (x, y), method="fwd-rev")
    exact = float(torch.trace(op.dense()))  # all columns, vectorised with vmap
    rows = []
    t_plain, est = timed(lambda: plain_hutchinson(small, x, y, 99))
    rows.append(("plain Hutchinson (double backward)", t_plain, 99, est))
    for method in ("hutchinson", "hutch++"):
        t, res = timed(lambda method=method: hessian.trace(
            small, F.cross_entropy, (x, y), n_samples=99, method=method, progress=False))
        rows.append((f"trace(method={method!r})", t, res.n_hvp, res.trace))
    table(f"Trace, MLP 64-32-10 ({op.numel} parameters), exact tr(H) = {exact:.4f}",
          ["method", "CPU time (s)", "speed-up", "#HVP", "estimate", "rel. error"],
          [(r[0], f"{r[1]:.2f}", f"{t_plain / r[1]:.2f}x", r[2], f"{r[3]:.4f}",
            f"{abs(r[3] - exact) / abs(exact):.1e}") for r in rows])


if __name__ == "__main__":
    main()
